//! Helpers shared by the integration tests: a small HTTP client over hyper.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request; panics (failing the test) after 10 s rather than hanging.
pub async fn send(method: Method, url: &str, body: impl Into<Bytes>) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap();
    let fut = async {
        let resp = client().request(req).await.expect("request failed");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body read failed").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("request timed out")
}

pub async fn get(url: &str) -> Reply {
    send(Method::GET, url, Bytes::new()).await
}

pub async fn post(url: &str, body: &str) -> Reply {
    send(Method::POST, url, body.to_string()).await
}

/// `http://{addr}{path}`: the one way tests write a URL.
pub fn url(addr: impl std::fmt::Display, path: &str) -> String {
    format!("http://{addr}{path}")
}
