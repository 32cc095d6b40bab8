//! The REST mock's WebSocket endpoints, on the same deterministic data:
//!
//! - `/ws/echo`: each text or binary message answered with itself, byte for byte;
//! - `/ws/inventory/{product_id}/watch?updates=N&interval_ms=M`: `WatchStock` as JSON text
//!   messages (proto3 JSON of `Stock`), then a normal close;
//! - `/ws/inventory/sync`: `SyncStock`: each text message a `StockMovement` in JSON, answered
//!   with the product's `Stock` after it.
//!
//! Faults, per connection from the query (all endpoints): `delay_ms=D` before each answer,
//! `drop_every=N` (every Nth message is not answered), `close_after=N` and `close_code=C`
//! (close with C, default 1000, after N answers). The inventory endpoints also apply the
//! behaviour table's `inventory` latency and errors per message (an injected error closes
//! with 1011). An error of the data (an unknown product) is written as one last text message
//! in the mocks' error shape, then the connection closes with 1008.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::SinkExt;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::Instance;
use super::behavior::Service;
use super::data::{self, DataError};
use crate::net::{Body, json_error};
use crate::proto::{self, v1};
use crate::ws::{self, Message, close};

/// The mock's WebSocket endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Echo,
    Watch(String),
    Sync,
}

fn route(path: &str) -> Option<Endpoint> {
    let rest = path.strip_prefix("/ws/")?;
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        ["echo"] => Some(Endpoint::Echo),
        ["inventory", "sync"] => Some(Endpoint::Sync),
        ["inventory", id, "watch"] => Some(Endpoint::Watch(id.to_string())),
        _ => None,
    }
}

/// The per-connection fault knobs from the query.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Knobs {
    delay: Duration,
    drop_every: u64,
    close_after: Option<u64>,
    close_code: u16,
    updates: u32,
    interval: Duration,
}

fn knobs(query: Option<&str>) -> Result<Knobs, String> {
    let mut k = Knobs {
        close_code: close::NORMAL,
        updates: 10,
        ..Knobs::default()
    };
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let n = value
            .parse::<u64>()
            .map_err(|_| format!("{name}={value:?}: expected a whole number"))?;
        match name.as_ref() {
            "delay_ms" => k.delay = Duration::from_millis(n.min(60_000)),
            "drop_every" => k.drop_every = n,
            "close_after" => k.close_after = Some(n),
            "close_code" => {
                k.close_code = u16::try_from(n)
                    .ok()
                    .filter(|c| (1000..5000).contains(c) && ![1004, 1005, 1006, 1015].contains(c))
                    .ok_or_else(|| format!("close_code={n}: not a code a server may send"))?
            }
            "updates" => {
                k.updates = u32::try_from(n)
                    .ok()
                    .filter(|u| *u <= super::grpc::MAX_WATCH_UPDATES)
                    .ok_or_else(|| {
                        format!(
                            "updates {n} is more than {}",
                            super::grpc::MAX_WATCH_UPDATES
                        )
                    })?
            }
            "interval_ms" => k.interval = Duration::from_millis(n.min(60_000)),
            other => {
                return Err(format!(
                    "unknown query parameter {other:?}; expected one of: delay_ms, drop_every, \
                     close_after, close_code, updates, interval_ms"
                ));
            }
        }
    }
    Ok(k)
}

/// Whether `req` is for a WebSocket endpoint of the mock (`/ws/...`).
pub(super) fn is_ws_path(path: &str) -> bool {
    path.starts_with("/ws/")
}

/// Answers a request to `/ws/...`: 101 and the endpoint on its own task, or an HTTP error.
pub(super) fn handle(instance: Arc<Instance>, mut req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let Some(endpoint) = route(path) else {
        return json_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("no route for {path}"),
        );
    };
    let knobs = match knobs(req.uri().query()) {
        Ok(k) => k,
        Err(m) => return json_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &m),
    };
    let (head, ()) = {
        let mut r = http::Request::new(());
        *r.method_mut() = req.method().clone();
        *r.headers_mut() = req.headers().clone();
        if let Some(p) = req.extensions().get::<hyper::ext::Protocol>() {
            r.extensions_mut().insert(p.clone());
        }
        r.into_parts()
    };
    let parts = match ws::switch(&head) {
        Ok(p) => p,
        Err(e) => {
            let mut resp = json_error(
                StatusCode::UPGRADE_REQUIRED,
                "FAILED_PRECONDITION",
                &e.to_string(),
            );
            resp.headers_mut().insert(
                http::header::UPGRADE,
                http::HeaderValue::from_static("websocket"),
            );
            return resp;
        }
    };
    if let Endpoint::Watch(id) = &endpoint
        && let Err(e) = id.parse::<i64>()
    {
        let m = format!("invalid value {id:?} for product_id: {e}");
        return json_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &m);
    }
    instance.requests.fetch_add(1, Ordering::Relaxed);
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(mut socket) = ws::server(on, &ws::Limits::default()).await else {
            return;
        };
        let (code, reason) = match endpoint {
            Endpoint::Echo => echo(&mut socket, knobs).await,
            Endpoint::Watch(id) => watch(&instance, &mut socket, &id, knobs).await,
            Endpoint::Sync => sync(&instance, &mut socket, knobs).await,
        };
        let _ = socket.send(ws::close_message(code, &reason)).await;
        // The peer's close (or its going away) ends the connection.
        let _ = tokio::time::timeout(Duration::from_secs(5), ws::next_message(&mut socket)).await;
    });
    Response::from_parts(parts, Body::default())
}

/// How an endpoint's loop ended: the close code and reason to send.
type Ending = (u16, String);

/// Sends `answer` unless the knobs drop it; `Some` when the knobs end the connection.
async fn answer(
    socket: &mut ws::ServerSocket,
    knobs: Knobs,
    seq: &mut u64,
    answered: &mut u64,
    message: Message,
) -> Option<Ending> {
    *seq += 1;
    if knobs.drop_every > 0 && (*seq).is_multiple_of(knobs.drop_every) {
        return None;
    }
    if !knobs.delay.is_zero() {
        tokio::time::sleep(knobs.delay).await;
    }
    if let Err(e) = socket.send(message).await {
        return Some((ws::close_code_of(&e), e.to_string()));
    }
    *answered += 1;
    match knobs.close_after {
        Some(n) if *answered >= n => Some((knobs.close_code, "close_after".into())),
        _ => None,
    }
}

fn read_error(e: &tokio_tungstenite::tungstenite::Error) -> Ending {
    (ws::close_code_of(e), e.to_string())
}

async fn echo(socket: &mut ws::ServerSocket, knobs: Knobs) -> Ending {
    let (mut seq, mut answered) = (0, 0);
    if knobs.close_after == Some(0) {
        return (knobs.close_code, "close_after".into());
    }
    loop {
        match ws::next_message(socket).await {
            Ok(Some(m)) => {
                if let Some(end) = answer(socket, knobs, &mut seq, &mut answered, m).await {
                    return end;
                }
            }
            Ok(None) => return (close::NORMAL, String::new()),
            Err(e) => return read_error(&e),
        }
    }
}

/// A data error as the last text message before the close.
async fn data_error(socket: &mut ws::ServerSocket, err: DataError) -> Ending {
    let (code, m) = match err {
        DataError::NotFound(m) => ("NOT_FOUND", m),
        DataError::InvalidArgument(m) => ("INVALID_ARGUMENT", m),
    };
    let body = serde_json::json!({ "error": { "code": code, "message": m } }).to_string();
    let _ = socket.send(Message::text(body)).await;
    (close::POLICY, code.to_string())
}

async fn watch(
    instance: &Instance,
    socket: &mut ws::ServerSocket,
    id: &str,
    knobs: Knobs,
) -> Ending {
    let first = match id.parse::<i64>().map(data::stock) {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return data_error(socket, e).await,
        Err(e) => return (close::POLICY, e.to_string()),
    };
    let (mut seq, mut answered) = (0, 0);
    for n in 0..knobs.updates {
        if n > 0 && !knobs.interval.is_zero() {
            tokio::time::sleep(knobs.interval).await;
        }
        if instance.behaviors.apply(Service::Inventory).await.is_err() {
            return (close::INTERNAL, "inventory mock: injected failure".into());
        }
        let text = json_text(&data::stock_after(&first, n));
        if let Some(end) = answer(socket, knobs, &mut seq, &mut answered, text).await {
            return end;
        }
    }
    (close::NORMAL, String::new())
}

async fn sync(instance: &Instance, socket: &mut ws::ServerSocket, knobs: Knobs) -> Ending {
    let (mut seq, mut answered) = (0, 0);
    loop {
        let m = match ws::next_message(socket).await {
            Ok(Some(m)) => m,
            Ok(None) => return (close::NORMAL, String::new()),
            Err(e) => return read_error(&e),
        };
        let Message::Text(text) = m else {
            return (
                close::INVALID_DATA,
                "expected a StockMovement as JSON text".into(),
            );
        };
        let movement: v1::StockMovement = match proto::from_json(text.as_bytes()) {
            Ok(m) => m,
            Err(e) => return data_error(socket, DataError::InvalidArgument(e)).await,
        };
        if instance.behaviors.apply(Service::Inventory).await.is_err() {
            return (close::INTERNAL, "inventory mock: injected failure".into());
        }
        let mut stock = match data::stock(movement.product_id) {
            Ok(s) => s,
            Err(e) => return data_error(socket, e).await,
        };
        stock.total_available = stock.total_available.saturating_add(movement.delta);
        if let Some(end) = answer(socket, knobs, &mut seq, &mut answered, json_text(&stock)).await {
            return end;
        }
    }
}

fn json_text(stock: &v1::Stock) -> Message {
    let json = proto::to_json(stock);
    Message::text(String::from_utf8(json).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_knobs() {
        assert_eq!(route("/ws/echo"), Some(Endpoint::Echo));
        assert_eq!(route("/ws/inventory/sync"), Some(Endpoint::Sync));
        assert_eq!(
            route("/ws/inventory/7/watch"),
            Some(Endpoint::Watch("7".into()))
        );
        assert_eq!(route("/ws/nope"), None);
        let k = knobs(Some(
            "delay_ms=5&drop_every=3&close_after=2&close_code=4000",
        ))
        .unwrap();
        assert_eq!(k.delay, Duration::from_millis(5));
        assert_eq!(
            (k.drop_every, k.close_after, k.close_code),
            (3, Some(2), 4000)
        );
        assert!(knobs(Some("close_code=1005")).is_err());
        assert!(knobs(Some("bogus=1")).is_err());
        assert!(knobs(Some("updates=99999999")).is_err());
    }
}
