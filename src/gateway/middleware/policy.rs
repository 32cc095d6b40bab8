//! One middleware shape: a [`Policy`] decides on a request, looks at its response, and is told
//! when the request was dropped before the response came (the client hung up). [`Apply`] runs
//! any policy around an inner service and owns that bookkeeping with a drop guard, so no policy
//! can forget what it counted on the way in (a breaker's probe slot, a request in flight).
//! The same idea as tower's `filter`, tower-http's `ValidateRequest` and linkerd's
//! `filters::Apply`; the cache, which answers by itself, stays its own service.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::gateway::{GwRequest, GwResponse};

/// The future every middleware service returns: errors are already responses.
pub type MwFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<GwResponse, Infallible>> + Send>>;

/// A request/response policy run by [`Apply`].
pub trait Policy: Send + Sync + 'static {
    /// What the policy carries from the request to its outcome (a probe flag, a start time).
    type State: Send + 'static;

    /// Decides on a request (and may change it): `Ok` passes it on with the state to keep,
    /// `Err` answers it here without calling the inner service (boxed: a refusal is the rare
    /// path, and a response is large).
    fn on_request(&self, req: &mut GwRequest) -> Result<Self::State, Box<GwResponse>>;

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
        let state = match self.policy.on_request(&mut req) {
            Ok(state) => state,
            Err(resp) => return Box::pin(std::future::ready(Ok(*resp))),
        };
        let guard = Pending {
            policy: self.policy.clone(),
            state: Some(state),
        };
        // Call the clone that poll_ready made ready, leaving a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
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
        fn on_request(&self, req: &mut GwRequest) -> Result<(), Box<GwResponse>> {
            if req.parts.uri.path().starts_with("/no") {
                return Err(Box::new(
                    crate::net::json(http::StatusCode::FORBIDDEN, String::from("{}"))
                        .map(http_body_util::Either::Left),
                ));
            }
            self.open.fetch_add(1, Ordering::SeqCst);
            Ok(())
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
}
