//! The mock REST backend (hyper): the same resources as the gRPC mock, as proto3 JSON, at the
//! paths of the `google.api.http` annotations, so that a gateway's REST proxy route and its
//! transcoded gRPC route can be compared on the same data.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::Instance;
use super::behavior::Service;
use super::data::{self, DataError};
use crate::net::{Body, json, json_error};
use crate::proto::{self, Named, v1};

/// Response header naming the instance that answered (`0`, `1`, …), for load-balancing tests.
pub const INSTANCE_HEADER: &str = "x-gwbench-instance";
/// Largest request body the mock reads.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// One REST endpoint, with its path parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    GetUser(String),
    ListUsers,
    CreateUser,
    GetOrder(String),
    ListOrders,
    SearchProducts,
    GetProduct(String),
    GetStock(String),
}

impl Endpoint {
    fn service(&self) -> Service {
        match self {
            Endpoint::GetUser(_) | Endpoint::ListUsers | Endpoint::CreateUser => Service::Users,
            Endpoint::GetOrder(_) | Endpoint::ListOrders => Service::Orders,
            Endpoint::SearchProducts | Endpoint::GetProduct(_) => Service::Products,
            Endpoint::GetStock(_) => Service::Inventory,
        }
    }
}

/// Why a request did not reach an endpoint.
#[derive(Debug, PartialEq, Eq)]
enum NoRoute {
    NotFound,
    MethodNotAllowed(&'static str),
}

fn route(method: &Method, path: &str) -> Result<Endpoint, NoRoute> {
    let rest = path.strip_prefix("/api/").ok_or(NoRoute::NotFound)?;
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(NoRoute::NotFound);
    }
    let get = |e| {
        if method == Method::GET {
            Ok(e)
        } else {
            Err(NoRoute::MethodNotAllowed("GET"))
        }
    };
    match segments.as_slice() {
        ["users"] if method == Method::POST => Ok(Endpoint::CreateUser),
        ["users"] if method == Method::GET => Ok(Endpoint::ListUsers),
        ["users"] => Err(NoRoute::MethodNotAllowed("GET, POST")),
        ["users", id] => get(Endpoint::GetUser(id.to_string())),
        ["orders"] => get(Endpoint::ListOrders),
        ["orders", id] => get(Endpoint::GetOrder(id.to_string())),
        ["products", "search"] => get(Endpoint::SearchProducts),
        ["products", id] => get(Endpoint::GetProduct(id.to_string())),
        ["inventory", id] => get(Endpoint::GetStock(id.to_string())),
        _ => Err(NoRoute::NotFound),
    }
}

/// A request error the mock answers with 400 / 413.
struct BadRequest(StatusCode, String);

impl BadRequest {
    fn invalid(message: String) -> Self {
        BadRequest(StatusCode::BAD_REQUEST, message)
    }
}

fn parse_int<T: std::str::FromStr>(name: &str, value: &str, ty: &str) -> Result<T, BadRequest> {
    value.parse().map_err(|_| {
        BadRequest::invalid(format!("invalid value {value:?} for {name}: expected {ty}"))
    })
}

/// Query parameters as (name, value) pairs; any name outside `allowed` is an error.
fn query(uri_query: Option<&str>, allowed: &[&str]) -> Result<Vec<(String, String)>, BadRequest> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(uri_query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if let Some((k, _)) = pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        return Err(BadRequest::invalid(format!(
            "unknown query parameter {k:?}; expected one of: {}",
            allowed.join(", ")
        )));
    }
    Ok(pairs)
}

fn ok<M: Named>(instance: &Instance, msg: &M) -> Response<Body> {
    let mut resp = json(StatusCode::OK, proto::to_json(msg));
    resp.headers_mut()
        .insert(INSTANCE_HEADER, instance.index_header.clone());
    resp
}

fn data_error(err: DataError) -> Response<Body> {
    match err {
        DataError::NotFound(m) => json_error(StatusCode::NOT_FOUND, "NOT_FOUND", &m),
        DataError::InvalidArgument(m) => {
            json_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &m)
        }
    }
}

/// Answers one request as REST mock `instance`.
pub async fn handle(instance: Arc<Instance>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if path == "/healthz" {
        return json(StatusCode::OK, r#"{"status":"ok"}"#);
    }
    if super::ws::is_ws_path(path) {
        return super::ws::handle(instance, req);
    }
    let endpoint = match route(req.method(), path) {
        Ok(e) => e,
        Err(NoRoute::NotFound) => {
            return json_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!("no route for {path}"),
            );
        }
        Err(NoRoute::MethodNotAllowed(allow)) => {
            let mut resp = json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNIMPLEMENTED",
                &format!(
                    "{} is not allowed on {path}; allowed: {allow}",
                    req.method()
                ),
            );
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            return resp;
        }
    };
    let service = endpoint.service();
    instance.requests.fetch_add(1, Ordering::Relaxed);
    if instance.behaviors.apply(service).await.is_err() {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            &format!("{} mock: injected failure (error_rate)", service.name()),
        );
    }
    match answer(&instance, endpoint, req).await {
        Ok(resp) => resp,
        Err(BadRequest(status, m)) => {
            let code = if status == StatusCode::BAD_REQUEST {
                "INVALID_ARGUMENT"
            } else {
                "RESOURCE_EXHAUSTED"
            };
            json_error(status, code, &m)
        }
    }
}

async fn answer(
    instance: &Instance,
    endpoint: Endpoint,
    req: Request<Incoming>,
) -> Result<Response<Body>, BadRequest> {
    let q = req.uri().query();
    let result = match endpoint {
        Endpoint::GetUser(p) => {
            data::user(parse_int("id", &p, "an int64")?).map(|m| ok(instance, &m))
        }
        Endpoint::GetProduct(p) => {
            data::product(parse_int("id", &p, "an int64")?).map(|m| ok(instance, &m))
        }
        Endpoint::GetStock(p) => {
            data::stock(parse_int("product_id", &p, "an int64")?).map(|m| ok(instance, &m))
        }
        Endpoint::GetOrder(p) => data::order(&p).map(|m| ok(instance, &m)),
        Endpoint::ListUsers => {
            let mut r = v1::ListUsersRequest::default();
            for (k, v) in query(q, &["page_size", "page_token"])? {
                match k.as_str() {
                    "page_size" => r.page_size = parse_int(&k, &v, "an int32")?,
                    _ => r.page_token = v,
                }
            }
            data::list_users(&r).map(|m| ok(instance, &m))
        }
        Endpoint::ListOrders => {
            let mut r = v1::ListOrdersRequest::default();
            for (k, v) in query(q, &["user_id", "page_size"])? {
                match k.as_str() {
                    "user_id" => r.user_id = parse_int(&k, &v, "an int64")?,
                    _ => r.page_size = parse_int(&k, &v, "an int32")?,
                }
            }
            data::list_orders(&r).map(|m| ok(instance, &m))
        }
        Endpoint::SearchProducts => {
            let mut r = v1::SearchProductsRequest::default();
            for (k, v) in query(q, &["q", "limit"])? {
                match k.as_str() {
                    "limit" => r.limit = parse_int(&k, &v, "an int32")?,
                    _ => r.q = v,
                }
            }
            data::search_products(&r).map(|m| ok(instance, &m))
        }
        Endpoint::CreateUser => {
            let body = read_body(req).await?;
            let r: v1::CreateUserRequest = proto::from_json(&body)
                .map_err(|e| BadRequest::invalid(format!("invalid CreateUserRequest JSON: {e}")))?;
            data::create_user(r).map(|m| ok(instance, &m))
        }
    };
    Ok(result.unwrap_or_else(data_error))
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, BadRequest> {
    // Refuse a declared oversize body without reading it.
    let declared = req.headers().get(header::CONTENT_LENGTH);
    let declared = declared.and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(BadRequest::invalid(format!(
            "could not read the request body: {e}"
        ))),
    }
}

fn too_large() -> BadRequest {
    BadRequest(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is over the mock's limit of {MAX_BODY_BYTES} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_the_annotations() {
        assert_eq!(
            route(&Method::GET, "/api/users/42"),
            Ok(Endpoint::GetUser("42".into()))
        );
        assert_eq!(route(&Method::GET, "/api/users"), Ok(Endpoint::ListUsers));
        assert_eq!(route(&Method::POST, "/api/users"), Ok(Endpoint::CreateUser));
        assert_eq!(
            route(&Method::GET, "/api/products/search"),
            Ok(Endpoint::SearchProducts)
        );
        assert_eq!(
            route(&Method::GET, "/api/products/7"),
            Ok(Endpoint::GetProduct("7".into()))
        );
        assert_eq!(
            route(&Method::GET, "/api/inventory/7"),
            Ok(Endpoint::GetStock("7".into()))
        );
        assert_eq!(
            route(&Method::GET, "/api/orders/ord-1-1"),
            Ok(Endpoint::GetOrder("ord-1-1".into()))
        );
        assert_eq!(
            route(&Method::DELETE, "/api/users/42"),
            Err(NoRoute::MethodNotAllowed("GET"))
        );
        assert_eq!(
            route(&Method::PUT, "/api/users"),
            Err(NoRoute::MethodNotAllowed("GET, POST"))
        );
        for missing in [
            "/api/users/",
            "/api/users/1/x",
            "/users/1",
            "/api",
            "/api/nope",
        ] {
            assert_eq!(
                route(&Method::GET, missing),
                Err(NoRoute::NotFound),
                "{missing}"
            );
        }
    }
}
