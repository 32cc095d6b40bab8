//! Transcoding of server-streaming RPCs, against hand-written gRPC upstreams that stream on
//! purpose (gated, failing mid-stream, never ending), with protos written for these tests.
//!
//! Where the references differ: grpc-gateway writes newline-delimited `{"result": ...}` lines
//! and an error as a last `{"error": ...}` line (our default, `stream_format = "ndjson"`);
//! Envoy's transcoder writes one JSON array (`stream_format = "array"`), where we put a
//! mid-stream error as the array's last element (Envoy resets the stream instead).

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{compile_set, gateway_config, get, headers, url};
use gwbench::gateway::config::{ErrorFormat, GatewayConfig, StreamFormat};
use gwbench::gateway::server::GatewayServer;
use http::StatusCode;
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
) -> (GatewayServer, std::path::PathBuf) {
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
    let (gw, dir) = gateway("stream-ndjson", up, |_| {}).await;
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
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn each_message_reaches_the_client_before_the_next_one_is_sent() {
    // The upstream holds its second message until the client has read the first: a gateway
    // that gathered the stream before answering would never deliver it (the test fails on
    // its 10 s guard).
    let gate = Arc::new(tokio::sync::Notify::new());
    let (up, _) = common::grpc_echo_stream(grpc_head(), 2, Some(gate.clone()), ok()).await;
    let (gw, dir) = gateway("stream-live", up, |_| {}).await;
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
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_error_mid_stream_is_the_last_element_in_the_configured_shape() {
    let failing = || headers(&[("grpc-status", "13"), ("grpc-message", "disk%20on%20fire")]);
    // grpc-gateway's lines: two results, then the error in the gateway's shape...
    let (up, _) = common::grpc_echo_stream(grpc_head(), 2, None, failing()).await;
    let (gw, dir) = gateway("stream-error", up, |_| {}).await;
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
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_array_stream_is_one_json_array_even_when_empty() {
    let (up, _) = common::grpc_echo_stream(grpc_head(), 2, None, ok()).await;
    let array = |c: &mut GatewayConfig| c.transcode.stream_format = StreamFormat::Array;
    let (gw, dir) = gateway("stream-array", up, array).await;
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
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_stream_that_fails_before_its_first_message_is_an_http_error() {
    let not_found = headers(&[("grpc-status", "5"), ("grpc-message", "no%20such%20feed")]);
    let (up, _) = common::grpc_echo_stream(grpc_head(), 0, None, not_found).await;
    let (gw, dir) = gateway("stream-early-error", up, |_| {}).await;
    let r = get(&url(gw.http, "/v1/watch/bob")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["message"], "no such feed");
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_stream_that_outlives_the_route_deadline_ends_with_deadline_exceeded() {
    // The gate is never opened: the upstream sends one message and then nothing.
    let gate = Arc::new(tokio::sync::Notify::new());
    let (up, _) = common::grpc_echo_stream(grpc_head(), 2, Some(gate), ok()).await;
    let (gw, dir) = gateway("stream-deadline", up, |c| {
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
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_stream_of_http_bodies_is_their_raw_bytes_and_a_broken_one_is_aborted() {
    let (up, _) = common::grpc_echo_stream(grpc_head(), 3, None, ok()).await;
    let (gw, dir) = gateway("stream-httpbody", up, |_| {}).await;
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
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn client_streaming_rules_are_skipped_at_start_and_the_rest_serve() {
    let (up, _) = common::grpc_echo_stream(grpc_head(), 1, None, ok()).await;
    let (gw, dir) = gateway("stream-skipped", up, |_| {}).await;
    let routes = get(&url(gw.admin, "/routes")).await.json();
    let skipped = routes["skipped"].as_array().unwrap();
    let named: Vec<&str> = skipped
        .iter()
        .map(|s| s["rpc"].as_str().unwrap_or_default())
        .collect();
    assert!(named.iter().any(|r| r.ends_with("Upload")), "{routes}");
    assert!(named.iter().any(|r| r.ends_with("Chat")), "{routes}");
    assert!(
        skipped
            .iter()
            .all(|s| s["reason"].as_str().unwrap().contains("client-streaming")),
        "{routes}"
    );
    // Not served, so never a 500 at request time.
    let r = common::post(&url(gw.http, "/v1/upload"), "{}").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // The unary and server-streaming rules of the same service serve.
    assert_eq!(get(&url(gw.http, "/v1/say/a")).await.status, StatusCode::OK);
    assert_eq!(
        get(&url(gw.http, "/v1/watch/a")).await.status,
        StatusCode::OK
    );
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_unary_rpc_answered_with_two_messages_is_a_bad_gateway() {
    // A hostile upstream streams where the descriptor says unary.
    let (up, _) = common::grpc_echo_stream(grpc_head(), 2, None, ok()).await;
    let (gw, dir) = gateway("unary-two", up, |_| {}).await;
    let r = get(&url(gw.http, "/v1/say/a")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{:?}", r.body);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than one message")
    );
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
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
    let (dir, set) = compile_set("deep", "deep/v1/deep.proto", DEEP_PROTO);
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
    let _ = std::fs::remove_dir_all(dir);
}
