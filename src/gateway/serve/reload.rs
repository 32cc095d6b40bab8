//! Reload without restart: on `SIGHUP` or `POST /reload` on the admin port, the configuration is
//! read again, validated, and a whole new gateway — routes, middleware state (limits, breakers,
//! caches), upstream pools — is built for every worker before any is swapped in. A
//! configuration that does not read, validate or build is refused with its error and the old
//! one keeps serving. Each worker serves from a [`Slot`]: a request takes the gateway that is
//! current when it arrives and finishes on it, whatever is swapped in meanwhile.
//!
//! What a reload cannot change (the listeners: addresses and TLS) is refused; restart for it.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::gateway::config::GatewayConfig;
use crate::gateway::{Gateway, GatewayError};

/// Where a worker takes its gateway from, request by request.
pub type Slot = Arc<ArcSwap<Gateway>>;

/// Reads the configuration anew (the file and the flags the gateway started with), validated.
pub type Source = Box<dyn Fn() -> Result<GatewayConfig, String> + Send + Sync>;

/// The gateway's reload: its workers' slots, the configuration they serve, where a new one
/// comes from.
pub struct Reload {
    slots: Vec<Slot>,
    serving: tokio::sync::Mutex<GatewayConfig>,
    source: std::sync::Mutex<Option<Source>>,
}

impl std::fmt::Debug for Reload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reload")
            .field("workers", &self.slots.len())
            .finish()
    }
}

/// What a reload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reloaded {
    /// Routes now served.
    pub routes: usize,
    /// Workers swapped.
    pub workers: usize,
}

impl Reload {
    /// Over the workers' `slots`, serving `cfg`.
    pub fn new(slots: Vec<Slot>, cfg: GatewayConfig) -> Reload {
        Reload {
            slots,
            serving: tokio::sync::Mutex::new(cfg),
            source: std::sync::Mutex::new(None),
        }
    }

    /// Sets where [`reload`](Self::reload) reads a new configuration from.
    pub fn set_source(&self, source: Source) {
        if let Ok(mut s) = self.source.lock() {
            *s = Some(source);
        }
    }

    /// Worker 0's current gateway (the route table is every worker's).
    pub fn current(&self) -> Arc<Gateway> {
        self.slots
            .first()
            .map(|s| s.load_full())
            .expect("a gateway has at least one worker")
    }

    /// Reads the configuration from the source and applies it.
    pub async fn reload(&self) -> Result<Reloaded, GatewayError> {
        let read = match self.source.lock() {
            Ok(source) => source.as_ref().map(|read| read()),
            Err(_) => None,
        };
        let cfg = read
            .ok_or_else(|| GatewayError("this gateway has no configuration to reload".into()))?
            .map_err(GatewayError)?;
        self.apply(cfg).await
    }

    /// Builds a gateway per worker from `cfg` and swaps them in; on any error nothing is
    /// swapped. One reload at a time.
    pub async fn apply(&self, cfg: GatewayConfig) -> Result<Reloaded, GatewayError> {
        let mut serving = self.serving.lock().await;
        cfg.validate().map_err(GatewayError)?;
        let listen = |c: &GatewayConfig| serde_json::to_value(&c.listen).ok();
        if listen(&cfg) != listen(&serving) {
            return Err(GatewayError(
                "[listen] changed (addresses or TLS): a reload keeps the listeners; restart to \
                 change them"
                    .into(),
            ));
        }
        let current = self.current();
        let common = Gateway::common_after(&cfg, Some((&serving, &current))).await?;
        let gateways = self
            .slots
            .iter()
            .map(|_| Gateway::worker(&cfg, &common).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let routes = gateways.first().map_or(0, |g| g.routes().len());
        for (slot, gw) in self.slots.iter().zip(gateways) {
            slot.store(gw);
        }
        *serving = cfg;
        Ok(Reloaded {
            routes,
            workers: self.slots.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A collector at the worst: it accepts connections and never answers.
    fn silent_collector() -> (std::net::TcpListener, String) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        (l, url)
    }

    fn tracer_of(reload: &Reload) -> Arc<crate::gateway::observe::trace::Tracing> {
        reload.current().observer.tracing().expect("tracing is on")
    }

    #[tokio::test]
    async fn reloads_keep_one_tracer_while_its_settings_stay_and_replace_it_when_they_change() {
        let (_collector, url) = silent_collector();
        let mut cfg = GatewayConfig::default_config();
        cfg.tracing.otlp_endpoint = url;
        let first = Gateway::new(&cfg).unwrap();
        let reload = Reload::new(vec![Arc::new(ArcSwap::from_pointee(first))], cfg.clone());
        let tracer = tracer_of(&reload);
        for _ in 0..40 {
            reload.apply(cfg.clone()).await.unwrap();
            assert!(Arc::ptr_eq(&tracer, &tracer_of(&reload)), "a second tracer");
        }
        let mut renamed = cfg.clone();
        renamed.tracing.service_name = "renamed".into();
        reload.apply(renamed).await.unwrap();
        assert!(!Arc::ptr_eq(&tracer, &tracer_of(&reload)));
    }
}
