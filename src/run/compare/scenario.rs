//! compare's scenarios: what each side loads (direct and through the gateway, or bare and with
//! middleware), and the request each sends.

use std::time::SystemTime;

use bytes::Bytes;

use super::CompareError;
use crate::load::grpc;
use crate::load::target::{Protocol, RequestTemplate};

/// One side of a scenario: what to load.
#[derive(Debug, Clone)]
pub(crate) struct Side {
    pub(crate) label: &'static str,
    pub(crate) protocol: Protocol,
    pub(crate) url: String,
    pub(crate) grpc_method: Option<(&'static str, &'static str)>,
    /// Whether the requests pass through the gateway (its CPU is then counted).
    pub(crate) through_gateway: bool,
    /// Extra request headers (a bearer token).
    pub(crate) headers: Vec<(String, String)>,
    /// When set: these URLs all go out for each request, in parallel, timed as one.
    pub(crate) all_of: Vec<String>,
    /// TLS options of an https:// side (`compare --tls`).
    pub(crate) tls: Option<crate::net::tls::ClientOptions>,
    /// A WebSocket side's message (each one a request, timed to its answer).
    pub(crate) message: Option<&'static str>,
    /// Processes whose CPU this side counts, where they are not the stack's own.
    pub(crate) pids: Pids,
}

/// Processes whose CPU a side counts as the gateway's and the backends' (with their children),
/// instead of the stack's own: a peer gateway compare started, or processes the user named
/// (`--gateway-pid`, `--direct-pid`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pids {
    pub(crate) gateway: Option<u32>,
    pub(crate) backends: Option<u32>,
}

impl Pids {
    /// Each of these, or else the other's.
    pub(crate) fn or(self, other: Pids) -> Pids {
        Pids {
            gateway: self.gateway.or(other.gateway),
            backends: self.backends.or(other.backends),
        }
    }
}

impl Side {
    pub(crate) fn http(label: &'static str, url: String, through_gateway: bool) -> Side {
        Side {
            label,
            protocol: Protocol::Http1,
            url,
            grpc_method: None,
            through_gateway,
            headers: Vec::new(),
            all_of: Vec::new(),
            tls: None,
            message: None,
            pids: Pids::default(),
        }
    }

    /// A WebSocket side: `message` on connections to `url`.
    pub(crate) fn ws(
        label: &'static str,
        url: String,
        message: &'static str,
        through_gateway: bool,
    ) -> Side {
        Side {
            protocol: Protocol::WebSocket,
            message: Some(message),
            ..Side::http(label, url, through_gateway)
        }
    }
}

/// The echo scenario's message: an id to match answers by, and a payload of a typical event.
const ECHO_MESSAGE: &str =
    r#"{"id":{seq},"event":"price","symbol":"GWB","bid":101.25,"ask":101.5}"#;
/// The stock-sync scenario's message (a StockMovement); answers come in order.
const SYNC_MESSAGE: &str = r#"{"productId":"{rand:1-1000}","warehouseId":"wh-fra-1","delta":1}"#;

/// A pair of sides.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    pub(crate) description: &'static str,
    pub(crate) direct: Side,
    pub(crate) gateway: Side,
}

/// The REST proxy scenario through a peer gateway listening on `addr` (every path proxied to
/// the REST mock at `rest`), its CPU read from process `pid` and its children.
pub(crate) fn peer_rest(
    gateway: crate::run::peers::Gateway,
    rest: &str,
    addr: &str,
    pid: u32,
) -> Scenario {
    use crate::run::peers::Gateway;
    let (name, description) = match gateway {
        Gateway::Nginx => (
            "rest-nginx",
            "REST mock GET /api/users/{id}: direct vs nginx proxy_pass (upstream keep-alive)",
        ),
        Gateway::Haproxy => (
            "rest-haproxy",
            "REST mock GET /api/users/{id}: direct vs HAProxy (HTTP mode, connections reused)",
        ),
        Gateway::Caddy => (
            "rest-caddy",
            "REST mock GET /api/users/{id}: direct vs Caddy reverse_proxy",
        ),
        Gateway::Traefik => (
            "rest-traefik",
            "REST mock GET /api/users/{id}: direct vs Traefik (file provider, one router)",
        ),
        Gateway::Gwbench => (
            "rest",
            "REST mock GET /api/users/{id}: direct vs the gateway's proxy route (pure proxy cost)",
        ),
    };
    let mut through = Side::http(
        gateway.name(),
        format!("http://{addr}/api/users/{{rand:1-1000}}"),
        true,
    );
    through.pids.gateway = Some(pid);
    Scenario {
        name,
        description,
        direct: Side::http(
            "direct",
            format!("http://{rest}/api/users/{{rand:1-1000}}"),
            false,
        ),
        gateway: through,
    }
}

/// gRPC `GetUser` direct vs passed through a peer gateway's h2c listener at `addr` to the
/// gRPC mock at `grpc` (pass-through: gRPC in and out; ours transcodes in the `grpc`
/// scenario instead), its CPU read from process `pid` and its children.
pub(crate) fn peer_grpc(
    gateway: crate::run::peers::Gateway,
    grpc: &str,
    addr: &str,
    pid: u32,
) -> Scenario {
    use crate::run::peers::Gateway;
    let (name, description) = match gateway {
        Gateway::Nginx => (
            "grpc-nginx",
            "gRPC GetUser direct vs through nginx grpc_pass (gRPC pass-through over h2c)",
        ),
        Gateway::Haproxy => (
            "grpc-haproxy",
            "gRPC GetUser direct vs through HAProxy (HTTP/2 both sides, gRPC pass-through)",
        ),
        Gateway::Caddy => (
            "grpc-caddy",
            "gRPC GetUser direct vs through Caddy reverse_proxy over h2c (gRPC pass-through)",
        ),
        Gateway::Traefik => (
            "grpc-traefik",
            "gRPC GetUser direct vs through Traefik to an h2c server (gRPC pass-through)",
        ),
        Gateway::Gwbench => ("grpc", "gRPC GetUser direct vs through the gateway"),
    };
    let side = |label: &'static str, host: &str, through: bool| Side {
        protocol: Protocol::Grpc,
        grpc_method: Some(("gwbench.v1.UserService/GetUser", r#"{"id": 42}"#)),
        ..Side::http(label, format!("http://{host}"), through)
    };
    let mut through = side(gateway.name(), addr, true);
    through.pids.gateway = Some(pid);
    Scenario {
        name,
        description,
        direct: side("direct", grpc, false),
        gateway: through,
    }
}

pub(crate) const KNOWN: &[&str] = &["rest", "grpc", "full", "dashboard", "ws", "ws-grpc"];

/// A token for the embedded config's dev key, valid for the whole run.
pub(crate) fn dev_token() -> Result<String, CompareError> {
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let auth = crate::gateway::config::AuthConfig::default();
    let claims = serde_json::json!({
        "sub": "gwbench-compare", "iss": auth.issuer, "aud": auth.audience, "iat": now,
        "exp": now + 24 * 3600
    });
    crate::gateway::middleware::auth::mint(
        "HS256",
        crate::gateway::config::dev_secret().as_bytes(),
        Some("dev"),
        &claims,
    )
    .map_err(CompareError)
}

pub(crate) fn scenarios(
    names: &[String],
    rest: &str,
    grpc: &str,
    gw: &str,
) -> Result<Vec<Scenario>, CompareError> {
    let mut out = Vec::new();
    for name in names {
        out.push(match name.as_str() {
            "rest" => Scenario {
                name: "rest",
                description: "REST mock GET /api/users/{id}: direct vs the gateway's proxy route (pure proxy cost)",
                direct: Side::http("direct", format!("http://{rest}/api/users/{{rand:1-1000}}"), false),
                gateway: Side::http("gateway", format!("http://{gw}/rest/api/users/{{rand:1-1000}}"), true),
            },
            "grpc" => Scenario {
                name: "grpc",
                description: "gRPC GetUser direct vs REST GET /api/users/42 transcoded by the gateway (translation cost)",
                direct: Side {
                    protocol: Protocol::Grpc,
                    grpc_method: Some(("gwbench.v1.UserService/GetUser", r#"{"id": 42}"#)),
                    ..Side::http("direct", format!("http://{grpc}"), false)
                },
                gateway: Side::http("gateway", format!("http://{gw}/api/users/42"), true),
            },
            "full" => Scenario {
                name: "full",
                description: "REST GET /api/users/42 through the gateway: the bare route (\"direct\" side) vs /secure with \
                              JWT auth + rate limit (not triggering) + breaker (middleware cost)",
                direct: Side::http("bare", format!("http://{gw}/api/users/42"), true),
                gateway: Side {
                    headers: vec![("authorization".into(), format!("Bearer {}", dev_token()?))],
                    ..Side::http("middleware", format!("http://{gw}/secure/api/users/42"), true)
                },
            },
            "dashboard" => Scenario {
                name: "dashboard",
                description: "the four calls a client makes in parallel to the REST mock (user, orders, search, stock) \
                              vs the gateway's /api/dashboard aggregation of the same four over gRPC",
                direct: Side {
                    all_of: vec![
                        format!("http://{rest}/api/users/42"),
                        format!("http://{rest}/api/orders?user_id=42&page_size=5"),
                        format!("http://{rest}/api/products/search?q=kettle&limit=3"),
                        // The first product the search finds for "kettle" (what the gateway's
                        // dependent stock call asks for).
                        format!("http://{rest}/api/inventory/14"),
                    ],
                    ..Side::http("direct", format!("http://{rest}/api/users/42"), false)
                },
                gateway: Side::http("gateway", format!("http://{gw}/api/dashboard?user_id=42"), true),
            },
            "ws" => Scenario {
                name: "ws",
                description: "WebSocket echo of the REST mock (/ws/echo), one message per request: direct vs the \
                              gateway's /rest proxy route relaying the upgraded connection (WebSocket proxy cost)",
                direct: Side::ws("direct", format!("ws://{rest}/ws/echo"), ECHO_MESSAGE, false),
                gateway: Side::ws("gateway", format!("ws://{gw}/rest/ws/echo"), ECHO_MESSAGE, true),
            },
            "ws-grpc" => Scenario {
                name: "ws-grpc",
                description: "SyncStock, one movement per message: the REST mock's own WebSocket twin (/ws/inventory/sync, \
                              the same handler logic) vs the gateway translating WebSocket to the gRPC bidi stream on the \
                              gRPC mock (WebSocket-to-gRPC translation cost)",
                direct: Side::ws("direct", format!("ws://{rest}/ws/inventory/sync"), SYNC_MESSAGE, false),
                gateway: Side::ws("gateway", format!("ws://{gw}/api/inventory/sync"), SYNC_MESSAGE, true),
            },
            other => {
                return Err(CompareError(format!("unknown scenario {other:?}; expected some of {}", KNOWN.join(", "))));
            }
        });
    }
    Ok(out)
}

pub(crate) fn template(side: &Side) -> Result<RequestTemplate, crate::load::LoadError> {
    let template = plain_template(side)?;
    match &side.tls {
        Some(opts) => template.with_tls(side.protocol, opts),
        None => Ok(template),
    }
}

/// `compare --tls`: every side that goes to the gateway at `gw` goes over https, trusting
/// `opts`' CA.
pub(crate) fn over_tls(list: &mut [Scenario], gw: &str, opts: &crate::net::tls::ClientOptions) {
    let plain = format!("http://{gw}");
    for sc in list {
        for side in [&mut sc.direct, &mut sc.gateway] {
            if side.url.starts_with(&plain) {
                side.url = side.url.replacen("http://", "https://", 1);
                side.tls = Some(opts.clone());
            }
        }
    }
}

pub(crate) fn plain_template(side: &Side) -> Result<RequestTemplate, crate::load::LoadError> {
    match side.grpc_method {
        Some((method, data)) => {
            let call = grpc::prepare(crate::proto::descriptor_pool(), method, data)?;
            let url = format!("{}{}", side.url, call.path);
            RequestTemplate::new(
                Protocol::Grpc,
                &[url],
                http::Method::POST,
                &side.headers,
                call.body,
            )
        }
        None if !side.all_of.is_empty() => RequestTemplate::new(
            side.protocol,
            &side.all_of,
            http::Method::GET,
            &side.headers,
            Bytes::new(),
        )?
        .with_group(),
        None => {
            let urls = std::slice::from_ref(&side.url);
            RequestTemplate::new(
                side.protocol,
                urls,
                http::Method::GET,
                &side.headers,
                side.message
                    .map_or_else(Bytes::new, |m| Bytes::from_static(m.as_bytes())),
            )
        }
    }
}
