//! The mocks' admin endpoint (one for every service and instance):
//!
//! - `GET /healthz` — liveness.
//! - `GET /admin/behavior` — the behaviour in force: `{"default": {...}, "overrides": {"users": {...}}}`.
//! - `POST /admin/behavior` — change the default for every service; `POST /admin/behavior/users`
//!   changes one service. The body names only what changes, e.g. `{"latency": "exp:2ms"}`,
//!   `{"error_rate": 0.5}`, `{"stall": "200ms/5s"}`; `"none"` clears a latency or stall.
//! - `DELETE /admin/behavior[/users]` — back to no override (or, for all, to no behaviour).
//! - `GET /admin/stats` — requests received per listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};

use super::Instance;
use super::behavior::{BehaviorPatch, Behaviors, Service};
use crate::net::{Body, json as json_response, json_error};

const MAX_ADMIN_BODY: usize = 64 * 1024;

/// What the admin endpoint reads and changes.
#[derive(Debug)]
pub struct AdminState {
    /// The live behaviour table.
    pub behaviors: Arc<Behaviors>,
    /// Every mock listener, for `/admin/stats`.
    pub instances: Vec<(SocketAddr, Arc<Instance>)>,
}

fn behavior_table(behaviors: &Behaviors) -> Value {
    let overrides: Map<String, Value> = behaviors
        .overrides()
        .into_iter()
        .map(|(s, b)| (s.name().to_string(), json!(b.to_patch())))
        .collect();
    json!({ "default": behaviors.default_behavior().to_patch(), "overrides": overrides })
}

fn bad_request(message: String) -> Response<Body> {
    json_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &message)
}

/// Answers one admin request.
pub async fn handle(state: Arc<AdminState>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if path == "/healthz" {
        return json_response(StatusCode::OK, r#"{"status":"ok"}"#);
    }
    if path == "/admin/stats" && method == Method::GET {
        return stats(&state);
    }
    let Some(rest) = path.strip_prefix("/admin/behavior") else {
        return json_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("no admin route for {path}"),
        );
    };
    let service = match rest.trim_start_matches('/') {
        "" => None,
        name => match name.parse::<Service>() {
            Ok(s) => Some(s),
            Err(e) => return json_error(StatusCode::NOT_FOUND, "NOT_FOUND", &e.to_string()),
        },
    };
    if method != Method::GET
        && let Some(refused) = refusal(&req)
    {
        return refused;
    }
    match method {
        Method::GET => {}
        Method::POST => {
            if let Err(resp) = change(&state, service, req.into_body()).await {
                return resp;
            }
        }
        Method::DELETE => state.behaviors.reset(service),
        _ => {
            let mut resp = json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNIMPLEMENTED",
                &format!("{method} is not allowed on {path}; allowed: GET, POST, DELETE"),
            );
            resp.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, POST, DELETE"),
            );
            return resp;
        }
    }
    json_response(StatusCode::OK, behavior_table(&state.behaviors).to_string())
}

/// Why a change is refused, if it is: it must come as JSON and not from another origin
/// ([`crate::net::cross_origin_refusal`]).
fn refusal(req: &Request<Incoming>) -> Option<Response<Body>> {
    let headers = req.headers();
    if let Some(refused) = crate::net::cross_origin_refusal(headers) {
        return Some(refused);
    }
    let json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    (req.method() == Method::POST && !json).then(|| {
        json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "INVALID_ARGUMENT",
            "send the behaviour as Content-Type: application/json",
        )
    })
}

/// `GET /admin/stats`: requests received per listener.
fn stats(state: &AdminState) -> Response<Body> {
    let listeners: Vec<Value> = state
        .instances
        .iter()
        .map(|(addr, i)| {
            json!({
                "protocol": i.protocol.name(),
                "instance": i.index,
                "addr": addr.to_string(),
                "requests": i.requests.load(Ordering::Relaxed),
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        json!({ "listeners": listeners }).to_string(),
    )
}

/// `POST /admin/behavior[/service]`: applies the JSON patch in `body` (bounded).
async fn change(
    state: &AdminState,
    service: Option<Service>,
    body: Incoming,
) -> Result<(), Response<Body>> {
    let body = match Limited::new(body, MAX_ADMIN_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Err(bad_request(format!("could not read the body: {e}"))),
    };
    let patch: BehaviorPatch = serde_json::from_slice(&body).map_err(|e| {
        bad_request(format!(
            "invalid behavior JSON: {e}; expected e.g. {{\"latency\": \"exp:2ms\", \"error_rate\": 0.1, \"stall\": \"200ms/5s\"}}"
        ))
    })?;
    state
        .behaviors
        .patch(service, &patch)
        .map_err(|e| bad_request(e.to_string()))?;
    tracing::info!(
        service = service.map_or("all", |s| s.name()),
        ?patch,
        "behavior changed"
    );
    Ok(())
}
