//! Response cache (moka) for GET routes of mounts that enable it: TTL and a bound on entries; the
//! key is method + path + sorted query + identity (JWT subject or API key) unless the cache is
//! public. Honours `Cache-Control: no-store` / `no-cache` from the client and `no-store` /
//! `no-cache` / `private` from the upstream; never caches errors or responses with `Set-Cookie`.
//! `X-Cache: HIT | MISS | BYPASS`. Concurrent misses for one key make one upstream call.
//!
//! Why a service and not a [`super::Policy`]: a hit answers without the inner service, which a
//! policy can do, but a miss must run the inner call *inside* moka's entry future (so that
//! concurrent misses for the key wait for that one call) and read the whole body to store it;
//! a policy only decides before the call and looks at the head after it.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use tower::{Layer, Service};

use super::MwFuture;
use super::auth::Subject;
use crate::gateway::config::CacheConfig;
use crate::gateway::{GwRequest, GwResponse};

/// A stored response.
#[derive(Debug, Clone)]
pub struct Cached {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// Largest body kept in the cache.
pub const MAX_CACHED_BODY: usize = 1 << 20;

fn directives(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
        .collect()
}

fn has(directives: &[String], name: &str) -> bool {
    directives
        .iter()
        .any(|d| d == name || d.starts_with(&format!("{name}=")))
}

/// The cache key of a request; None when it must not be cached.
fn key_of(req: &GwRequest, cfg: &CacheConfig) -> Option<String> {
    if req.parts.method != Method::GET {
        return None;
    }
    let path = req.parts.uri.path();
    let mut key = String::with_capacity(path.len() + 48);
    key.push_str("GET ");
    key.push_str(path);
    key.push('?');
    // Query parameters in a canonical order (decoded, sorted), so `?a=1&b=2` and `?b=2&a=1` share.
    if let Some(q) = req.parts.uri.query().filter(|q| !q.is_empty()) {
        let mut query: Vec<(std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> =
            form_urlencoded::parse(q.as_bytes()).collect();
        query.sort();
        for (k, v) in &query {
            key.push_str(k);
            key.push('=');
            key.push_str(v);
            key.push('&');
        }
    }
    if !cfg.public {
        key.push('#');
        match req.parts.extensions.get::<Subject>() {
            Some(Subject(s)) => {
                key.push_str("sub:");
                key.push_str(s);
            }
            None => match req
                .parts
                .headers
                .get(cfg.api_key_header.as_str())
                .and_then(|v| v.to_str().ok())
            {
                Some(k) => {
                    key.push_str("key:");
                    key.push_str(k);
                }
                None => key.push_str("anonymous"),
            },
        }
    }
    Some(key)
}

fn cacheable(resp: &GwResponse) -> bool {
    let d = directives(resp.headers());
    resp.status().is_success()
        && resp
            .extensions()
            .get::<crate::gateway::types::Streamed>()
            .is_none()
        && !resp.headers().contains_key(http::header::SET_COOKIE)
        && !has(&d, "no-store")
        && !has(&d, "no-cache")
        && !has(&d, "private")
}

fn with_x_cache(mut resp: GwResponse, value: &'static str) -> GwResponse {
    // One registered counter per result (a label lookup per request cost more than a hit).
    static COUNTERS: std::sync::OnceLock<[(&'static str, metrics::Counter); 3]> =
        std::sync::OnceLock::new();
    let counters = COUNTERS.get_or_init(|| {
        ["HIT", "MISS", "BYPASS"]
            .map(|r| (r, metrics::counter!("gwbench_cache_total", "result" => r)))
    });
    match counters.iter().find(|(r, _)| *r == value) {
        Some((_, c)) => c.increment(1),
        None => metrics::counter!("gwbench_cache_total", "result" => value).increment(1),
    }
    resp.headers_mut()
        .insert("x-cache", HeaderValue::from_static(value));
    resp
}

fn from_cached(c: &Cached) -> GwResponse {
    let mut resp = http::Response::new(Either::Left(Full::new(c.body.clone())));
    *resp.status_mut() = c.status;
    *resp.headers_mut() = c.headers.clone();
    resp
}

/// Reads a (bounded) response body into a stored response; None when it is too large or fails.
async fn store(resp: GwResponse) -> Result<Cached, GwResponse> {
    let declared = resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_CACHED_BODY) {
        return Err(resp);
    }
    let (parts, body) = resp.into_parts();
    match http_body_util::Limited::new(body, MAX_CACHED_BODY)
        .collect()
        .await
    {
        Ok(collected) => Ok(Cached {
            status: parts.status,
            headers: parts.headers,
            body: collected.to_bytes(),
        }),
        // The body is gone: answer with what the gateway would answer for a broken upstream.
        Err(e) => Err(crate::gateway::status::GwError::grpc(
            tonic::Code::Unavailable,
            format!("upstream body: {e}"),
        )
        .into_response()),
    }
}

// ===== CacheLayer =====

/// Caches GET responses in front of the inner service.
#[derive(Debug, Clone)]
pub struct CacheLayer {
    /// Behind an `Arc`: cloning a moka cache clones several `Arc`s (one per request here).
    cache: Arc<moka::future::Cache<String, Arc<Cached>>>,
    cfg: Arc<CacheConfig>,
}

impl CacheLayer {
    /// A cache of at most `cfg.max_entries` responses, each kept for `cfg.ttl`.
    pub fn new(cfg: Arc<CacheConfig>) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(cfg.max_entries)
            .time_to_live(cfg.ttl.0)
            .build();
        CacheLayer {
            cache: Arc::new(cache),
            cfg,
        }
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Cache {
            inner,
            cache: self.cache.clone(),
            cfg: self.cfg.clone(),
        }
    }
}

/// The service of [`CacheLayer`].
#[derive(Debug, Clone)]
pub struct Cache<S> {
    inner: S,
    /// Behind an `Arc`: cloning a moka cache clones several `Arc`s (one per request here).
    cache: Arc<moka::future::Cache<String, Arc<Cached>>>,
    cfg: Arc<CacheConfig>,
}

impl<S> Service<GwRequest> for Cache<S>
where
    S: Service<GwRequest, Response = GwResponse, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = GwResponse;
    type Error = std::convert::Infallible;
    type Future = MwFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: GwRequest) -> Self::Future {
        // Call the clone that poll_ready made ready, leaving a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let client = directives(&req.parts.headers);
        let key = key_of(&req, &self.cfg);
        let cache = self.cache.clone();
        Box::pin(async move {
            let Some(key) = key.filter(|_| !has(&client, "no-store")) else {
                return Ok(with_x_cache(inner.call(req).await?, "BYPASS"));
            };
            if has(&client, "no-cache") {
                // Revalidate: always ask the upstream, and keep a cacheable answer.
                let resp = inner.call(req).await?;
                if !cacheable(&resp) {
                    return Ok(with_x_cache(resp, "MISS"));
                }
                return Ok(with_x_cache(
                    match store(resp).await {
                        Ok(c) => {
                            let r = from_cached(&c);
                            cache.insert(key, Arc::new(c)).await;
                            r
                        }
                        Err(r) => r,
                    },
                    "MISS",
                ));
            }
            // One upstream call per key however many requests miss at once; an uncacheable
            // answer goes back to this caller only.
            let mut uncached: Option<GwResponse> = None;
            let entry = cache
                .entry(key)
                .or_optionally_insert_with(async {
                    let resp = inner.call(req).await.unwrap_or_else(|never| match never {});
                    if !cacheable(&resp) {
                        uncached = Some(resp);
                        return None;
                    }
                    match store(resp).await {
                        Ok(c) => Some(Arc::new(c)),
                        Err(r) => {
                            uncached = Some(r);
                            None
                        }
                    }
                })
                .await;
            Ok(match (entry, uncached) {
                (Some(e), _) => with_x_cache(
                    from_cached(e.value()),
                    if e.is_fresh() { "MISS" } else { "HIT" },
                ),
                (None, Some(resp)) => with_x_cache(resp, "MISS"),
                // moka re-runs a waiter's own init when the leader's gave nothing, so a caller
                // always ends with an entry or its own answer; this arm is not reached.
                (None, None) => crate::gateway::status::GwError::grpc(
                    tonic::Code::Internal,
                    "cache: no response",
                )
                .into_response(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tower::ServiceExt;

    use crate::gateway::test_request as request;

    /// The X-Cache verdict of one request through `svc`.
    async fn verdict<S>(svc: &S, method: Method, uri: &str, headers: &[(&str, &str)]) -> String
    where
        S: Service<GwRequest, Response = GwResponse, Error = std::convert::Infallible> + Clone,
    {
        let resp = svc
            .clone()
            .oneshot(request(method, uri, headers))
            .await
            .unwrap();
        resp.headers()["x-cache"].to_str().unwrap().to_string()
    }

    /// An upstream that counts calls and answers per path: /error → 500, /cookie → Set-Cookie,
    /// /private → Cache-Control: private, else 200 after a short wait.
    fn upstream(
        calls: Arc<AtomicUsize>,
    ) -> impl Service<
        GwRequest,
        Response = GwResponse,
        Error = std::convert::Infallible,
        Future: Send,
    > + Clone
    + Send
    + 'static {
        tower::service_fn(move |req: GwRequest| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                let path = req.parts.uri.path().to_string();
                let mut resp = crate::net::json(StatusCode::OK, format!("{{\"path\":\"{path}\"}}"))
                    .map(Either::Left);
                match path.as_str() {
                    "/error" => *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
                    "/cookie" => {
                        resp.headers_mut()
                            .insert(http::header::SET_COOKIE, HeaderValue::from_static("a=b"));
                    }
                    "/private" => {
                        resp.headers_mut().insert(
                            http::header::CACHE_CONTROL,
                            HeaderValue::from_static("private, max-age=60"),
                        );
                    }
                    _ => {}
                }
                Ok::<_, std::convert::Infallible>(resp)
            }
        })
    }

    fn layer() -> CacheLayer {
        CacheLayer::new(Arc::new(CacheConfig::default()))
    }

    #[tokio::test]
    async fn hits_after_a_miss_and_keys_by_identity_and_query_order() {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = layer().layer(upstream(calls.clone()));
        assert_eq!(verdict(&svc, Method::GET, "/a?b=2&a=1", &[]).await, "MISS");
        assert_eq!(verdict(&svc, Method::GET, "/a?a=1&b=2", &[]).await, "HIT");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Another caller (API key) has its own entry.
        assert_eq!(
            verdict(&svc, Method::GET, "/a?a=1&b=2", &[("x-api-key", "k2")]).await,
            "MISS"
        );
        // POST and client no-store go around the cache; client no-cache asks the upstream again.
        assert_eq!(verdict(&svc, Method::POST, "/a", &[]).await, "BYPASS");
        assert_eq!(
            verdict(
                &svc,
                Method::GET,
                "/a?a=1&b=2",
                &[("cache-control", "no-store")]
            )
            .await,
            "BYPASS"
        );
        assert_eq!(
            verdict(
                &svc,
                Method::GET,
                "/a?a=1&b=2",
                &[("cache-control", "no-cache")]
            )
            .await,
            "MISS"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn errors_cookies_and_private_answers_are_never_stored() {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = layer().layer(upstream(calls.clone()));
        for path in ["/error", "/cookie", "/private"] {
            for _ in 0..2 {
                assert_eq!(
                    verdict(&svc, Method::GET, path, &[]).await,
                    "MISS",
                    "{path}"
                );
            }
        }
        assert_eq!(calls.load(Ordering::SeqCst), 6);
    }

    #[tokio::test]
    async fn concurrent_misses_make_one_upstream_call() {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = layer().layer(upstream(calls.clone()));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let svc = svc.clone();
            tasks.spawn(async move {
                svc.oneshot(request(Method::GET, "/same", &[]))
                    .await
                    .unwrap()
            });
        }
        let responses = tasks.join_all().await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "coalesced");
        let misses = responses
            .iter()
            .filter(|r| r.headers()["x-cache"] == "MISS")
            .count();
        assert_eq!(misses, 1);
    }
}
