//! The mock backends, started in-process on free ports and called with a real tonic client and a
//! real HTTP client.

mod common;

use std::time::{Duration, Instant};

use common::{get, post, send};
use gwbench::backend::behavior::Behavior;
use gwbench::backend::{Backends, BackendsConfig};
use gwbench::proto::{self, Named, v1};
use http::{Method, StatusCode};
use tonic::Code;
use tonic::transport::Channel;
use v1::{
    inventory_service_client::InventoryServiceClient, order_service_client::OrderServiceClient,
    product_service_client::ProductServiceClient, user_service_client::UserServiceClient,
};

async fn start() -> Backends {
    Backends::start(&BackendsConfig::ephemeral())
        .await
        .expect("mocks start")
}

async fn channel(b: &Backends) -> Channel {
    Channel::from_shared(format!("http://{}", b.grpc[0]))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn rest(b: &Backends, path: &str) -> String {
    format!("http://{}{path}", b.rest[0])
}

fn admin(b: &Backends, path: &str) -> String {
    format!("http://{}{path}", b.admin)
}

/// Asserts that the gRPC answer, rendered with the proto3 JSON mapping, equals the REST body.
async fn assert_same<M: Named>(
    b: &Backends,
    path: &str,
    grpc: Result<tonic::Response<M>, tonic::Status>,
) {
    let reply = get(&rest(b, path)).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {:?}", reply.body);
    let grpc = grpc
        .unwrap_or_else(|s| panic!("{path}: gRPC failed: {s}"))
        .into_inner();
    let grpc_json: serde_json::Value = serde_json::from_slice(&proto::to_json(&grpc)).unwrap();
    assert_eq!(reply.json(), grpc_json, "{path}: REST and gRPC differ");
}

#[tokio::test]
async fn rest_and_grpc_serve_the_same_data_for_every_rpc() {
    let b = start().await;
    let ch = channel(&b).await;
    let mut users = UserServiceClient::new(ch.clone());
    let mut orders = OrderServiceClient::new(ch.clone());
    let mut products = ProductServiceClient::new(ch.clone());
    let mut inventory = InventoryServiceClient::new(ch);

    assert_same(
        &b,
        "/api/users/42",
        users.get_user(v1::GetUserRequest { id: 42 }).await,
    )
    .await;
    assert_same(
        &b,
        "/api/users?page_size=3&page_token=100",
        users
            .list_users(v1::ListUsersRequest {
                page_size: 3,
                page_token: "100".into(),
            })
            .await,
    )
    .await;
    assert_same(
        &b,
        "/api/orders/ord-42-3",
        orders
            .get_order(v1::GetOrderRequest {
                id: "ord-42-3".into(),
            })
            .await,
    )
    .await;
    assert_same(
        &b,
        "/api/orders?user_id=42",
        orders
            .list_orders(v1::ListOrdersRequest {
                user_id: 42,
                page_size: 0,
            })
            .await,
    )
    .await;
    assert_same(
        &b,
        "/api/products/7",
        products.get_product(v1::GetProductRequest { id: 7 }).await,
    )
    .await;
    assert_same(
        &b,
        "/api/products/search?q=lamp&limit=4",
        products
            .search_products(v1::SearchProductsRequest {
                q: "lamp".into(),
                limit: 4,
            })
            .await,
    )
    .await;
    assert_same(
        &b,
        "/api/inventory/7",
        inventory
            .get_stock(v1::GetStockRequest { product_id: 7 })
            .await,
    )
    .await;

    // CreateUser: same body over both protocols gives the same user.
    let body = r#"{"username":"grace","email":"grace@example.com","tier":"USER_TIER_PRO","address":{"city":"Arlington","lines":["1 Navy Way"]}}"#;
    let reply = post(&rest(&b, "/api/users"), body).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let req: v1::CreateUserRequest = proto::from_json(body.as_bytes()).unwrap();
    let created = users.create_user(req).await.unwrap().into_inner();
    let created_json: serde_json::Value =
        serde_json::from_slice(&proto::to_json(&created)).unwrap();
    assert_eq!(reply.json(), created_json);
    assert_eq!(created.username, "grace");
    assert_eq!(created.tier, v1::UserTier::Pro as i32);

    // The data is the documented deterministic data.
    let user = users
        .get_user(v1::GetUserRequest { id: 42 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user, gwbench::backend::data::user(42).unwrap());
    b.shutdown().await;
}

#[tokio::test]
async fn not_found_and_bad_requests_are_json_errors() {
    let b = start().await;
    let ch = channel(&b).await;
    let mut users = UserServiceClient::new(ch.clone());
    let mut orders = OrderServiceClient::new(ch.clone());
    let mut products = ProductServiceClient::new(ch.clone());
    let mut inventory = InventoryServiceClient::new(ch);

    for id in [0, 1_000_001, -5] {
        assert_eq!(
            users
                .get_user(v1::GetUserRequest { id })
                .await
                .unwrap_err()
                .code(),
            Code::NotFound
        );
    }
    assert_eq!(
        products
            .get_product(v1::GetProductRequest { id: 0 })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        inventory
            .get_stock(v1::GetStockRequest {
                product_id: 2_000_000
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        orders
            .get_order(v1::GetOrderRequest {
                id: "ord-1-99".into()
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        orders
            .list_orders(v1::ListOrdersRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        users
            .create_user(v1::CreateUserRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );

    for (path, status, code) in [
        ("/api/users/0", 404, "NOT_FOUND"),
        ("/api/users/1000001", 404, "NOT_FOUND"),
        ("/api/products/0", 404, "NOT_FOUND"),
        ("/api/inventory/0", 404, "NOT_FOUND"),
        ("/api/orders/ord-1-0", 404, "NOT_FOUND"),
        ("/api/nothing", 404, "NOT_FOUND"),
        ("/api/users/abc", 400, "INVALID_ARGUMENT"),
        ("/api/users?page_size=x", 400, "INVALID_ARGUMENT"),
        ("/api/users?color=red", 400, "INVALID_ARGUMENT"),
        ("/api/orders", 400, "INVALID_ARGUMENT"),
        ("/api/products/search", 400, "INVALID_ARGUMENT"),
    ] {
        let reply = get(&rest(&b, path)).await;
        assert_eq!(reply.status.as_u16(), status, "{path}");
        assert_eq!(reply.headers["content-type"], "application/json", "{path}");
        let json = reply.json();
        assert_eq!(json["error"]["code"], code, "{path}: {json}");
        assert_eq!(json["error"]["http_status"], status, "{path}");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{path}"
        );
    }

    let reply = send(Method::DELETE, &rest(&b, "/api/users/1"), "").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.headers["allow"], "GET");
    let reply = post(&rest(&b, "/api/users"), "{\"username\": ").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("CreateUserRequest")
    );
    let reply = post(
        &rest(&b, "/api/users"),
        &format!("{{\"username\": \"{}\"}}", "x".repeat(2 << 20)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    b.shutdown().await;
}

#[tokio::test]
async fn error_rate_one_fails_every_call_on_both_protocols() {
    let cfg = BackendsConfig {
        behavior: Behavior {
            error_rate: 1.0,
            ..Default::default()
        },
        ..BackendsConfig::ephemeral()
    };
    let b = Backends::start(&cfg).await.unwrap();
    let mut users = UserServiceClient::new(channel(&b).await);
    for _ in 0..20 {
        let err = users
            .get_user(v1::GetUserRequest { id: 1 })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        let reply = get(&rest(&b, "/api/users/1")).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.json()["error"]["code"], "UNAVAILABLE");
    }
    b.shutdown().await;
}

#[tokio::test]
async fn admin_changes_one_service_at_run_time_and_rejects_bad_json() {
    let b = start().await;
    let mut users = UserServiceClient::new(channel(&b).await);
    let mut orders = OrderServiceClient::new(channel(&b).await);

    // Fail only the orders service.
    let reply = post(
        &admin(&b, "/admin/behavior/orders"),
        r#"{"error_rate": 1.0}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.json()["overrides"]["orders"]["error_rate"], 1.0);
    assert_eq!(
        get(&rest(&b, "/api/orders/ord-1-1")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        orders
            .get_order(v1::GetOrderRequest {
                id: "ord-1-1".into()
            })
            .await
            .unwrap_err()
            .code(),
        Code::Unavailable
    );
    assert_eq!(get(&rest(&b, "/api/users/1")).await.status, StatusCode::OK);

    // Bad input: 400 with a JSON error naming the problem; the behaviour in force stays.
    for (body, needle) in [
        ("not json", "invalid behavior JSON"),
        (r#"{"error_rat": 1}"#, "error_rat"),
        (r#"{"error_rate": 3}"#, "error_rate"),
        (r#"{"latency": "fixed:10x"}"#, "10x"),
        (r#"{"stall": "5s/1s"}"#, "stall"),
    ] {
        let reply = post(&admin(&b, "/admin/behavior/orders"), body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        let msg = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    let table = get(&admin(&b, "/admin/behavior")).await.json();
    assert_eq!(table["overrides"]["orders"]["error_rate"], 1.0);
    assert_eq!(table["overrides"]["orders"]["latency"], "none");
    assert_eq!(
        post(&admin(&b, "/admin/behavior/nope"), "{}").await.status,
        StatusCode::NOT_FOUND
    );

    // Latency set at run time is applied to both protocols (a lower bound: not a timing test).
    let reply = post(
        &admin(&b, "/admin/behavior"),
        r#"{"latency": "fixed:300ms"}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let t = Instant::now();
    assert_eq!(get(&rest(&b, "/api/users/1")).await.status, StatusCode::OK);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "REST answered in {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    users.get_user(v1::GetUserRequest { id: 1 }).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "gRPC answered in {:?}",
        t.elapsed()
    );

    // DELETE resets everything.
    assert_eq!(
        send(Method::DELETE, &admin(&b, "/admin/behavior"), "")
            .await
            .status,
        StatusCode::OK
    );
    assert!(
        get(&admin(&b, "/admin/behavior")).await.json()["overrides"]
            .as_object()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        get(&rest(&b, "/api/orders/ord-1-1")).await.status,
        StatusCode::OK
    );
    b.shutdown().await;
}

#[tokio::test]
async fn health_endpoints_answer() {
    let b = start().await;
    assert_eq!(get(&rest(&b, "/healthz")).await.json()["status"], "ok");
    assert_eq!(get(&admin(&b, "/healthz")).await.json()["status"], "ok");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&b).await);
    for service in ["", "gwbench.v1.UserService", "gwbench.v1.InventoryService"] {
        let resp = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            resp.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "{service:?}"
        );
    }
    b.shutdown().await;
}

#[tokio::test]
async fn instances_listen_apart_and_say_who_answered() {
    let cfg = BackendsConfig {
        instances: 2,
        ..BackendsConfig::ephemeral()
    };
    let b = Backends::start(&cfg).await.unwrap();
    assert_eq!((b.rest.len(), b.grpc.len()), (2, 2));
    for (i, addr) in b.rest.iter().enumerate() {
        let reply = get(&format!("http://{addr}/api/users/1")).await;
        assert_eq!(reply.headers["x-gwbench-instance"], i.to_string().as_str());
    }
    for (i, addr) in b.grpc.iter().enumerate() {
        let ch = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let resp = UserServiceClient::new(ch)
            .get_user(v1::GetUserRequest { id: 1 })
            .await
            .unwrap();
        assert_eq!(
            resp.metadata().get("x-gwbench-instance").unwrap(),
            i.to_string().as_str()
        );
    }
    let stats = get(&admin(&b, "/admin/stats")).await.json();
    let listeners = stats["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 4);
    assert!(listeners.iter().all(|l| l["requests"] == 1), "{stats}");
    assert_eq!(b.ready_lines().len(), 5);
    b.shutdown().await;
}

/// Per-core mocks: extra threads serve the same instances on the same addresses (their
/// counters are the instances' own), and shutdown stops every thread's listeners.
#[tokio::test]
async fn per_core_workers_serve_the_same_instances_and_all_stop() {
    let cfg = BackendsConfig {
        instances: 2,
        workers: 3,
        ..BackendsConfig::ephemeral()
    };
    let b = Backends::start(&cfg).await.unwrap();
    assert_eq!(
        b.ready_lines().len(),
        5,
        "one address per instance, not per worker"
    );
    for (i, addr) in b.rest.iter().enumerate() {
        for _ in 0..30 {
            let reply = get(&format!("http://{addr}/api/users/1")).await;
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(reply.headers["x-gwbench-instance"], i.to_string().as_str());
        }
    }
    for addr in &b.grpc {
        for _ in 0..10 {
            let ch = Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            UserServiceClient::new(ch)
                .get_user(v1::GetUserRequest { id: 1 })
                .await
                .unwrap();
        }
    }
    let stats = get(&admin(&b, "/admin/stats")).await.json();
    let counts: Vec<u64> = stats["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["requests"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [30, 30, 10, 10], "{stats}");
    let addrs: Vec<_> = b.rest.iter().chain(&b.grpc).copied().collect();
    b.shutdown().await;
    for addr in addrs {
        // A worker left listening would still accept on its SO_REUSEPORT socket.
        for _ in 0..20 {
            assert!(
                tokio::net::TcpStream::connect(addr).await.is_err(),
                "{addr} still accepts after shutdown"
            );
        }
    }
}

#[tokio::test]
async fn serving_one_protocol_only() {
    let cfg = BackendsConfig {
        grpc: false,
        ..BackendsConfig::ephemeral()
    };
    let b = Backends::start(&cfg).await.unwrap();
    assert!(b.grpc.is_empty());
    assert_eq!(get(&rest(&b, "/api/users/1")).await.status, StatusCode::OK);
    assert_eq!(
        b.ready_lines(),
        [
            format!("ready rest {}", b.rest[0]),
            format!("ready admin {}", b.admin)
        ]
    );
    b.shutdown().await;
}

#[tokio::test]
async fn overlapping_port_ranges_are_refused_before_binding() {
    // Defaults with two instances: REST instance 1 would take the admin port 8082.
    let cfg = BackendsConfig {
        instances: 2,
        ..BackendsConfig::default()
    };
    let err = Backends::start(&cfg).await.unwrap_err().to_string();
    assert!(
        err.contains("port 8082") && err.contains("REST mock instance 1") && err.contains("admin"),
        "{err}"
    );
}

#[tokio::test]
async fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = BackendsConfig {
        grpc_port: port,
        ..BackendsConfig::ephemeral()
    };
    let err = Backends::start(&cfg).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("gRPC mock"),
        "{err}"
    );
}

#[tokio::test]
async fn admin_changes_come_as_json_and_from_no_other_origin() {
    let b = start().await;
    let change = |content_type: &'static str, origin: Option<&'static str>| {
        let mut req =
            http::Request::post(admin(&b, "/admin/behavior")).header("content-type", content_type);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let req = req
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                br#"{"error_rate": 1.0}"#,
            )))
            .unwrap();
        async move { common::client().request(req).await.unwrap().status() }
    };
    // What a web page can send without asking: text/plain, and from its own origin.
    assert_eq!(
        change("text/plain", None).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(
        change("application/json", Some("http://evil.example")).await,
        StatusCode::FORBIDDEN
    );
    let table = get(&admin(&b, "/admin/behavior")).await.json();
    assert_eq!(table["default"]["error_rate"], 0.0, "{table}");
    // A command-line client (JSON, no Origin) still changes it.
    assert_eq!(change("application/json", None).await, StatusCode::OK);
    b.shutdown().await;
}
