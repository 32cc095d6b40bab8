//! What to send: the target URL(s) with `{seq}` / `{rand:A-B}` placeholders, and the request
//! template (method, headers, body) prepared once so that building a request is a few clones.

use std::net::{SocketAddr, ToSocketAddrs};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Uri};
use http::{Method, Request};

use super::body::ReqBody;
use super::recorder::Outcome;

use super::LoadError;

pub(crate) use super::template::PathTemplate;

/// The wire protocol of the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1, one request at a time per connection, keep-alive.
    Http1,
    /// HTTP/2 over cleartext (prior knowledge), many streams per connection.
    Http2,
    /// gRPC unary calls (HTTP/2).
    Grpc,
    /// WebSocket messages (`ws://`, `wss://`): many in flight per connection.
    WebSocket,
}

impl Protocol {
    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http1 => "HTTP/1.1",
            Protocol::Http2 => "h2c",
            Protocol::Grpc => "gRPC",
            Protocol::WebSocket => "WebSocket",
        }
    }
}

/// Everything needed to build each request, prepared once.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    /// HTTP/1.1, h2c or gRPC.
    pub protocol: Protocol,
    /// Where to connect.
    pub addr: SocketAddr,
    /// The local address to connect from (`load --local-addr`); None: the kernel picks.
    pub from: Option<std::net::IpAddr>,
    /// TLS (an `https://` target); its handshakes are counted and timed apart.
    pub tls: Option<std::sync::Arc<crate::net::tls::ClientTls>>,
    authority: Authority,
    method: Method,
    paths: Vec<PathTemplate>,
    headers: HeaderMap,
    body: Bytes,
    group: bool,
    /// A gRPC target's call: kind, per-call message, stream messages, deadline.
    pub grpc: Option<std::sync::Arc<super::grpc::GrpcPlan>>,
    /// A WebSocket target's upgrade handshakes (TCP, TLS, upgrade), ns, timed apart.
    pub ws_connects: Option<std::sync::Arc<std::sync::Mutex<hdrhistogram::Histogram<u64>>>>,
}

/// TLS to the target's host, offering the protocol `protocol` speaks (h2 or http/1.1).
pub fn client_tls(
    protocol: Protocol,
    authority: &Authority,
    opts: &crate::net::tls::ClientOptions,
) -> Result<crate::net::tls::ClientTls, LoadError> {
    use crate::net::tls::{ALPN_H2, ALPN_HTTP1};
    let alpn: &[&[u8]] = match protocol {
        Protocol::Http1 | Protocol::WebSocket => &[ALPN_HTTP1],
        Protocol::Http2 | Protocol::Grpc => &[ALPN_H2],
    };
    crate::net::tls::ClientTls::new(authority.host(), alpn, opts)
        .map_err(|e| LoadError::Config(format!("TLS: {e}")))
}

impl RequestTemplate {
    /// TLS with these options (`--insecure`, `--cacert`, `--cert`/`--key`) for an `https://`
    /// target, speaking `protocol` (h2 for HTTP/2 and gRPC, http/1.1 otherwise); unchanged
    /// for `http://`.
    pub fn with_tls(
        mut self,
        protocol: Protocol,
        opts: &crate::net::tls::ClientOptions,
    ) -> Result<Self, LoadError> {
        if self.tls.is_some() {
            if protocol != Protocol::Http1 && self.protocol == Protocol::Http1 {
                // HTTP/2 carries the authority in :authority; the Host header the HTTP/1.1
                // template had would be a second one (nginx answers 400 to that).
                let ours = HeaderValue::from_str(self.authority.as_str()).ok();
                if self.headers.get(header::HOST) == ours.as_ref() {
                    self.headers.remove(header::HOST);
                }
            }
            self.protocol = protocol;
            self.tls = Some(std::sync::Arc::new(client_tls(
                protocol,
                &self.authority,
                opts,
            )?));
        }
        Ok(self)
    }

    /// How a connection to the target is opened.
    pub fn dial(&self) -> crate::net::Dial {
        crate::net::Dial {
            addr: self.addr,
            from: self.from,
        }
    }

    /// Parses the target URL(s) and prepares the request. All URLs must share scheme and
    /// host:port (one connection pool); their paths are used round-robin.
    pub fn new(
        protocol: Protocol,
        urls: &[String],
        method: Method,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<Self, LoadError> {
        let first = urls
            .first()
            .ok_or_else(|| LoadError::Config("no target URL given".into()))?;
        let (authority, paths, https, ws) = parse_urls(urls)?;
        if ws != (protocol == Protocol::WebSocket) {
            return Err(LoadError::Config(
                "ws:// and wss:// targets are WebSocket (and http:// and https:// are not): \
                 all targets must share the scheme"
                    .into(),
            ));
        }
        let addr = resolve(first, &authority)?;
        let map = request_headers(protocol, &authority, headers, !body.is_empty())?;
        let tls = match https {
            false => None,
            true => Some(std::sync::Arc::new(client_tls(
                protocol,
                &authority,
                &crate::net::tls::ClientOptions::default(),
            )?)),
        };
        Ok(RequestTemplate {
            protocol,
            from: None,
            tls,
            addr,
            authority,
            method,
            paths,
            headers: map,
            body,
            group: false,
            grpc: None,
            ws_connects: (protocol == Protocol::WebSocket).then(|| {
                let h = hdrhistogram::Histogram::new(3).expect("3 significant figures are valid");
                std::sync::Arc::new(std::sync::Mutex::new(h))
            }),
        })
    }

    /// Sends every URL for each scheduled request, in parallel on their own connections, and
    /// times them as one (a client fanning out). HTTP/1.1 only.
    pub fn with_group(mut self) -> Result<Self, LoadError> {
        if self.protocol != Protocol::Http1 {
            return Err(LoadError::Config(
                "a group of URLs sent as one request needs HTTP/1.1 targets".into(),
            ));
        }
        self.group = true;
        Ok(self)
    }

    /// Whether every URL goes out for each request.
    pub fn group(&self) -> bool {
        self.group
    }

    /// How many target URLs there are.
    pub fn paths_len(&self) -> usize {
        self.paths.len()
    }

    /// The first target, for reports.
    pub fn describe(&self) -> String {
        let paths: Vec<String> = self
            .paths
            .iter()
            .map(|p| p.fixed.as_ref().map_or_else(|| p.text(), |f| f.to_string()))
            .collect();
        let scheme = match (self.protocol, self.tls.is_some()) {
            (Protocol::WebSocket, true) => "wss",
            (Protocol::WebSocket, false) => "ws",
            (_, true) => "https",
            (_, false) => "http",
        };
        format!(
            "{}://{}{}",
            scheme,
            self.authority,
            paths.first().cloned().unwrap_or_default()
        )
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Whether responses to this request carry no body whatever their headers say (HEAD).
    pub fn is_head(&self) -> bool {
        self.method == Method::HEAD
    }

    /// Writes request `index` (0-based) of a phase as HTTP/1.1 bytes into `out` (cleared
    /// first): request line, headers, `Content-Length`, body. For a path without placeholders
    /// these are the same bytes every time, prepared by [`RequestTemplate::h1_fixed`].
    pub fn write_h1(&self, index: u64, out: &mut Vec<u8>) {
        out.clear();
        let path = &self.paths[(index % self.paths.len() as u64) as usize];
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        match &path.fixed {
            Some(pq) => out.extend_from_slice(pq.as_str().as_bytes()),
            None => out.extend_from_slice(path.render(index + 1).as_bytes()),
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !self.body.is_empty()
            || !matches!(self.method, Method::GET | Method::HEAD | Method::DELETE)
        {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(self.body.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
    }

    /// The HTTP/1.1 bytes of every request, when they never change (one path, no placeholders).
    pub fn h1_fixed(&self) -> Option<Bytes> {
        if self.paths.len() == 1 && self.paths[0].fixed.is_some() {
            let mut out = Vec::new();
            self.write_h1(0, &mut out);
            Some(Bytes::from(out))
        } else {
            None
        }
    }

    /// Whether calls are gRPC streams (their messages are timed apart).
    pub fn streaming(&self) -> bool {
        self.grpc
            .as_ref()
            .is_some_and(|g| g.kind != super::grpc::CallKind::Unary)
    }

    /// How long a request may take, and what it is when it takes longer: the `--timeout`, or a
    /// shorter gRPC `--deadline` (then DEADLINE_EXCEEDED, as the client's own deadline).
    pub fn limit(&self, timeout: std::time::Duration) -> (std::time::Duration, Outcome) {
        match self.grpc.as_ref().and_then(|g| g.deadline) {
            Some(d) if d < timeout => (d, Outcome::Grpc(crate::grpc::DEADLINE_EXCEEDED)),
            _ => (timeout, Outcome::Timeout),
        }
    }

    /// Builds request `index` (0-based) of a phase; an error kind when its templated gRPC
    /// message does not encode.
    pub fn build(&self, index: u64) -> Result<Request<ReqBody>, &'static str> {
        let path = &self.paths[(index % self.paths.len() as u64) as usize];
        let pq = path.instance(index + 1);
        let uri = match self.protocol {
            // HTTP/1.1 sends origin-form; the Host header carries the authority.
            Protocol::Http1 | Protocol::WebSocket => Uri::from(pq),
            // HTTP/2 takes :scheme and :authority from an absolute URI.
            Protocol::Http2 | Protocol::Grpc => {
                let mut parts = http::uri::Parts::default();
                parts.scheme = Some(match self.tls {
                    Some(_) => http::uri::Scheme::HTTPS,
                    None => http::uri::Scheme::HTTP,
                });
                parts.authority = Some(self.authority.clone());
                parts.path_and_query = Some(pq);
                Uri::from_parts(parts).expect("scheme, authority and path make a URI")
            }
        };
        let body = match &self.grpc {
            Some(plan) => plan.body(index, &self.body)?,
            None => ReqBody::whole(self.body.clone()),
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = self.headers.clone();
        if !matches!(self.protocol, Protocol::Http1 | Protocol::WebSocket) {
            *req.version_mut() = http::Version::HTTP_2;
        }
        Ok(req)
    }

    /// The upgrade request of WebSocket connection `index` (its path is the template's paths
    /// in turn, placeholders rendered with the connection's number), with the `--header`s.
    pub fn ws_request(&self, index: u64) -> http::Request<()> {
        let path = &self.paths[(index % self.paths.len() as u64) as usize];
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        let uri = format!("{scheme}://{}{}", self.authority, path.render(index + 1));
        let mut req = http::Request::new(());
        *req.uri_mut() = uri.parse().unwrap_or_default();
        for (name, value) in &self.headers {
            if name != header::HOST && name != header::CONTENT_TYPE {
                req.headers_mut().append(name.clone(), value.clone());
            }
        }
        req
    }

    /// Notes one WebSocket connection's opening time.
    pub fn note_connect(&self, took: std::time::Duration) {
        if let Some(h) = &self.ws_connects {
            let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
            let _ = h.record(took.as_nanos().max(1) as u64);
        }
    }

    /// The body (`--data`/`--body`) as text, for WebSocket message templates.
    pub fn body_text(&self) -> Result<&str, LoadError> {
        std::str::from_utf8(&self.body).map_err(|_| {
            LoadError::Config("a WebSocket message template (--data) must be UTF-8 text".into())
        })
    }
}

/// Splits `http://host:port/path?q` into (`http://host:port`, `/path?q`).
fn split_url(url: &str) -> Result<(&str, &str), LoadError> {
    let after_scheme = url.find("://").map(|i| i + 3).ok_or_else(|| {
        LoadError::Config(format!(
            "{url:?}: not a URL; expected e.g. http://127.0.0.1:8080/path"
        ))
    })?;
    match url[after_scheme..].find(['/', '?']) {
        Some(i) => Ok((&url[..after_scheme + i], &url[after_scheme + i..])),
        None => Ok((url, "/")),
    }
}

/// The targets' one authority (they share a connection pool) and their path templates.
fn parse_urls(urls: &[String]) -> Result<(Authority, Vec<PathTemplate>, bool, bool), LoadError> {
    let mut authority: Option<Authority> = None;
    let mut https: Option<bool> = None;
    let mut ws: Option<bool> = None;
    let mut paths = Vec::new();
    for url in urls {
        // Placeholders are not valid URI characters: parse a neutral stand-in first.
        let (base, pq) = split_url(url)?;
        let uri: Uri = base.parse().map_err(|e| {
            LoadError::Config(format!(
                "{url}: not a URL ({e}); expected e.g. http://127.0.0.1:8080/path"
            ))
        })?;
        let (tls, websocket) = match uri.scheme_str() {
            Some("http") => (false, false),
            Some("https") => (true, false),
            Some("ws") => (false, true),
            Some("wss") => (true, true),
            _ => {
                return Err(LoadError::Config(format!(
                    "{url}: expected an http://, https://, ws:// or wss:// URL"
                )));
            }
        };
        if *ws.get_or_insert(websocket) != websocket {
            return Err(LoadError::Config(
                "all targets must share the scheme: WebSocket and HTTP mixed".into(),
            ));
        }
        if *https.get_or_insert(tls) != tls {
            return Err(LoadError::Config(
                "all targets must share the scheme (one connection pool): http and https mixed"
                    .into(),
            ));
        }
        let auth = uri
            .authority()
            .cloned()
            .ok_or_else(|| LoadError::Config(format!("{url}: the URL has no host")))?;
        if let Some(a) = &authority
            && *a != auth
        {
            return Err(LoadError::Config(format!(
                "all targets must share host:port (one connection pool): {a} and {auth}"
            )));
        }
        authority = Some(auth);
        paths.push(PathTemplate::parse(pq, url)?);
    }
    let authority = authority.ok_or_else(|| LoadError::Config("no target URL given".into()))?;
    Ok((
        authority,
        paths,
        https.unwrap_or(false),
        ws.unwrap_or(false),
    ))
}

/// The socket address of `authority` (port 80 when none is given).
fn resolve(first: &str, authority: &Authority) -> Result<std::net::SocketAddr, LoadError> {
    let host_port = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    host_port
        .to_socket_addrs()
        .map_err(|e| LoadError::Unreachable(format!("{first}: cannot resolve {host_port}: {e}")))?
        .next()
        .ok_or_else(|| LoadError::Unreachable(format!("{first}: {host_port} has no address")))
}

/// The headers every request carries: Host (HTTP/1.1), the content type of the protocol or
/// body, and the user's `--header`s.
fn request_headers(
    protocol: Protocol,
    authority: &Authority,
    headers: &[(String, String)],
    has_body: bool,
) -> Result<HeaderMap, LoadError> {
    let mut map = HeaderMap::new();
    if matches!(protocol, Protocol::Http1 | Protocol::WebSocket) {
        map.insert(
            header::HOST,
            HeaderValue::from_str(authority.as_str())
                .map_err(|_| LoadError::Config(format!("{authority}: not a valid Host")))?,
        );
    }
    if protocol == Protocol::Grpc {
        map.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        map.insert(header::TE, HeaderValue::from_static("trailers"));
    } else if has_body {
        map.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    for (k, v) in headers {
        let name = HeaderName::try_from(k.as_str())
            .map_err(|_| LoadError::Config(format!("--header {k:?}: not a valid header name")))?;
        let value = HeaderValue::try_from(v.as_str()).map_err(|_| {
            LoadError::Config(format!("--header {k}: {v:?} is not a valid header value"))
        })?;
        map.append(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(urls: &[&str]) -> Result<RequestTemplate, LoadError> {
        let urls: Vec<String> = urls.iter().map(|s| s.to_string()).collect();
        RequestTemplate::new(Protocol::Http1, &urls, Method::GET, &[], Bytes::new())
    }

    #[test]
    fn placeholders_expand() {
        let t = template(&["http://127.0.0.1:8081/api/users/{seq}?x={rand:5-5}"]).unwrap();
        assert_eq!(t.build(0).unwrap().uri(), "/api/users/1?x=5");
        assert_eq!(t.build(41).unwrap().uri(), "/api/users/42?x=5");
        assert_eq!(t.build(0).unwrap().headers()["host"], "127.0.0.1:8081");
        let rr = template(&["http://127.0.0.1:1/a", "http://127.0.0.1:1/b"]).unwrap();
        assert_eq!(
            [
                rr.build(0).unwrap().uri().path(),
                rr.build(1).unwrap().uri().path(),
                rr.build(2).unwrap().uri().path()
            ],
            ["/a", "/b", "/a"]
        );
        assert_eq!(
            template(&["http://127.0.0.1:9"])
                .unwrap()
                .build(0)
                .unwrap()
                .uri(),
            "/"
        );
    }

    #[test]
    fn http1_bytes() {
        let t = template(&["http://127.0.0.1:8081/api/users/{seq}"]).unwrap();
        let mut out = Vec::new();
        t.write_h1(6, &mut out);
        assert_eq!(
            out,
            b"GET /api/users/7 HTTP/1.1\r\nhost: 127.0.0.1:8081\r\n\r\n"
        );
        assert!(t.h1_fixed().is_none());
        let urls = ["http://127.0.0.1:8081/x".to_string()];
        let headers = [("x-k".to_string(), "v".to_string())];
        let post = RequestTemplate::new(
            Protocol::Http1,
            &urls,
            Method::POST,
            &headers,
            Bytes::from("{}"),
        )
        .unwrap();
        let expected: &[u8] =
            b"POST /x HTTP/1.1\r\nhost: 127.0.0.1:8081\r\ncontent-type: application/json\r\n\
            x-k: v\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(post.h1_fixed().unwrap(), expected);
    }

    #[test]
    fn an_https_template_switched_to_h2_by_alpn_sends_no_host_header() {
        let urls = ["https://127.0.0.1:8443/x".to_string()];
        let opts = crate::net::tls::ClientOptions {
            insecure: true,
            ..Default::default()
        };
        let h1 =
            RequestTemplate::new(Protocol::Http1, &urls, Method::GET, &[], Bytes::new()).unwrap();
        assert!(h1.build(0).unwrap().headers().contains_key(header::HOST));
        let h2 = h1.with_tls(Protocol::Http2, &opts).unwrap();
        let req = h2.build(0).unwrap();
        assert!(
            !req.headers().contains_key(header::HOST),
            "{:?}",
            req.headers()
        );
        assert_eq!(req.uri().authority().unwrap(), "127.0.0.1:8443");
    }

    #[test]
    fn bad_urls_are_config_errors() {
        for bad in [
            "localhost:8080/x",
            "ftp://127.0.0.1/x",
            "http://127.0.0.1:1/{nope}",
            "http://127.0.0.1:1/{rand:9-1}",
            "http://127.0.0.1:1/{seq",
            "http:///x",
        ] {
            assert!(
                matches!(template(&[bad]), Err(LoadError::Config(_))),
                "{bad}"
            );
        }
        assert!(template(&["http://127.0.0.1:1/a", "http://127.0.0.1:2/b"]).is_err());
        // One pool, one scheme.
        assert!(template(&["http://127.0.0.1:1/a", "https://127.0.0.1:1/b"]).is_err());
    }
}
