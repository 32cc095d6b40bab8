//! Request intake, before any middleware: the request id, the path check, the route error
//! responses (404, 405 + Allow), the deadline, and the body read within its limit (413).

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use rand::Rng;
use tonic::Code;

use super::router::RouteError;
use crate::gateway::status::GwError;
use crate::gateway::types::{REQUEST_ID, REQUEST_TIMEOUT};

/// Longest client-sent request id kept; a longer (or empty) one is replaced.
pub(crate) const MAX_REQUEST_ID: usize = 128;

/// The client's request id when it sent a usable one, else a fresh one.
pub(crate) fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(&REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID)
        .cloned()
        .unwrap_or_else(new_request_id)
}

/// A fresh request id: 32 hex digits.
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let v: u128 = rand::rng().random();
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((v >> (124 - 4 * i)) & 0xf) as usize];
    }
    // Owned by its `Bytes` from the start: the id is cloned into the upstream request and the
    // answer, and a value copied into a `Bytes` paid a second allocation at its first clone.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(out))
        .expect("hex digits are a valid header value")
}

/// Refuses an HTTP/1.1 request without exactly one `Host` (RFC 9112 §3.2): which host it is
/// for would be a guess, and a guess a proxy in front may have made differently. HTTP/2 names
/// its authority in the request line, HTTP/1.0 may omit it.
pub(crate) fn check_host(version: http::Version, headers: &HeaderMap) -> Result<(), GwError> {
    let hosts = headers.get_all(header::HOST).iter().count();
    if version == http::Version::HTTP_11 && hosts != 1 {
        return Err(GwError::http(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            format!("an HTTP/1.1 request needs exactly one Host header; this one has {hosts}"),
        ));
    }
    Ok(())
}

/// Refuses paths that try to climb out of their route: dot segments in any spelling (`..`,
/// `.%2e`, `%2e.`, `%2E%2E`), encoded slashes or backslashes.
pub(crate) fn check_path(path: &str) -> Result<(), GwError> {
    // `%2e` is the only other spelling of a dot, so these are all the dot segments there are
    // (compared without case, and without a lowercased copy: this runs on every request).
    let dot_segment = |s: &str| {
        [".", "..", "%2e", "%2e%2e", ".%2e", "%2e."]
            .iter()
            .any(|d| s.eq_ignore_ascii_case(d))
    };
    let encoded_separator = path.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                (w[1], w[2].to_ascii_lowercase()),
                (b'2', b'f') | (b'5', b'c')
            )
    });
    let traversal = path.split('/').any(dot_segment) || encoded_separator || path.contains('\\');
    if traversal {
        return Err(GwError::grpc(
            Code::InvalidArgument,
            format!("path {path:?} is not allowed (dot segments or encoded separators)"),
        ));
    }
    Ok(())
}

/// The answer to a request no route takes: 404, or 405 with the methods that are allowed.
pub(crate) fn unrouted(method: &Method, path: &str, e: RouteError) -> GwError {
    match e {
        RouteError::NotFound => {
            GwError::grpc(Code::NotFound, format!("no route for {method} {path}"))
        }
        RouteError::MethodNotAllowed(allow) => {
            let mut err = GwError::http(
                StatusCode::METHOD_NOT_ALLOWED,
                Code::Unimplemented,
                format!("{method} is not allowed on {path}; allowed: {allow}"),
            );
            err.allow = Some(allow);
            err
        }
    }
}

/// The time the upstream call may take: the route's timeout, or the client's shorter one.
pub(crate) fn deadline(headers: &HeaderMap, route_timeout: Duration) -> Duration {
    client_deadline(headers).map_or(route_timeout, |d| d.min(route_timeout))
}

/// The deadline a client asked for: `grpc-timeout` (`100m`, `2S`) or `X-Request-Timeout`
/// (`500ms`, `2s`, or seconds).
fn client_deadline(headers: &HeaderMap) -> Option<Duration> {
    let grpc = headers
        .get(crate::grpc::TIMEOUT)
        .and_then(|v| crate::grpc::parse_timeout(v.to_str().ok()?));
    let plain = headers.get(&REQUEST_TIMEOUT).and_then(|v| {
        let s = v.to_str().ok()?.trim();
        humantime::parse_duration(s).ok().or_else(|| {
            // try_: a value past Duration's range (`1e20`) is no deadline of the client's (the
            // route's applies), never a panic.
            s.parse::<f64>()
                .ok()
                .filter(|x| *x > 0.0)
                .and_then(|x| Duration::try_from_secs_f64(x).ok())
        })
    });
    match (grpc, plain) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The answer to a request whose body did not arrive within its deadline: 408.
pub(crate) fn body_too_slow(deadline: Duration) -> GwError {
    GwError::http(
        StatusCode::REQUEST_TIMEOUT,
        Code::DeadlineExceeded,
        format!(
            "the request body did not arrive within {}",
            humantime::format_duration(deadline)
        ),
    )
}

/// Reads the request body up to `max` bytes; a declared oversize body is refused unread.
pub(crate) async fn read_body<B>(headers: &HeaderMap, body: B, max: usize) -> Result<Bytes, GwError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        GwError::http(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::ResourceExhausted,
            format!("request body is over the limit of {max} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(GwError::grpc(
            Code::InvalidArgument,
            format!("could not read the request body: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_and_paths() {
        let mut h = HeaderMap::new();
        h.insert("grpc-timeout", HeaderValue::from_static("300m"));
        h.insert(REQUEST_TIMEOUT, HeaderValue::from_static("0.1"));
        assert_eq!(client_deadline(&h), Some(Duration::from_millis(100)));
        assert_eq!(
            deadline(&h, Duration::from_millis(50)),
            Duration::from_millis(50)
        );
        // Values past what a Duration holds were a remote panic: the route's deadline applies.
        let route = Duration::from_secs(5);
        for huge in ["1e20", "1e300", "18446744073709551616", "inf", "NaN", "-1"] {
            let mut h = HeaderMap::new();
            h.insert(REQUEST_TIMEOUT, HeaderValue::from_static(huge));
            assert_eq!(deadline(&h, route), route, "{huge}");
        }
        for bad in [
            "/rest/../admin",
            "/rest/%2e%2e/x",
            "/a/%2F/b",
            "/a\\b",
            "/./x",
            "/rest/.%2e/admin",
            "/rest/%2e./admin",
            "/rest/%2E%2E/admin",
            "/rest/%2e/admin",
            "/a/%5c/b",
            "/a/%2f",
            "/rest/%2E./admin",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        assert!(check_path("/api/users/42").is_ok());
        assert!(
            check_path("/files/a.b/..x/%2e%2ex").is_ok(),
            "dots inside a name"
        );
    }

    #[test]
    fn http11_requests_need_exactly_one_host() {
        let mut h = HeaderMap::new();
        assert!(check_host(http::Version::HTTP_11, &h).is_err());
        assert!(check_host(http::Version::HTTP_10, &h).is_ok());
        assert!(check_host(http::Version::HTTP_2, &h).is_ok());
        h.insert(header::HOST, HeaderValue::from_static("a"));
        assert!(check_host(http::Version::HTTP_11, &h).is_ok());
        h.append(header::HOST, HeaderValue::from_static("b"));
        let err = check_host(http::Version::HTTP_11, &h).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn request_ids_are_kept_or_made() {
        assert!(new_request_id().to_str().unwrap().len() == 32);
        assert_ne!(new_request_id(), new_request_id());
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc"));
        assert_eq!(request_id(&h), "abc");
        h.insert(REQUEST_ID, HeaderValue::from_str(&"x".repeat(129)).unwrap());
        assert_eq!(request_id(&h).len(), 32);
    }

    proptest::proptest! {
        /// Any X-Request-Timeout or grpc-timeout a client sends: a deadline no longer than the
        /// route's, never a panic.
        #[test]
        fn arbitrary_client_deadlines_never_panic(
            plain in "[0-9a-zA-Z.+-]{0,30}",
            grpc in "[0-9HMSmun]{0,12}",
        ) {
            let route = Duration::from_secs(5);
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&plain) {
                h.insert(REQUEST_TIMEOUT, v);
            }
            if let Ok(v) = HeaderValue::from_str(&grpc) {
                h.insert("grpc-timeout", v);
            }
            proptest::prop_assert!(deadline(&h, route) <= route);
        }
    }
}
