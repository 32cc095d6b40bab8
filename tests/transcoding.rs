//! The transcoding conformance suite: protos written for these tests (not gwbench's own
//! services) behind hand-written gRPC upstreams that echo, stream, fail or never answer on
//! purpose. It covers the path grammar (verbs, multi-segment variables, `**` and what follows
//! it, precedence) and its decoding, query parameters and bodies with well-known types,
//! NaN/Infinity, metadata both ways, HttpBody, server streaming, descriptors from `--proto` and
//! from server reflection (against the mocks), and "one bad rule is skipped, the rest serve".
//! The error format with typed details is in `tests/hostile.rs` (its upstream sends them).
//!
//! Where the references differ, the test says which one we follow. Streams: grpc-gateway writes
//! newline-delimited `{"result": ...}` lines and an error as a last `{"error": ...}` line (our
//! default, `stream_format = "ndjson"`); Envoy's transcoder writes one JSON array
//! (`stream_format = "array"`), where we put a mid-stream error as the array's last element
//! (Envoy resets the stream instead).

mod common;

use std::sync::Arc;

use bytes::Bytes;
use std::net::SocketAddr;

use common::{Seen, compile_set, gateway_config, get, headers, post, send, url};
use gateway_config as config;
use gwbench::gateway::config::{ErrorFormat, GatewayConfig, StreamFormat};
use gwbench::gateway::serve::server::GatewayServer;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};

const STREAM_PROTO: &str = r#"
syntax = "proto3";
package streams.v1;
import "google/api/annotations.proto";
import "google/api/httpbody.proto";
service Streams {
  rpc Say(SayRequest) returns (SayReply) {
    option (google.api.http) = { get: "/v1/say/{name}" };
  }
  rpc Watch(SayRequest) returns (stream SayReply) {
    option (google.api.http) = { get: "/v1/watch/{name}" };
  }
  rpc Download(DownloadRequest) returns (stream google.api.HttpBody) {
    option (google.api.http) = { get: "/v1/download" };
  }
  rpc Upload(stream SayRequest) returns (SayReply) {
    option (google.api.http) = { post: "/v1/upload" body: "*" };
  }
  rpc Chat(stream SayRequest) returns (stream SayReply) {
    option (google.api.http) = { post: "/v1/chat" body: "*" };
  }
}
// The echo upstream answers with the request's bytes: each reply shares its request's
// field numbers.
message SayRequest { string name = 1; int32 times = 2; }
message SayReply { string text = 1; int32 count = 2; }
message DownloadRequest { string content_type = 1; bytes data = 2; }
"#;

fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A gateway on the streams proto in front of `upstream`, as `edit` adjusts it.
async fn gateway(
    tag: &str,
    upstream: std::net::SocketAddr,
    edit: impl FnOnce(&mut GatewayConfig),
) -> (GatewayServer, gwbench::process::TempDir) {
    let (dir, set) = compile_set(tag, "streams/v1/streams.proto", STREAM_PROTO);
    let mut cfg = gateway_config(&[upstream.to_string()], &[dead_addr()]);
    cfg.aggregations.clear();
    cfg.transcode.descriptor_set = Some(set);
    edit(&mut cfg);
    (GatewayServer::start(&cfg).await.unwrap(), dir)
}

fn grpc_head() -> http::HeaderMap {
    headers(&[
        ("content-type", "application/grpc"),
        ("x-served-by", "echo"),
    ])
}

fn ok() -> http::HeaderMap {
    headers(&[("grpc-status", "0")])
}

fn lines(body: &Bytes) -> Vec<serde_json::Value> {
    std::str::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

#[tokio::test]
async fn a_server_stream_is_newline_delimited_json_one_result_per_message() {
    let (up, _) = common::grpc_echo_stream(grpc_head(), 3, None, ok()).await;
    let (gw, _dir) = gateway("stream-ndjson", up, |_| {}).await;
    let r = get(&url(gw.http, "/v1/watch/bob?times=2")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.headers["content-type"], "application/x-ndjson");
    // The upstream's headers come along, as a unary answer's do.
    assert_eq!(r.headers["grpc-metadata-x-served-by"], "echo");
    let one = serde_json::json!({"result": {"text": "bob", "count": 2}});
    assert_eq!(lines(&r.body), vec![one.clone(), one.clone(), one]);
    // A stream that ends with no message is an empty body, still a 200.
    let (up, _) = common::grpc_echo_stream(grpc_head(), 0, None, ok()).await;
    let (gw2, _) = gateway("stream-empty", up, |_| {}).await;
    let r = get(&url(gw2.http, "/v1/watch/bob")).await;
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, 0));
    gw.shutdown().await;
    gw2.shutdown().await;
}

#[tokio::test]
async fn each_message_reaches_the_client_before_the_next_one_is_sent() {
    // The upstream holds its second message until the client has read the first: a gateway
    // that gathered the stream before answering would never deliver it (the test fails on
    // its 10 s guard).
    let gate = Arc::new(tokio::sync::Notify::new());
    let (up, _) = common::grpc_echo_stream(grpc_head(), 2, Some(gate.clone()), ok()).await;
    let (gw, _dir) = gateway("stream-live", up, |_| {}).await;
    let req = http::Request::get(url(gw.http, "/v1/watch/amy"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let run = async {
        let resp = common::client().request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let mut got = Vec::new();
        while !got.ends_with(b"\n") {
            let frame = body.frame().await.unwrap().unwrap();
            got.extend_from_slice(&frame.into_data().unwrap());
        }
        assert_eq!(lines(&got.clone().into()).len(), 1);
        gate.notify_one();
        let rest = body.collect().await.unwrap().to_bytes();
        got.extend_from_slice(&rest);
        assert_eq!(lines(&got.into()).len(), 2);
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), run)
        .await
        .expect("the first message was held back until the stream ended");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_error_mid_stream_is_the_last_element_in_the_configured_shape() {
    let failing = || headers(&[("grpc-status", "13"), ("grpc-message", "disk%20on%20fire")]);
    // grpc-gateway's lines: two results, then the error in the gateway's shape...
    let (up, _) = common::grpc_echo_stream(grpc_head(), 2, None, failing()).await;
    let (gw, _dir) = gateway("stream-error", up, |_| {}).await;
    let r = get(&url(gw.http, "/v1/watch/bob")).await;
    assert_eq!(r.status, StatusCode::OK);
    let got = lines(&r.body);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[1], serde_json::json!({"result": {"text": "bob"}}));
    assert_eq!(got[2]["error"]["code"], "INTERNAL");
    assert_eq!(got[2]["error"]["message"], "disk on fire");
    // ...or as google.rpc.Status, as grpc-gateway writes it.
    let (gw2, _) = gateway("stream-error-google", up, |c| {
        c.transcode.error_format = ErrorFormat::Google;
    })
    .await;
    let got = lines(&get(&url(gw2.http, "/v1/watch/bob")).await.body);
    assert_eq!(
        got[2],
        serde_json::json!({"error": {"code": 13, "message": "disk on fire", "details": []}})
    );
    // Envoy's array: the messages, the error last, and still valid JSON.
    let (gw3, _) = gateway("stream-error-array", up, |c| {
        c.transcode.stream_format = StreamFormat::Array;
    })
    .await;
    let r = get(&url(gw3.http, "/v1/watch/bob")).await;
    assert_eq!(r.headers["content-type"], "application/json");
    let arr = r.json();
    assert_eq!(arr.as_array().unwrap().len(), 3, "{arr}");
    assert_eq!(arr[0], serde_json::json!({"text": "bob"}));
    assert_eq!(arr[2]["error"]["code"], "INTERNAL");
    for g in [gw, gw2, gw3] {
        g.shutdown().await;
    }
}

#[tokio::test]
async fn an_array_stream_is_one_json_array_even_when_empty() {
    let (up, _) = common::grpc_echo_stream(grpc_head(), 2, None, ok()).await;
    let array = |c: &mut GatewayConfig| c.transcode.stream_format = StreamFormat::Array;
    let (gw, _dir) = gateway("stream-array", up, array).await;
    let r = get(&url(gw.http, "/v1/watch/x?times=1")).await;
    assert_eq!(
        r.json(),
        serde_json::json!([{"text": "x", "count": 1}, {"text": "x", "count": 1}])
    );
    let (up, _) = common::grpc_echo_stream(grpc_head(), 0, None, ok()).await;
    let (gw2, _) = gateway("stream-array-empty", up, array).await;
    assert_eq!(
        get(&url(gw2.http, "/v1/watch/x")).await.json(),
        serde_json::json!([])
    );
    gw.shutdown().await;
    gw2.shutdown().await;
}

#[tokio::test]
async fn a_stream_that_fails_before_its_first_message_is_an_http_error() {
    let not_found = headers(&[("grpc-status", "5"), ("grpc-message", "no%20such%20feed")]);
    let (up, _) = common::grpc_echo_stream(grpc_head(), 0, None, not_found).await;
    let (gw, _dir) = gateway("stream-early-error", up, |_| {}).await;
    let r = get(&url(gw.http, "/v1/watch/bob")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["message"], "no such feed");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stream_that_outlives_the_route_deadline_ends_with_deadline_exceeded() {
    // The gate is never opened: the upstream sends one message and then nothing.
    let gate = Arc::new(tokio::sync::Notify::new());
    let (up, _) = common::grpc_echo_stream(grpc_head(), 2, Some(gate), ok()).await;
    let (gw, _dir) = gateway("stream-deadline", up, |c| {
        c.transcode.timeout =
            gwbench::gateway::config::TextDuration(std::time::Duration::from_millis(300));
    })
    .await;
    let r = get(&url(gw.http, "/v1/watch/bob")).await;
    assert_eq!(r.status, StatusCode::OK);
    let got = lines(&r.body);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1]["error"]["code"], "DEADLINE_EXCEEDED");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stream_of_http_bodies_is_their_raw_bytes_and_a_broken_one_is_aborted() {
    let (up, _) = common::grpc_echo_stream(grpc_head(), 3, None, ok()).await;
    let (gw, _dir) = gateway("stream-httpbody", up, |_| {}).await;
    // "aGk=" is "hi": each of the three messages carries it.
    let r = get(&url(
        gw.http,
        "/v1/download?content_type=text/csv&data=aGk%3D",
    ))
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "text/csv");
    assert_eq!(&r.body[..], b"hihihi");
    // Bytes have no room for an error: the client sees a broken body, not a short whole one.
    let failing = headers(&[("grpc-status", "14")]);
    let (up, _) = common::grpc_echo_stream(grpc_head(), 2, None, failing).await;
    let (gw2, _) = gateway("stream-httpbody-broken", up, |_| {}).await;
    let req = http::Request::get(url(gw2.http, "/v1/download?data=aGk%3D"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    // (When the error comes before hyper flushed the head, the whole answer breaks.)
    if let Ok(resp) = common::client().request(req).await {
        assert!(resp.into_body().collect().await.is_err());
    }
    gw.shutdown().await;
    gw2.shutdown().await;
}

#[tokio::test]
async fn client_streaming_rules_are_served_over_websocket_and_refused_426_over_http() {
    let (up, _) = common::grpc_echo_stream(grpc_head(), 1, None, ok()).await;
    let (gw, _dir) = gateway("stream-ws-only", up, |_| {}).await;
    let routes = get(&url(gw.admin, "/routes")).await.json();
    let skipped = routes["skipped"].as_array().unwrap();
    assert!(skipped.is_empty(), "{routes}");
    // An HTTP request is one message: a client-streaming RPC says where it is served.
    let r = common::post(&url(gw.http, "/v1/upload"), "{}").await;
    assert_eq!(r.status, StatusCode::UPGRADE_REQUIRED, "{:?}", r.body);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("WebSocket"),
        "{:?}",
        r.body
    );
    // The unary and server-streaming rules of the same service serve.
    assert_eq!(get(&url(gw.http, "/v1/say/a")).await.status, StatusCode::OK);
    assert_eq!(
        get(&url(gw.http, "/v1/watch/a")).await.status,
        StatusCode::OK
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_unary_rpc_answered_with_two_messages_is_a_bad_gateway() {
    // A hostile upstream streams where the descriptor says unary.
    let (up, _) = common::grpc_echo_stream(grpc_head(), 2, None, ok()).await;
    let (gw, _dir) = gateway("unary-two", up, |_| {}).await;
    let r = get(&url(gw.http, "/v1/say/a")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{:?}", r.body);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than one message")
    );
    gw.shutdown().await;
}

// ===== descriptors from the running upstream (gRPC server reflection) =====

#[tokio::test]
async fn gateway_reflect_routes_what_the_mocks_describe_over_server_reflection() {
    let backends =
        gwbench::backend::Backends::start(&gwbench::backend::BackendsConfig::ephemeral())
            .await
            .unwrap();
    let grpc = vec![backends.grpc[0].to_string()];
    let rest = vec![backends.rest[0].to_string()];
    let embedded = GatewayServer::start(&gateway_config(&grpc, &rest))
        .await
        .unwrap();
    let mut cfg = gateway_config(&grpc, &rest);
    cfg.transcode.reflect = true;
    let reflected = GatewayServer::start(&cfg).await.unwrap();
    // The same routes as from the embedded descriptor set, and the same answers.
    let routes = async |gw: &GatewayServer| {
        let all = get(&url(gw.admin, "/routes")).await.json();
        let mut routes: Vec<String> = all["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.to_string())
            .collect();
        routes.sort();
        (routes, all["skipped"].clone())
    };
    let (got, want) = (routes(&reflected).await, routes(&embedded).await);
    assert!(got.0.len() > 20, "{got:?}");
    assert_eq!(got, want);
    for path in ["/api/users/7", "/api/products/2", "/api/inventory/3"] {
        let (a, b) = (
            get(&url(embedded.http, path)).await,
            get(&url(reflected.http, path)).await,
        );
        assert_eq!(a.status, StatusCode::OK, "{path}");
        assert_eq!((a.status, a.json()), (b.status, b.json()), "{path}");
    }
    reflected.shutdown().await;
    embedded.shutdown().await;
    backends.shutdown().await;
}

#[tokio::test]
async fn gateway_reflect_fails_at_start_with_a_named_reason_when_the_upstream_cannot_reflect() {
    // A hostile upstream: it answers only once the request stream has ended, which a
    // reflection client never does while it waits for an answer. Bounded by reflect_timeout.
    let (up, _) = common::grpc_echo(grpc_head(), ok()).await;
    let mut cfg = gateway_config(&[up.to_string()], &[dead_addr()]);
    cfg.aggregations.clear();
    cfg.transcode.reflect = true;
    cfg.transcode.reflect_timeout =
        gwbench::gateway::config::TextDuration(std::time::Duration::from_millis(300));
    let err = GatewayServer::start(&cfg).await.unwrap_err().to_string();
    assert!(
        err.contains("transcode.reflect") && err.contains(&up.to_string()),
        "{err}"
    );
    assert!(err.contains("no complete answer within 300ms"), "{err}");
    // Nobody there at all.
    let dead = dead_addr();
    let mut cfg = gateway_config(std::slice::from_ref(&dead), &[dead_addr()]);
    cfg.aggregations.clear();
    cfg.transcode.reflect = true;
    let err = GatewayServer::start(&cfg).await.unwrap_err().to_string();
    assert!(err.contains(&dead) && err.contains("connect"), "{err}");
    // And it is one source of descriptors among alternatives.
    cfg.transcode.descriptor_set = Some("x.pb".into());
    assert!(cfg.validate().unwrap_err().contains("alternatives"));
}

#[tokio::test]
async fn reflection_falls_back_to_v1alpha_when_the_server_has_only_that() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(gwbench::proto::DESCRIPTOR_SET)
        .build_v1alpha()
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(alpha)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            ),
    );
    let pool = gwbench::reflect::fetch(&addr.to_string(), std::time::Duration::from_secs(10))
        .await
        .unwrap();
    let users = pool.get_service_by_name("gwbench.v1.UserService").unwrap();
    // The google.api.http annotations came through as they were encoded.
    let get_user = users.methods().find(|m| m.name() == "GetUser").unwrap();
    assert!(
        format!("{:?}", get_user.options()).contains("/api/users/{id}"),
        "{:?}",
        get_user.options()
    );
    stop.cancel();
    let _ = server.await;
}

// ===== the path grammar: segments after `**` =====

const DEEP_PROTO: &str = r#"
syntax = "proto3";
package deep.v1;
import "google/api/annotations.proto";
service Files {
  rpc Versions(VersionsRequest) returns (VersionsReply) {
    option (google.api.http) = { get: "/v1/{name=files/**}/versions" };
  }
  // Firestore's shape: a variable after `**` (Envoy refuses it; we match from the end).
  rpc Child(ChildRequest) returns (ChildRequest) {
    option (google.api.http) = { get: "/v1/{parent=dirs/**}/{child}" };
  }
}
message VersionsRequest { string name = 1; }
message VersionsReply { string name = 1; }
message ChildRequest { string parent = 1; string child = 2; }
"#;

#[tokio::test]
async fn segments_after_a_deep_wildcard_match_the_end_of_the_path() {
    let (up, _) = common::grpc_echo(grpc_head(), ok()).await;
    let (_dir, set) = compile_set("deep", "deep/v1/deep.proto", DEEP_PROTO);
    let mut cfg = gateway_config(&[up.to_string()], &[dead_addr()]);
    cfg.aggregations.clear();
    cfg.transcode.descriptor_set = Some(set);
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let r = get(&url(gw.http, "/v1/files/a/b%20c/versions")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json(), serde_json::json!({"name": "files/a/b c"}));
    assert_eq!(
        get(&url(gw.http, "/v1/files/a/b/other")).await.status,
        StatusCode::NOT_FOUND
    );
    let r = get(&url(gw.http, "/v1/dirs/x/y/z")).await;
    assert_eq!(
        r.json(),
        serde_json::json!({"parent": "dirs/x/y", "child": "z"})
    );
    gw.shutdown().await;
}

// ===== moved here: the grammar, the JSON mapping, metadata and HttpBody on protos of the tests' own =====

// ===== a descriptor set built in the test =====

const ECHO_PROTO: &str = r#"
syntax = "proto3";
package echo.v1;
import "google/api/annotations.proto";
service Echo {
  rpc Say(SayRequest) returns (SayReply) {
    option (google.api.http) = { get: "/v1/say/{name}" };
  }
}
message SayRequest { string name = 1; int32 times = 2; repeated string tags = 3; }
message SayReply { string text = 1; int32 count = 2; repeated string labels = 3; }
"#;

/// A gateway config in front of a new echo upstream (gRPC; the REST upstream is dead), without
/// the default aggregations (they call gwbench's own services).
async fn echo_config() -> (gwbench::gateway::config::GatewayConfig, Seen) {
    let (upstream, seen) = echo_grpc_server().await;
    let mut cfg = config(&[upstream.to_string()], &[dead_addr()]);
    cfg.aggregations.clear();
    (cfg, seen)
}

/// A gRPC upstream for any unary method that answers with the request's own bytes (SayRequest
/// and SayReply share their field numbers), so the reply shows what the gateway encoded; it
/// keeps the last request's headers, and answers with a header `x-served-by: echo` and a
/// trailer `x-trailer: t` of its own.
async fn echo_grpc_server() -> (SocketAddr, Seen) {
    let head = headers(&[
        ("content-type", "application/grpc"),
        ("x-served-by", "echo"),
    ]);
    common::grpc_echo(head, headers(&[("grpc-status", "0"), ("x-trailer", "t")])).await
}

#[tokio::test]
async fn a_descriptor_set_built_here_is_routed_and_transcoded() {
    let (_dir, set) = compile_set("echo", "echo/v1/echo.proto", ECHO_PROTO);

    let (mut cfg, seen) = echo_config().await;
    cfg.transcode.descriptor_set = Some(set);
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let r = get(&format!(
        "http://{}/v1/say/bob%20smith?times=3&tags=a&tags=b",
        gw.http
    ))
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        r.json(),
        serde_json::json!({"text": "bob smith", "count": 3, "labels": ["a", "b"]})
    );
    // The call carried gRPC's headers, the request id and the route's deadline.
    {
        let h = seen.lock().unwrap();
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["x-request-id"].len(), 32, "{h:?}");
        assert!(h["grpc-timeout"].to_str().unwrap().ends_with('u'), "{h:?}");
    }
    // Through the /secure mount, the verified subject travels as metadata too.
    let token = common::dev_token("alice");
    let req = Request::get(url(gw.http, "/secure/v1/say/bob"))
        .header("authorization", format!("Bearer {token}"))
        .header("x-user-id", "mallory") // a client's own copy is replaced
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = common::client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(seen.lock().unwrap()["x-user-id"], "alice");
    // The gateway's own routes are not there: only what this descriptor set annotates.
    assert_eq!(
        get(&url(gw.http, "/api/users/1")).await.status,
        StatusCode::NOT_FOUND
    );
    gw.shutdown().await;
}

/// Echo plus an RPC whose rule names a field its request does not have: a rule no gateway
/// could serve.
const ECHO_WITH_A_BAD_RULE: &str = r#"
syntax = "proto3";
package echo.v1;
import "google/api/annotations.proto";
service Echo {
  rpc Say(SayRequest) returns (SayReply) {
    option (google.api.http) = { get: "/v1/say/{name}" };
  }
  rpc Broken(SayRequest) returns (SayReply) {
    option (google.api.http) = { get: "/v1/broken/{no_such_field}" };
  }
  rpc Upload(stream SayRequest) returns (SayReply) {
    option (google.api.http) = { post: "/v1/upload" body: "*" };
  }
}
message SayRequest { string name = 1; int32 times = 2; repeated string tags = 3; }
message SayReply { string text = 1; int32 count = 2; repeated string labels = 3; }
"#;

#[tokio::test]
async fn one_rule_that_cannot_be_served_is_skipped_not_fatal_unless_strict() {
    let (_dir, set) = compile_set("badrule", "echo/v1/echo.proto", ECHO_WITH_A_BAD_RULE);

    let (mut cfg, _seen) = echo_config().await;
    cfg.transcode.descriptor_set = Some(set);
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let r = get(&format!("http://{}/v1/say/bob", gw.http)).await;
    assert_eq!(r.status, StatusCode::OK, "the servable rule is served");
    let routes = get(&url(gw.admin, "/routes")).await.json();
    let skipped = routes["skipped"].as_array().unwrap();
    // Once per mount (the default config mounts the RPCs at / and at /secure).
    assert!(!skipped.is_empty(), "{routes}");
    assert_eq!(
        post(&format!("http://{}/v1/upload", gw.http), "{}")
            .await
            .status,
        StatusCode::UPGRADE_REQUIRED,
        "a client-streaming RPC is served over WebSocket, never answered 500 per request"
    );
    for s in skipped {
        assert_eq!(s["rpc"], "echo.v1.Echo.Broken", "{s}");
        assert!(
            s["rule"]
                .as_str()
                .unwrap()
                .contains("/v1/broken/{no_such_field}"),
            "{s}"
        );
        assert!(
            s["reason"].as_str().unwrap().contains("no_such_field"),
            "{s}"
        );
    }
    gw.shutdown().await;

    cfg.transcode.strict = true;
    let err = GatewayServer::start(&cfg).await.unwrap_err().to_string();
    assert!(
        err.contains("echo.v1.Echo.Broken") && err.contains("strict"),
        "{err}"
    );
}

/// Templates beyond `{v}` and a final `{v=**}`: multi-segment variables, custom verbs, and a
/// literal path that overlaps a variable one.
const LIBRARY_PROTO: &str = r#"
syntax = "proto3";
package library.v1;
import "google/api/annotations.proto";
service Library {
  rpc GetBook(Req) returns (Reply) {
    option (google.api.http) = { get: "/v1/{name=publishers/*/books/*}" };
  }
  rpc Featured(Req) returns (Reply) {
    option (google.api.http) = { get: "/v1/publishers/special/books/featured" };
  }
  rpc SearchBooks(Req) returns (Reply) {
    option (google.api.http) = { get: "/v1/books:search" };
  }
  rpc CancelOperation(Req) returns (Reply) {
    option (google.api.http) = { post: "/v1/{name=operations/*}:cancel" body: "*" };
  }
}
message Req { string name = 1; int32 times = 2; repeated string tags = 3; }
message Reply { string text = 1; int32 count = 2; repeated string labels = 3; }
"#;

#[tokio::test]
async fn verbs_and_multi_segment_variables_route_as_grpc_gateway_does() {
    let (_dir, set) = compile_set("library", "library/v1/library.proto", LIBRARY_PROTO);
    let (mut cfg, _seen) = echo_config().await;
    cfg.transcode.descriptor_set = Some(set);
    cfg.transcode.strict = true; // every rule must be served
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let text = |r: &common::Reply| r.json()["text"].as_str().unwrap_or("").to_string();

    // The variable's value is the whole matched text, percent-decoded. (An encoded '/' never
    // gets this far: the intake refuses encoded separators on every path.)
    let r = get(&url(gw.http, "/v1/publishers/123/books/b%201")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(text(&r), "publishers/123/books/b 1");
    // The literal route beats the variable one it overlaps.
    let r = get(&url(gw.http, "/v1/publishers/special/books/featured")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        serde_json::json!({}),
        "the literal route was chosen"
    );
    // Custom verbs.
    let r = get(&url(gw.http, "/v1/books:search?name=dune")).await;
    assert_eq!((r.status, text(&r)), (StatusCode::OK, "dune".to_string()));
    let r = send(
        http::Method::POST,
        &url(gw.http, "/v1/operations/7:cancel"),
        Bytes::from_static(b"{}"),
    )
    .await;
    assert_eq!(
        (r.status, text(&r)),
        (StatusCode::OK, "operations/7".to_string())
    );
    // A verb that is not the route's, and the wrong method, are not matched.
    assert_eq!(
        send(
            http::Method::POST,
            &url(gw.http, "/v1/operations/7:undo"),
            Bytes::from_static(b"{}")
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    let r = get(&url(gw.http, "/v1/operations/7:cancel")).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "POST");
    gw.shutdown().await;
}

/// Request and reply are the same message (the echo upstream answers with the request's
/// bytes): well-known types and bytes in the query, a nested body field, non-finite doubles.
const WKT_PROTO: &str = r#"
syntax = "proto3";
package wkt.v1;
import "google/api/annotations.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
service Things {
  rpc Get(Thing) returns (Thing) {
    option (google.api.http) = { get: "/v2/things/{name}" };
  }
  rpc Put(Thing) returns (Thing) {
    option (google.api.http) = { post: "/v2/nested/{name}" body: "payload.input_value" };
  }
}
message Payload { string input_value = 1; }
message Thing {
  google.protobuf.Timestamp at = 1;
  google.protobuf.Duration wait = 2;
  google.protobuf.Int32Value n = 3;
  google.protobuf.BoolValue flag = 4;
  google.protobuf.FieldMask mask = 5;
  bytes data = 6;
  Payload payload = 7;
  google.protobuf.DoubleValue ratio = 8;
  string name = 9;
  double plain = 10;
}
"#;

#[tokio::test]
async fn well_known_types_in_the_query_nested_body_fields_and_the_path_winning() {
    let (_dir, set) = compile_set("wkt", "wkt/v1/wkt.proto", WKT_PROTO);
    let (mut cfg, _seen) = echo_config().await;
    cfg.transcode.descriptor_set = Some(set);
    cfg.transcode.strict = true;
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let r = get(&url(
        gw.http,
        "/v2/things/x?at=2026-12-02T10:00:00Z&wait=1.5s&n=7&flag=true&mask=a.b,c\
         &data=_-8&name=ignored&ratio=0.25",
    ))
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let j = r.json();
    assert_eq!(j["name"], "x", "the path wins over the query: {j}");
    assert_eq!(j["at"], "2026-12-02T10:00:00Z", "{j}");
    assert!(j["wait"].as_str().unwrap().starts_with("1.5"), "{j}");
    assert_eq!(
        (j["n"].clone(), j["flag"].clone()),
        (serde_json::json!(7), serde_json::json!(true))
    );
    assert_eq!(j["mask"], "a.b,c", "{j}");
    assert_eq!(j["data"], "/+8=", "URL-safe base64 in, standard out: {j}");
    assert_eq!(j["ratio"], 0.25, "{j}");
    // body: "payload.input_value" — the body is that nested field.
    let r = send(
        http::Method::POST,
        &url(gw.http, "/v2/nested/y"),
        Bytes::from_static(br#""hello""#),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["payload"]["inputValue"], "hello", "{}", r.json());
    // Non-finite doubles are strings in proto3 JSON, in wrappers and plain fields alike.
    let r = get(&url(gw.http, "/v2/things/z?ratio=NaN&plain=-Infinity")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["ratio"], "NaN", "{}", r.json());
    assert_eq!(r.json()["plain"], "-Infinity", "{}", r.json());
    gw.shutdown().await;
}

#[tokio::test]
async fn proto_files_are_compiled_at_start_without_protoc() {
    let dir = gwbench::process::TempDir::new("protos").unwrap();
    std::fs::create_dir_all(dir.join("echo/v1")).unwrap();
    let file = dir.join("echo/v1/echo.proto");
    std::fs::write(&file, ECHO_PROTO).unwrap();
    let (mut cfg, _seen) = echo_config().await;
    // google/api/annotations.proto comes bundled: only the user's own directory is given.
    cfg.transcode.protos = vec![file.clone()];
    cfg.transcode.proto_paths = vec![dir.to_path_buf()];
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let r = get(&url(gw.http, "/v1/say/bob")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["text"], "bob");
    gw.shutdown().await;
    // A broken file: the start fails and says which file.
    std::fs::write(&file, "syntax = \"proto3\";\nmessage Oops {").unwrap();
    let err = GatewayServer::start(&cfg).await.unwrap_err().to_string();
    assert!(
        err.contains("transcode.protos") && err.contains("echo.proto"),
        "{err}"
    );
    // Both a descriptor set and protos: refused, both named.
    cfg.transcode.descriptor_set = Some(dir.join("x.pb"));
    let err = GatewayServer::start(&cfg).await.unwrap_err().to_string();
    assert!(
        err.contains("descriptor_set") && err.contains("protos"),
        "{err}"
    );
}

#[tokio::test]
async fn grpc_metadata_crosses_both_ways_under_grpc_gateways_prefix() {
    let (_dir, set) = compile_set("meta", "echo/v1/echo.proto", ECHO_PROTO);
    let (mut cfg, seen) = echo_config().await;
    cfg.transcode.descriptor_set = Some(set);
    // The allow-list: named request headers go up under their own name; others do not.
    cfg.transcode.forward_headers = vec!["accept-language".into()];
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let req = Request::get(url(gw.http, "/v1/say/bob"))
        .header("accept-language", "fr")
        .header("authorization", "Bearer not-for-upstream")
        .header("grpc-metadata-tenant", "acme")
        .header("grpc-metadata-x-request-id", "forged")
        .header("grpc-metadata-grpc-timeout", "1n")
        .header("grpc-metadata-x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-not-metadata", "1")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("tracestate", "vendor=1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = common::client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    {
        let h = seen.lock().unwrap();
        assert_eq!(h["tenant"], "acme", "{h:?}");
        // W3C trace context travels as metadata (as it came: this gateway makes no spans).
        assert_eq!(
            h["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "{h:?}"
        );
        assert_eq!(h["tracestate"], "vendor=1", "{h:?}");
        assert_eq!(
            h["x-request-id"].len(),
            32,
            "the gateway's own id wins: {h:?}"
        );
        assert!(h.get("x-not-metadata").is_none(), "{h:?}");
        assert_eq!(h["accept-language"], "fr", "{h:?}");
        assert!(h.get("authorization").is_none(), "{h:?}");
        // The client's address is appended to what it said, as a proxy route does; the
        // metadata copy a client sends is replaced.
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1", "{h:?}");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1, "{h:?}");
        assert!(
            h["grpc-timeout"].to_str().unwrap().ends_with('u'),
            "protocol names are not taken from clients: {h:?}"
        );
    }
    let h = resp.headers();
    assert_eq!(h["grpc-metadata-x-served-by"], "echo", "{h:?}");
    assert_eq!(h["grpc-metadata-x-trailer"], "t", "trailers too: {h:?}");
    assert!(h.get("grpc-metadata-grpc-status").is_none(), "{h:?}");
    assert!(h.get("grpc-metadata-content-type").is_none(), "{h:?}");
    gw.shutdown().await;
    // Protocol names and the gateway's own are refused at start, named.
    cfg.transcode.forward_headers = vec!["grpc-timeout".into()];
    let err = cfg.validate().unwrap_err();
    assert!(
        err.contains("forward_headers[0]") && err.contains("grpc-timeout"),
        "{err}"
    );
}

/// google.api.HttpBody in and out (the echo upstream answers with the request's bytes, so each
/// reply type shares the request's field numbers).
const FILES_PROTO: &str = r#"
syntax = "proto3";
package files.v1;
import "google/api/annotations.proto";
import "google/api/httpbody.proto";
service Files {
  rpc Download(Req) returns (google.api.HttpBody) {
    option (google.api.http) = { get: "/v1/files/{name}" };
  }
  rpc Upload(google.api.HttpBody) returns (Echoed) {
    option (google.api.http) = { post: "/v1/upload" body: "*" };
  }
  rpc Attach(AttachReq) returns (AttachReq) {
    option (google.api.http) = { post: "/v1/attach/{name}" body: "file" };
  }
}
message Req { string content_type = 1; bytes data = 2; string name = 4; }
message Echoed { string content_type = 1; bytes data = 2; }
message AttachReq { string name = 1; google.api.HttpBody file = 2; }
"#;

#[tokio::test]
async fn http_body_requests_and_responses_are_raw_bytes_with_their_content_type() {
    let dir = gwbench::process::TempDir::new("files").unwrap();
    std::fs::create_dir_all(dir.join("files/v1")).unwrap();
    let file = dir.join("files/v1/files.proto");
    std::fs::write(&file, FILES_PROTO).unwrap();
    let (mut cfg, _seen) = echo_config().await;
    cfg.transcode.strict = true;
    // google/api/httpbody.proto comes bundled with the binary.
    cfg.transcode.protos = vec![file];
    cfg.transcode.proto_paths = vec![dir.to_path_buf()];
    let gw = GatewayServer::start(&cfg).await.unwrap();
    // Out: the HttpBody's bytes are the body, its content_type the Content-Type.
    let r = get(&url(
        gw.http,
        "/v1/files/report?content_type=text/plain&data=aGVsbG8=",
    ))
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(&r.body[..], b"hello");
    assert_eq!(r.headers["content-type"], "text/plain");
    // In, as the whole request: the body is not parsed as JSON.
    let req = Request::post(url(gw.http, "/v1/upload"))
        .header("content-type", "text/csv")
        .body(Full::new(Bytes::from_static(b"a,b")))
        .unwrap();
    let resp = common::client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let j: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(
        j,
        serde_json::json!({"contentType": "text/csv", "data": "YSxi"})
    );
    // In, as the body field, beside a path variable.
    let req = Request::post(url(gw.http, "/v1/attach/x"))
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from_static(b"raw")))
        .unwrap();
    let resp = common::client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let j: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(
        j,
        serde_json::json!({"name": "x", "file": {"contentType": "application/octet-stream", "data": "cmF3"}})
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_server_stream_counts_as_in_flight_until_it_ends() {
    // least_request balances by calls in flight: a long stream must count for its whole life,
    // not only until its head arrived.
    let gate = Arc::new(tokio::sync::Notify::new());
    let (up, _) = common::grpc_echo_stream(grpc_head(), 2, Some(gate.clone()), ok()).await;
    let upstream =
        gwbench::gateway::upstream::pool::Upstream::new(&gwbench::gateway::config::Upstream {
            name: "grpc".into(),
            protocol: gwbench::gateway::config::UpstreamProtocol::Grpc,
            endpoints: vec![up.to_string()],
            lb: gwbench::gateway::config::LbPolicy::LeastRequest,
            connect_timeout: gwbench::gateway::config::TextDuration(
                std::time::Duration::from_secs(1),
            ),
            tls: None,
        })
        .unwrap();
    let path = http::uri::PathAndQuery::from_static("/streams.v1.Streams/Watch");
    let mut messages = upstream
        .grpc_server_stream(
            &path,
            Bytes::from_static(b"\x0a\x01a"),
            &http::HeaderMap::new(),
            None,
        )
        .await
        .unwrap();
    assert!(messages.next().await.unwrap().is_some());
    assert_eq!(
        upstream.in_flight(),
        [1],
        "open, waiting for the second message"
    );
    gate.notify_one();
    assert!(messages.next().await.unwrap().is_some());
    assert!(messages.next().await.unwrap().is_none());
    drop(messages);
    assert_eq!(upstream.in_flight(), [0]);
}

// ===== well-known types as the whole request and response =====

/// Every well-known type as an RPC's whole request and response, echoed back byte for byte by
/// the upstream: what comes back is what the proto3 JSON mapping writes for the type itself.
const WHOLE_WKT_PROTO: &str = r#"
syntax = "proto3";
package whole.v1;
import "google/api/annotations.proto";
import "google/protobuf/any.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/empty.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
service Whole {
  rpc Str(google.protobuf.StringValue) returns (google.protobuf.StringValue) {
    option (google.api.http) = { post: "/w/string" body: "*" additional_bindings { get: "/w/string/{value}" } };
  }
  rpc I64(google.protobuf.Int64Value) returns (google.protobuf.Int64Value) {
    option (google.api.http) = { post: "/w/int64" body: "*" };
  }
  rpc U32(google.protobuf.UInt32Value) returns (google.protobuf.UInt32Value) {
    option (google.api.http) = { post: "/w/uint32" body: "*" };
  }
  rpc Flag(google.protobuf.BoolValue) returns (google.protobuf.BoolValue) {
    option (google.api.http) = { post: "/w/bool" body: "*" };
  }
  rpc Raw(google.protobuf.BytesValue) returns (google.protobuf.BytesValue) {
    option (google.api.http) = { post: "/w/bytes" body: "*" };
  }
  rpc Dbl(google.protobuf.DoubleValue) returns (google.protobuf.DoubleValue) {
    option (google.api.http) = { post: "/w/double" body: "*" };
  }
  rpc Flt(google.protobuf.FloatValue) returns (google.protobuf.FloatValue) {
    option (google.api.http) = { post: "/w/float" body: "*" };
  }
  rpc Ts(google.protobuf.Timestamp) returns (google.protobuf.Timestamp) {
    option (google.api.http) = { post: "/w/timestamp" body: "*" };
  }
  rpc Dur(google.protobuf.Duration) returns (google.protobuf.Duration) {
    option (google.api.http) = { post: "/w/duration" body: "*" };
  }
  rpc Obj(google.protobuf.Struct) returns (google.protobuf.Struct) {
    option (google.api.http) = { post: "/w/struct" body: "*" };
  }
  rpc Val(google.protobuf.Value) returns (google.protobuf.Value) {
    option (google.api.http) = { post: "/w/value" body: "*" };
  }
  rpc List(google.protobuf.ListValue) returns (google.protobuf.ListValue) {
    option (google.api.http) = { post: "/w/list" body: "*" };
  }
  rpc Mask(google.protobuf.FieldMask) returns (google.protobuf.FieldMask) {
    option (google.api.http) = { post: "/w/mask" body: "*" };
  }
  rpc Nothing(google.protobuf.Empty) returns (google.protobuf.Empty) {
    option (google.api.http) = { post: "/w/empty" body: "*" };
  }
  rpc Packed(google.protobuf.Any) returns (google.protobuf.Any) {
    option (google.api.http) = { post: "/w/any" body: "*" };
  }
}
"#;

#[tokio::test]
async fn a_well_known_type_as_the_whole_message_is_its_json_form_both_ways() {
    let (_dir, set) = compile_set("whole", "whole/v1/whole.proto", WHOLE_WKT_PROTO);
    let (mut cfg, _seen) = echo_config().await;
    cfg.transcode.descriptor_set = Some(set);
    cfg.transcode.strict = true;
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let any = r#"{"@type":"type.googleapis.com/google.protobuf.Duration","value":"1.5s"}"#;
    // (path, body sent, body wanted back): the proto3 JSON mapping of the type itself.
    let cases: &[(&str, &str, serde_json::Value)] = &[
        ("/w/string", r#""foo""#, serde_json::json!("foo")),
        ("/w/string", r#""""#, serde_json::json!("")),
        (
            "/w/int64",
            r#""9007199254740993""#,
            serde_json::json!("9007199254740993"),
        ),
        ("/w/int64", "-7", serde_json::json!("-7")),
        ("/w/uint32", "7", serde_json::json!(7)),
        ("/w/bool", "false", serde_json::json!(false)),
        ("/w/bool", "true", serde_json::json!(true)),
        ("/w/bytes", r#""YWJj""#, serde_json::json!("YWJj")),
        ("/w/double", r#""NaN""#, serde_json::json!("NaN")),
        (
            "/w/double",
            r#""-Infinity""#,
            serde_json::json!("-Infinity"),
        ),
        ("/w/double", "1.5", serde_json::json!(1.5)),
        ("/w/float", r#""Infinity""#, serde_json::json!("Infinity")),
        (
            "/w/timestamp",
            r#""2026-12-02T10:00:00Z""#,
            serde_json::json!("2026-12-02T10:00:00Z"),
        ),
        ("/w/duration", r#""1.5s""#, serde_json::json!("1.500s")),
        (
            "/w/struct",
            r#"{"a":1,"b":[true,null,"x"],"c":{}}"#,
            serde_json::json!({"a":1.0,"b":[true,null,"x"],"c":{}}),
        ),
        ("/w/value", "3", serde_json::json!(3.0)),
        ("/w/value", r#""text""#, serde_json::json!("text")),
        ("/w/value", "null", serde_json::json!(null)),
        (
            "/w/list",
            r#"[1,"x",false]"#,
            serde_json::json!([1.0, "x", false]),
        ),
        (
            "/w/mask",
            r#""a.b,fooBar""#,
            serde_json::json!("a.b,fooBar"),
        ),
        ("/w/empty", "{}", serde_json::json!({})),
        (
            "/w/any",
            any,
            serde_json::json!({"@type": "type.googleapis.com/google.protobuf.Duration", "value": "1.500s"}),
        ),
    ];
    for (path, body, want) in cases {
        let r = send(
            http::Method::POST,
            &url(gw.http, path),
            Bytes::copy_from_slice(body.as_bytes()),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{path} {body}: {:?}", r.body);
        assert_eq!(&r.json(), want, "{path} {body}: {:?}", r.body);
    }
    // A wrapper's value bound from the path.
    let r = get(&url(gw.http, "/w/string/bob")).await;
    assert_eq!(
        (r.status, r.json()),
        (StatusCode::OK, serde_json::json!("bob"))
    );
    // Input that is not the type's JSON form is a 400 naming the type, not a guess.
    for (path, body) in [
        ("/w/bool", r#""yes""#),
        ("/w/int64", "1.5"),
        ("/w/timestamp", "7"),
    ] {
        let r = send(
            http::Method::POST,
            &url(gw.http, path),
            Bytes::copy_from_slice(body.as_bytes()),
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{path} {body}: {:?}",
            r.body
        );
    }
    gw.shutdown().await;
}

/// A POST whose rule has no `body` (as grpc-gateway's "a bit of everything" has).
const NO_BODY_PROTO: &str = r#"
syntax = "proto3";
package nobody.v1;
import "google/api/annotations.proto";
service Echo {
  rpc Say(SayRequest) returns (SayReply) {
    option (google.api.http) = { post: "/v1/say/{name}" };
  }
}
message SayRequest { string name = 1; int32 times = 2; repeated string tags = 3; }
message SayReply { string text = 1; int32 count = 2; repeated string labels = 3; }
"#;

/// A body sent to a rule without one is refused with a 400 that says so — form or JSON alike —
/// never dropped on the way to a 200; an empty body or `{}` carries nothing and passes.
#[tokio::test]
async fn a_body_on_a_rule_without_one_is_refused_not_dropped() {
    let (_dir, set) = compile_set("nobody", "nobody/v1/nobody.proto", NO_BODY_PROTO);
    let (mut cfg, _seen) = echo_config().await;
    cfg.transcode.descriptor_set = Some(set);
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let post = |body: &'static str, content_type: &'static str| {
        let req = Request::post(url(gw.http, "/v1/say/myid1?times=2"))
            .header("content-type", content_type)
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        async move {
            let resp = common::client().request(req).await.unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    for (body, content_type) in [
        ("num=1", "application/x-www-form-urlencoded"),
        (r#"{"times": 3}"#, "application/json"),
    ] {
        let (status, text) = post(body, content_type).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{content_type}: {text}");
        assert!(
            text.contains("takes no body") && text.contains(content_type),
            "{text}"
        );
    }
    for body in ["", " {} \n"] {
        let (status, text) = post(body, "application/json").await;
        assert_eq!(status, StatusCode::OK, "{body:?}: {text}");
        let j: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(j, serde_json::json!({"text": "myid1", "count": 2}));
    }
    gw.shutdown().await;
}

/// Requests whose bytes fields have the wire form of the answers' Any fields, so that the echo
/// upstream answers with whatever Any the test encodes by hand.
const ANY_PROTO: &str = r#"
syntax = "proto3";
package anys.v1;
import "google/api/annotations.proto";
import "google/protobuf/any.proto";
import "google/protobuf/wrappers.proto";
service Anys {
  rpc Nested(Raw) returns (Packed) {
    option (google.api.http) = { post: "/anys/nested" body: "*" };
  }
  rpc Top(RawAny) returns (google.protobuf.Any) {
    option (google.api.http) = { get: "/anys/top" };
  }
}
message Raw { bytes payload = 1; repeated bytes items = 2; map<string, bytes> by_name = 3; string note = 4; }
message Packed {
  google.protobuf.Any payload = 1;
  repeated google.protobuf.Any items = 2;
  map<string, google.protobuf.Any> by_name = 3;
  string note = 4;
}
message RawAny { string type_url = 1; bytes value = 2; }
"#;

/// An Any's wire form, by hand: type_url (field 1), value (field 2).
fn any_bytes(url: &str, value: &[u8]) -> Vec<u8> {
    let mut b = vec![0x0a, url.len() as u8];
    b.extend_from_slice(url.as_bytes());
    b.extend([0x12, value.len() as u8]);
    b.extend_from_slice(value);
    b
}

/// An Any in an answer is JSON when its type is known and `{"@type", "value": base64}` when it
/// is not — at the top, in a field, a list or a map — never a failed answer.
#[tokio::test]
async fn an_any_of_an_unknown_type_in_an_answer_keeps_its_raw_form() {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let (_dir, set) = compile_set("anys", "anys/v1/anys.proto", ANY_PROTO);
    let (mut cfg, _seen) = echo_config().await;
    cfg.transcode.descriptor_set = Some(set);
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let unknown = any_bytes("type.googleapis.com/acme.v1.Unknown", &[1, 2]);
    // StringValue "hi": field 1, length 2.
    let known = any_bytes(
        "type.googleapis.com/google.protobuf.StringValue",
        &[0x0a, 2, b'h', b'i'],
    );
    let raw = serde_json::json!({"@type": "type.googleapis.com/acme.v1.Unknown", "value": "AQI="});
    let string = serde_json::json!({"@type": "type.googleapis.com/google.protobuf.StringValue", "value": "hi"});
    let body = serde_json::json!({
        "payload": b64(&unknown),
        "items": [b64(&known), b64(&unknown)],
        "byName": {"k": b64(&unknown), "s": b64(&known)},
        "note": "kept",
    });
    let r = send(
        http::Method::POST,
        &url(gw.http, "/anys/nested"),
        Bytes::from(body.to_string()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        r.json(),
        serde_json::json!({
            "payload": raw, "items": [string, raw], "byName": {"k": raw, "s": string}, "note": "kept",
        })
    );
    let r = get(&url(
        gw.http,
        "/anys/top?typeUrl=type.googleapis.com/acme.v1.Unknown&value=AQI%3D",
    ))
    .await;
    assert_eq!((r.status, r.json()), (StatusCode::OK, raw));
    gw.shutdown().await;
}
