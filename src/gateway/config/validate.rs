//! Loading and checking a configuration, as named steps: parse (TOML, unknown keys refused),
//! then every section's rules, each error naming the key and what was expected.

use super::{ConfigError, GatewayConfig, RateLimitStore, Upstream, UpstreamProtocol, embedded};

impl GatewayConfig {
    /// The embedded default.
    pub fn default_config() -> GatewayConfig {
        embedded().clone()
    }

    /// Parses and validates `text` (from `source_name`, for messages).
    pub fn parse(text: &str, source_name: &str) -> Result<GatewayConfig, ConfigError> {
        let err = |message: String| ConfigError {
            source_name: source_name.to_string(),
            message,
        };
        let cfg: GatewayConfig =
            toml::from_str(text).map_err(|e| err(e.to_string().trim_end().replace('\n', " ")))?;
        cfg.validate().map_err(err)?;
        Ok(cfg)
    }

    /// Reads and validates a file.
    pub fn load(path: &std::path::Path) -> Result<GatewayConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        GatewayConfig::parse(&text, &path.display().to_string())
    }

    /// The upstream named `name`.
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// Checks what serde cannot: references, uniqueness, non-empty lists, address syntax.
    pub fn validate(&self) -> Result<(), String> {
        self.validate_rate_limit()?;
        self.validate_cache_and_aggregations()?;
        self.validate_breaker()?;
        self.validate_timeouts()?;
        if self.limits.max_body_bytes == 0 {
            return Err("limits.max_body_bytes: must be above 0".into());
        }
        if !(0.0..=1.0).contains(&self.tracing.sample_ratio) {
            return Err("tracing.sample_ratio: must be from 0 to 1".into());
        }
        if !self.tracing.otlp_endpoint.is_empty()
            && self
                .tracing
                .otlp_endpoint
                .parse::<http::Uri>()
                .map_or(true, |u| u.scheme().is_none())
        {
            return Err(format!(
                "tracing.otlp_endpoint {:?}: expected a URL such as http://127.0.0.1:4317",
                self.tracing.otlp_endpoint
            ));
        }
        let w = &self.websocket;
        if w.max_message_bytes == 0 || w.max_frame_bytes == 0 || w.max_fragments == 0 {
            return Err(
                "websocket: max_message_bytes, max_frame_bytes and max_fragments must be above 0"
                    .into(),
            );
        }
        if w.max_frame_bytes > w.max_message_bytes {
            return Err(format!(
                "websocket.max_frame_bytes {} is over max_message_bytes {}: a frame is part of a message",
                w.max_frame_bytes, w.max_message_bytes
            ));
        }
        if w.idle_timeout.0.is_zero() || w.send_timeout.0.is_zero() || w.max_connections == 0 {
            return Err(
                "websocket: idle_timeout, send_timeout and max_connections must be above 0".into(),
            );
        }
        if self.access_log.queue == 0 || self.access_log.path.is_empty() {
            return Err("access_log: queue must be above 0 and path not empty".into());
        }
        self.validate_upstreams()?;
        let t = &self.transcode;
        for (i, h) in t.forward_headers.iter().enumerate() {
            let reserved = h.starts_with("grpc-")
                || ["content-type", "te", "host", "connection", "x-request-id"]
                    .contains(&h.as_str());
            if http::HeaderName::try_from(h.as_str()).is_err() || h.to_lowercase() != *h || reserved
            {
                return Err(format!(
                    "transcode.forward_headers[{i}]: {h:?} is not a lowercase header name the \
                     gateway may forward (grpc-*, content-type, te, host, connection and \
                     x-request-id are the protocol's or the gateway's)"
                ));
            }
        }
        if t.reflect && (t.descriptor_set.is_some() || !t.protos.is_empty()) {
            return Err(
                "transcode.reflect and transcode.descriptor_set / transcode.protos \
                 (--reflect, --descriptor-set, --proto) are alternatives: give one"
                    .into(),
            );
        }
        self.validate_routes()
    }

    /// `[rate_limit]` and its overrides.
    fn validate_rate_limit(&self) -> Result<(), String> {
        let r = &self.rate_limit;
        if r.prune_every.0.is_zero() || r.per.0.is_zero() {
            return Err("rate_limit: per and prune_every must be above 0".into());
        }
        if r.max_keys == 0 {
            return Err("rate_limit.max_keys must be at least 1".into());
        }
        for (i, o) in r.overrides.iter().enumerate() {
            if o.per.0.is_zero() {
                return Err(format!(
                    "rate_limit.overrides[{i}] ({}): per must be above 0",
                    o.key
                ));
            }
            if !["key:", "sub:", "ip:"].iter().any(|p| o.key.starts_with(p)) {
                return Err(format!(
                    "rate_limit.overrides[{i}].key: {:?} must start with key:, sub: or ip:",
                    o.key
                ));
            }
        }
        if r.store == RateLimitStore::Redis {
            if let Err(e) = redis::Client::open(r.redis.url.as_str()) {
                return Err(format!("rate_limit.redis.url {:?}: {e}", r.redis.url));
            }
            if r.redis.timeout.0.is_zero() {
                return Err("rate_limit.redis.timeout: must be above 0".into());
            }
        }
        if http::HeaderName::try_from(r.api_key_header.as_str()).is_err() {
            return Err(format!(
                "rate_limit.api_key_header: {:?} is not a header name",
                r.api_key_header
            ));
        }
        Ok(())
    }

    /// `[cache]` and `[[aggregations]]`.
    fn validate_cache_and_aggregations(&self) -> Result<(), String> {
        if self.cache.ttl.0.is_zero() || self.cache.max_entries == 0 {
            return Err("cache: ttl and max_entries must be above 0".into());
        }
        for (i, a) in self.aggregations.iter().enumerate() {
            if !a.path.starts_with('/') || a.parts.is_empty() || a.timeout.0.is_zero() {
                return Err(format!(
                    "aggregations[{i}] ({}): needs a path starting with '/', parts and a timeout above 0",
                    a.name
                ));
            }
        }
        Ok(())
    }

    /// Timeouts that must be above 0 (a 0 would fail every request, silently).
    fn validate_timeouts(&self) -> Result<(), String> {
        let mut zero = Vec::new();
        if self.transcode.timeout.0.is_zero() {
            zero.push("transcode.timeout".to_string());
        }
        if self.limits.header_read_timeout.0.is_zero() {
            zero.push("limits.header_read_timeout".to_string());
        }
        if self.limits.idle_timeout.0.is_zero() {
            zero.push("limits.idle_timeout".to_string());
        }
        for (i, p) in self.proxy.iter().enumerate() {
            if p.timeout.0.is_zero() {
                zero.push(format!("proxy[{i}].timeout"));
            }
        }
        for (i, u) in self.upstreams.iter().enumerate() {
            if u.connect_timeout.0.is_zero() {
                zero.push(format!("upstreams[{i}].connect_timeout"));
            }
        }
        match zero.is_empty() {
            true => Ok(()),
            false => Err(format!("{}: must be above 0", zero.join(", "))),
        }
    }

    /// `[breaker]`.
    fn validate_breaker(&self) -> Result<(), String> {
        let b = &self.breaker;
        if b.consecutive_failures == 0 || b.half_open_probes == 0 || b.min_requests == 0 {
            return Err("breaker: consecutive_failures, min_requests and half_open_probes must be at least 1".into());
        }
        if !(b.failure_ratio > 0.0 && b.failure_ratio <= 1.0) {
            return Err(format!(
                "breaker.failure_ratio: must be in (0, 1], got {}",
                b.failure_ratio
            ));
        }
        if b.window.0.is_zero() || b.cooldown.0.is_zero() || b.max_cooldown.0 < b.cooldown.0 {
            return Err(
                "breaker: window and cooldown must be above 0, and max_cooldown at least cooldown"
                    .into(),
            );
        }
        Ok(())
    }

    /// `[[upstreams]]`: named once each, with valid endpoints.
    fn validate_upstreams(&self) -> Result<(), String> {
        for (i, u) in self.upstreams.iter().enumerate() {
            if u.name.is_empty() {
                return Err(format!("upstreams[{i}].name: must not be empty"));
            }
            if self.upstreams[..i].iter().any(|o| o.name == u.name) {
                return Err(format!(
                    "upstreams[{i}].name: {:?} is defined twice",
                    u.name
                ));
            }
            if let Some(t) = &u.tls
                && t.cert.is_some() != t.key.is_some()
            {
                return Err(format!(
                    "upstreams[{i}].tls: cert and key go together (a client certificate needs its key)"
                ));
            }
            if u.endpoints.is_empty() {
                return Err(format!(
                    "upstreams[{i}].endpoints ({}): needs at least one host:port",
                    u.name
                ));
            }
            for (j, e) in u.endpoints.iter().enumerate() {
                check_endpoint(e)
                    .map_err(|m| format!("upstreams[{i}].endpoints[{j}] ({}): {m}", u.name))?;
            }
        }
        Ok(())
    }

    /// Mount prefixes and proxy routes, and the upstreams they name.
    fn validate_routes(&self) -> Result<(), String> {
        self.want_upstream(
            "transcode.upstream",
            &self.transcode.upstream,
            UpstreamProtocol::Grpc,
        )?;
        for (i, m) in self.transcode.mounts.iter().enumerate() {
            if !(m.prefix.is_empty() || (m.prefix.starts_with('/') && !m.prefix.ends_with('/'))) {
                return Err(format!(
                    "transcode.mounts[{i}].prefix: {:?} must be empty or start with '/' and not end with it",
                    m.prefix
                ));
            }
            if self.transcode.mounts[..i]
                .iter()
                .any(|o| o.prefix == m.prefix)
            {
                return Err(format!(
                    "transcode.mounts[{i}].prefix: {:?} is mounted twice",
                    m.prefix
                ));
            }
        }
        for (i, p) in self.proxy.iter().enumerate() {
            if !p.prefix.starts_with('/') || !p.prefix.ends_with('/') {
                return Err(format!(
                    "proxy[{i}].prefix: {:?} must start and end with '/'",
                    p.prefix
                ));
            }
            if !p.strip_prefix.is_empty() && !p.prefix.starts_with(&p.strip_prefix) {
                return Err(format!(
                    "proxy[{i}].strip_prefix: {:?} is not a prefix of {:?}",
                    p.strip_prefix, p.prefix
                ));
            }
            self.want_upstream(
                &format!("proxy[{i}].upstream"),
                &p.upstream,
                UpstreamProtocol::Http,
            )?;
        }
        Ok(())
    }

    /// `name` (at `key`) is an upstream of `protocol`.
    fn want_upstream(
        &self,
        key: &str,
        name: &str,
        protocol: UpstreamProtocol,
    ) -> Result<(), String> {
        match self.upstream(name) {
            None => Err(format!(
                "{key}: no upstream named {name:?} (defined: {})",
                self.upstreams
                    .iter()
                    .map(|u| u.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(u) if u.protocol != protocol => Err(format!(
                "{key}: upstream {name:?} has protocol {:?}, expected {protocol:?}",
                u.protocol
            )),
            Some(_) => Ok(()),
        }
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// An endpoint must be host:port with a port.
fn check_endpoint(e: &str) -> Result<(), String> {
    // host:port and nothing else: a scheme, a path or user info would never connect.
    let authority: http::uri::Authority = e
        .parse()
        .map_err(|_| format!("{e:?} is not host:port (no scheme, no path)"))?;
    if authority.host().is_empty()
        || authority.port_u16().is_none()
        || authority.as_str().contains('@')
    {
        return Err(format!("{e:?} is not host:port (no scheme, no path)"));
    }
    Ok(())
}
