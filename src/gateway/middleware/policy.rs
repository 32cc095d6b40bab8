//! One middleware shape: a [`Policy`] decides on a request, looks at its response, and is told
//! when the request was dropped before the response came (the client hung up). [`Apply`] runs
//! any policy around an inner service and owns that bookkeeping with a drop guard, so no policy
//! can forget what it counted on the way in (a breaker's probe slot, a request in flight).
//! A decision is made on the spot (auth, a local rate limit, a breaker) or awaited (a limit
//! shared through Redis): [`Decision`]. The same idea as tower's `filter` / `AsyncFilter`,
//! tower-http's `ValidateRequest` and linkerd's `filters::Apply`; the cache, which answers by
//! itself and coalesces misses around the inner call, stays its own service.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::gateway::{GwRequest, GwResponse};

/// The future every middleware service returns: errors are already responses.
pub type MwFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<GwResponse, Infallible>> + Send>>;

/// A refusal: the response that answers the request instead of the inner service (boxed: it is
/// the rare path, and a response is large).
pub type Refusal = Box<GwResponse>;

/// A policy's decision on a request: made now, or awaited (the future owns what it needs).
pub enum Decision<S> {
    /// Decided on the spot: pass with the state to keep, or answer.
    Now(Result<S, Refusal>),
    /// Decided by a future (a remote store's answer); a request dropped while it waits has
    /// taken nothing, so no hook runs.
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = Result<S, Refusal>> + Send>>),
}

impl<S> std::fmt::Debug for Decision<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decision::Now(r) => write!(f, "Decision::Now(pass: {})", r.is_ok()),
            Decision::Later(_) => f.write_str("Decision::Later"),
        }
    }
}

/// A request/response policy run by [`Apply`].
pub trait Policy: Send + Sync + 'static {
    /// What the policy carries from the request to its outcome (a probe flag, a start time).
    type State: Send + 'static;

    /// Decides on a request (and may change it): passing it on with the state to keep, or
    /// answering it here without calling the inner service; now, or by a future.
    fn on_request(&self, req: &mut GwRequest) -> Decision<Self::State>;

    /// The inner service answered; the policy may record the outcome and add headers.
    fn on_response(&self, state: Self::State, resp: &mut GwResponse);

    /// The request was dropped after [`Policy::on_request`] passed it and before the inner
    /// service answered. Gives back whatever `on_request` took.
    fn on_drop(&self, state: Self::State) {
        let _ = state;
    }
}

// ===== PolicyLayer =====

/// Wraps a service in a [`Policy`].
#[derive(Debug)]
pub struct PolicyLayer<P> {
    policy: Arc<P>,
}

impl<P> Clone for PolicyLayer<P> {
    fn clone(&self) -> Self {
        PolicyLayer {
            policy: self.policy.clone(),
        }
    }
}

impl<P: Policy> PolicyLayer<P> {
    /// A layer applying `policy`.
    pub fn new(policy: P) -> Self {
        PolicyLayer {
            policy: Arc::new(policy),
        }
    }
}

impl<P, S> Layer<S> for PolicyLayer<P> {
    type Service = Apply<P, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Apply {
            policy: self.policy.clone(),
            inner,
        }
    }
}

// ===== Apply =====

/// The service of [`PolicyLayer`]: runs the policy's hooks around `inner`.
#[derive(Debug)]
pub struct Apply<P, S> {
    policy: Arc<P>,
    inner: S,
}

impl<P, S: Clone> Clone for Apply<P, S> {
    fn clone(&self) -> Self {
        Apply {
            policy: self.policy.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<P, S> Service<GwRequest> for Apply<P, S>
where
    P: Policy,
    S: Service<GwRequest, Response = GwResponse, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = GwResponse;
    type Error = Infallible;
    type Future = MwFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: GwRequest) -> Self::Future {
        let decided = match self.policy.on_request(&mut req) {
            Decision::Now(decided) => decided,
            Decision::Later(decision) => return self.call_later(decision, req),
        };
        let state = match decided {
            Ok(state) => state,
            Err(resp) => return Box::pin(std::future::ready(Ok(*resp))),
        };
        let guard = Pending {
            policy: self.policy.clone(),
            state: Some(state),
        };
        let mut inner = self.take_ready();
        Box::pin(async move {
            let mut guard = guard;
            let Ok(mut resp) = inner.call(req).await;
            if let Some(state) = guard.state.take() {
                guard.policy.on_response(state, &mut resp);
            }
            Ok(resp)
        })
    }
}

impl<P, S> Apply<P, S>
where
    P: Policy,
    S: Service<GwRequest, Response = GwResponse, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    /// The clone that poll_ready made ready, leaving a fresh clone in its place.
    fn take_ready(&mut self) -> S {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
    }

    /// A decision that awaits: the inner service is called once it passes.
    fn call_later(
        &mut self,
        decision: std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<P::State, Refusal>> + Send>,
        >,
        req: GwRequest,
    ) -> MwFuture {
        let policy = self.policy.clone();
        let mut inner = self.take_ready();
        Box::pin(async move {
            let state = match decision.await {
                Ok(state) => state,
                Err(resp) => return Ok(*resp),
            };
            let mut guard = Pending {
                policy,
                state: Some(state),
            };
            let Ok(mut resp) = inner.call(req).await;
            if let Some(state) = guard.state.take() {
                guard.policy.on_response(state, &mut resp);
            }
            Ok(resp)
        })
    }
}

/// A passed request whose outcome is not known yet: dropping it unanswered tells the policy.
struct Pending<P: Policy> {
    policy: Arc<P>,
    state: Option<P::State>,
}

impl<P: Policy> Drop for Pending<P> {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            self.policy.on_drop(state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};
    use tower::ServiceExt;

    /// Counts requests passed, answered and dropped; refuses paths under `/no`.
    #[derive(Default)]
    struct Count {
        open: AtomicI64,
        answered: AtomicI64,
        dropped: AtomicI64,
    }

    impl Policy for Count {
        type State = ();
        fn on_request(&self, req: &mut GwRequest) -> Decision<()> {
            if req.parts.uri.path().starts_with("/no") {
                return Decision::Now(Err(Box::new(
                    crate::net::json(http::StatusCode::FORBIDDEN, String::from("{}"))
                        .map(http_body_util::Either::Left),
                )));
            }
            self.open.fetch_add(1, Ordering::SeqCst);
            Decision::Now(Ok(()))
        }
        fn on_response(&self, (): (), resp: &mut GwResponse) {
            self.open.fetch_sub(1, Ordering::SeqCst);
            self.answered.fetch_add(1, Ordering::SeqCst);
            resp.headers_mut()
                .insert("x-seen", http::HeaderValue::from_static("1"));
        }
        fn on_drop(&self, (): ()) {
            self.open.fetch_sub(1, Ordering::SeqCst);
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn every_passed_request_ends_in_exactly_one_hook() {
        let layer = PolicyLayer::new(Count::default());
        let policy = layer.policy.clone();
        let (release, wait) = tokio::sync::watch::channel(false);
        let inner = tower::service_fn(move |_req: GwRequest| {
            let mut wait = wait.clone();
            async move {
                let _ = wait.wait_for(|go| *go).await;
                Ok::<_, Infallible>(
                    crate::net::json(http::StatusCode::OK, String::from("{}"))
                        .map(http_body_util::Either::Left),
                )
            }
        });
        let svc = layer.layer(inner);
        let req = |path: &str| crate::gateway::test_request(http::Method::GET, path, &[]);

        // Refused: no hook after on_request, the inner service is never called.
        let resp = svc.clone().oneshot(req("/no")).await.unwrap();
        assert_eq!(resp.status(), http::StatusCode::FORBIDDEN);
        assert_eq!(policy.open.load(Ordering::SeqCst), 0);

        // Dropped half-way: polled once (pending on the upstream), then abandoned.
        for _ in 0..3 {
            let mut fut = Box::pin(svc.clone().oneshot(req("/x")));
            let mut cx = Context::from_waker(std::task::Waker::noop());
            assert!(std::future::Future::poll(fut.as_mut(), &mut cx).is_pending());
            assert_eq!(policy.open.load(Ordering::SeqCst), 1);
            drop(fut);
        }
        assert_eq!(policy.dropped.load(Ordering::SeqCst), 3);
        assert_eq!(policy.open.load(Ordering::SeqCst), 0);

        // Answered: on_response only, and its header is on the response.
        release.send(true).unwrap();
        let resp = svc.oneshot(req("/x")).await.unwrap();
        assert_eq!(resp.headers()["x-seen"], "1");
        assert_eq!(policy.answered.load(Ordering::SeqCst), 1);
        assert_eq!(policy.dropped.load(Ordering::SeqCst), 3);
        assert_eq!(policy.open.load(Ordering::SeqCst), 0);
    }

    /// Decides later: waits for `go`, then passes (counting) or refuses `/no`.
    struct Later {
        go: tokio::sync::watch::Receiver<bool>,
        count: Arc<Count>,
    }

    impl Policy for Later {
        type State = ();
        fn on_request(&self, req: &mut GwRequest) -> Decision<()> {
            let (mut go, count) = (self.go.clone(), self.count.clone());
            let refuse = req.parts.uri.path().starts_with("/no");
            Decision::Later(Box::pin(async move {
                let _ = go.wait_for(|go| *go).await;
                if refuse {
                    return Err(Box::new(
                        crate::net::json(http::StatusCode::TOO_MANY_REQUESTS, String::from("{}"))
                            .map(http_body_util::Either::Left),
                    ));
                }
                count.open.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }))
        }
        fn on_response(&self, (): (), resp: &mut GwResponse) {
            self.count.on_response((), resp);
        }
        fn on_drop(&self, (): ()) {
            self.count.on_drop(());
        }
    }

    #[tokio::test]
    async fn an_awaited_decision_calls_the_inner_service_only_once_it_passes() {
        let (go, wait) = tokio::sync::watch::channel(false);
        let count = Arc::new(Count::default());
        let called = Arc::new(AtomicI64::new(0));
        let seen = called.clone();
        let inner = tower::service_fn(move |_req: GwRequest| {
            seen.fetch_add(1, Ordering::SeqCst);
            async {
                Ok::<_, Infallible>(
                    crate::net::json(http::StatusCode::OK, String::from("{}"))
                        .map(http_body_util::Either::Left),
                )
            }
        });
        let layer = PolicyLayer::new(Later {
            go: wait,
            count: count.clone(),
        });
        let svc = layer.layer(inner);
        let req = |path: &str| crate::gateway::test_request(http::Method::GET, path, &[]);

        // Dropped while the decision waits: nothing was taken, no hook, no inner call.
        let mut fut = Box::pin(svc.clone().oneshot(req("/x")));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(std::future::Future::poll(fut.as_mut(), &mut cx).is_pending());
        drop(fut);
        assert_eq!(called.load(Ordering::SeqCst), 0);
        assert_eq!(count.dropped.load(Ordering::SeqCst), 0);

        go.send(true).unwrap();
        // Refused by the awaited decision: answered without the inner service.
        let resp = svc.clone().oneshot(req("/no")).await.unwrap();
        assert_eq!(resp.status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(called.load(Ordering::SeqCst), 0);
        // Passed: the inner service, then on_response.
        let resp = svc.oneshot(req("/x")).await.unwrap();
        assert_eq!(resp.headers()["x-seen"], "1");
        assert_eq!(called.load(Ordering::SeqCst), 1);
        assert_eq!(count.answered.load(Ordering::SeqCst), 1);
        assert_eq!(count.open.load(Ordering::SeqCst), 0);
    }
}
