//! The middleware stack of a mount, assembled in one place in request order (one comment per
//! layer), around the upstream call. Stack 0 (no middleware) serves the proxy routes.

use std::convert::Infallible;
use std::sync::Arc;

use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use super::{Core, GwRequest, RouteService};
use crate::config::Mount;

/// Builds the stack for `mount` around the upstream call of `core`.
pub fn build(_mount: &Mount, core: Arc<Core>) -> RouteService {
    let upstream = tower::service_fn(move |req: GwRequest| {
        let core = core.clone();
        async move { Ok::<_, Infallible>(core.call(req).await) }
    });
    let stack = ServiceBuilder::new()
        // the upstream call: transcode or proxy, within the request's deadline
        .service(upstream);
    BoxCloneSyncService::new(stack)
}
