//! What the proxy changes on its way through: the path sent upstream (prefix stripped), the
//! request's headers (hop-by-hop out; `X-Request-Id`, `X-Forwarded-For` and `Forwarded` in) and
//! the response's headers (hop-by-hop out).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use tonic::Code;

use crate::gateway::status::GwError;
use crate::gateway::types::REQUEST_ID;
use crate::net::PeerAddr;

/// The path and query sent upstream: `strip` removed from the front of the path (keeping a
/// leading `/`). Without a prefix to strip, the client's own (already parsed) value is reused.
pub fn upstream_path(uri: &http::Uri, strip: &str) -> Result<PathAndQuery, GwError> {
    let path = uri.path();
    let rest = path.strip_prefix(strip).unwrap_or(path);
    if rest.len() == path.len()
        && let Some(pq) = uri.path_and_query()
    {
        return Ok(pq.clone());
    }
    let query = uri.query();
    let mut pq = String::with_capacity(rest.len() + 2 + query.map_or(0, str::len));
    if !rest.starts_with('/') {
        pq.push('/');
    }
    pq.push_str(rest);
    if let Some(q) = query {
        pq.push('?');
        pq.push_str(q);
    }
    PathAndQuery::try_from(pq).map_err(|e| GwError::grpc(Code::InvalidArgument, e.to_string()))
}

/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

/// The client's `X-Forwarded-For` with the peer's address appended (or the peer's alone).
pub fn forwarded_for(headers: &HeaderMap, peer: &std::net::SocketAddr) -> Option<HeaderValue> {
    let ip = peer.ip();
    match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => header_value(format_args!("{prev}, {ip}")),
        None => header_value(format_args!("{ip}")),
    }
}

/// A header value written from `args` through a stack buffer, so that the text costs no
/// allocation of its own (the value's one copy is all; longer text takes a `String`). None when
/// the text is not a valid header value.
fn header_value(args: std::fmt::Arguments<'_>) -> Option<HeaderValue> {
    use std::io::Write;
    let mut buf = [0u8; 256];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    match cursor.write_fmt(args) {
        Ok(()) => {
            let n = cursor.position() as usize;
            HeaderValue::from_bytes(&buf[..n]).ok()
        }
        Err(_) => HeaderValue::from_str(&args.to_string()).ok(),
    }
}

/// The headers sent upstream: the client's (taken, not copied) without hop-by-hop headers and
/// `Host`, with the request id and the client's address (`X-Forwarded-For`, `Forwarded`).
pub fn request_headers(
    mut headers: HeaderMap,
    peer: Option<&PeerAddr>,
    request_id: &HeaderValue,
) -> HeaderMap {
    let host = headers.remove(header::HOST);
    strip_hop_by_hop(&mut headers);
    headers.insert(REQUEST_ID, request_id.clone());
    if let Some(PeerAddr(peer)) = peer {
        // The client's Host goes in only when it is a valid authority: a quote or a
        // separator in it would inject elements of its own (RFC 7239 §4).
        let host = host.filter(|h| h.to_str().is_ok_and(is_plain_authority));
        let (xff, forwarded) = LAST_PEER
            .with_borrow_mut(|last| {
                // The values depend only on the peer's address and the Host, which a connection's
                // requests share: the worker's last ones are reused instead of formatted again.
                let fresh = match last {
                    Some(l) => l.ip != peer.ip() || l.host != host,
                    None => true,
                };
                if fresh {
                    *last = Some(PeerValues::new(peer, host));
                }
                let l = last.as_ref()?;
                Some((l.xff.clone(), l.forwarded.clone()))
            })
            .unwrap_or_default();
        match headers.get(X_FORWARDED_FOR) {
            Some(_) => {
                if let Some(v) = forwarded_for(&headers, peer) {
                    headers.insert(X_FORWARDED_FOR, v);
                }
            }
            None => {
                if let Some(v) = xff {
                    headers.insert(X_FORWARDED_FOR, v);
                }
            }
        }
        if let Some(v) = forwarded {
            headers.append(header::FORWARDED, v);
        }
    }
    headers
}

thread_local! {
    /// The last peer's forwarding values on this thread (a worker: one per core).
    static LAST_PEER: std::cell::RefCell<Option<PeerValues>> = const { std::cell::RefCell::new(None) };
}

/// A peer's `X-Forwarded-For` (when the client sent none) and `Forwarded` values, for one Host.
struct PeerValues {
    ip: std::net::IpAddr,
    host: Option<HeaderValue>,
    xff: Option<HeaderValue>,
    forwarded: Option<HeaderValue>,
}

impl PeerValues {
    /// `host` is already checked to be a plain authority.
    fn new(peer: &std::net::SocketAddr, host: Option<HeaderValue>) -> PeerValues {
        let ip = peer.ip();
        let h = host.as_ref().and_then(|h| h.to_str().ok());
        let forwarded = match (peer.is_ipv6(), h) {
            (false, None) => header_value(format_args!("for={ip};proto=http")),
            (false, Some(h)) => header_value(format_args!("for={ip};proto=http;host=\"{h}\"")),
            (true, None) => header_value(format_args!("for=\"[{ip}]\";proto=http")),
            (true, Some(h)) => header_value(format_args!("for=\"[{ip}]\";proto=http;host=\"{h}\"")),
        };
        PeerValues {
            ip,
            xff: header_value(format_args!("{ip}")),
            forwarded,
            host,
        }
    }
}

/// Whether `name` is one of the hop-by-hop headers [`strip_hop_by_hop`] removes by name
/// (`Connection` among them, so a message naming others in it is seen too).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Whether `h` is a host[:port] made only of the characters a host name, an IPv4 or a bracketed
/// IPv6 address and a port use: nothing that could close the quoted `host=` value.
fn is_plain_authority(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those named by `Connection`.
/// Most messages carry none: one pass over their few names (compared, not hashed) then spares
/// the nine hashed removals.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_headers_longer_than_the_stack_buffer_are_whole() {
        let peer: std::net::SocketAddr = "[::1]:5000".parse().unwrap();
        let long = vec!["10.0.0.1"; 40].join(", ");
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_str(&long).unwrap());
        let v = forwarded_for(&h, &peer).unwrap();
        assert_eq!(v.to_str().unwrap(), format!("{long}, ::1"));
        assert!(v.len() > 256);
        let sent = request_headers(h, Some(&PeerAddr(peer)), &HeaderValue::from_static("id"));
        assert_eq!(sent[header::FORWARDED], "for=\"[::1]\";proto=http");
    }

    #[test]
    fn upstream_paths_lose_the_prefix_and_keep_the_query() {
        let pq = |uri: &str, strip: &str| {
            upstream_path(&uri.parse().unwrap(), strip)
                .unwrap()
                .to_string()
        };
        assert_eq!(pq("/rest/api/users/1?a=b", "/rest"), "/api/users/1?a=b");
        assert_eq!(pq("/rest", "/rest"), "/");
        assert_eq!(pq("/restapi/x", "/rest"), "/api/x");
        assert_eq!(pq("/api/users/1?x=1", ""), "/api/users/1?x=1");
        assert_eq!(pq("/api/users/1", "/other"), "/api/users/1");
    }

    #[test]
    fn each_hop_by_hop_header_alone_goes_and_the_rest_stay() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            h.insert(header::USER_AGENT, HeaderValue::from_static("t"));
            strip_hop_by_hop(&mut h);
            assert!(!h.contains_key(name), "{name} stayed");
            assert_eq!(h.len(), 3, "{name}: {h:?}");
        }
        // None of them: nothing changes.
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        h.insert("x-connection", HeaderValue::from_static("keep"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn reused_values_follow_the_peer_and_the_host() {
        // Alternating peers and Hosts on one thread: each request gets its own values, whether
        // they were formatted for it or kept from the one before.
        let cases = [
            ("127.0.0.9:5000", Some("a.example"), None),
            ("127.0.0.9:5001", Some("a.example"), None),
            ("127.0.0.9:5001", Some("b.example:8080"), None),
            ("127.0.0.7:5001", Some("b.example:8080"), Some("10.0.0.1")),
            ("[::1]:6000", None, None),
            ("[::1]:6000", Some("a\",for=\"6.6.6.6"), None),
            ("127.0.0.9:5000", Some("a.example"), Some("10.0.0.2")),
            ("127.0.0.9:5000", Some("a.example"), None),
        ];
        for (peer, host, xff) in cases {
            let peer: std::net::SocketAddr = peer.parse().unwrap();
            let mut h = HeaderMap::new();
            if let Some(host) = host {
                h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            }
            if let Some(xff) = xff {
                h.insert(X_FORWARDED_FOR, HeaderValue::from_str(xff).unwrap());
            }
            let out = request_headers(h, Some(&PeerAddr(peer)), &HeaderValue::from_static("r"));
            let ip = peer.ip();
            let want_xff = match xff {
                Some(prev) => format!("{prev}, {ip}"),
                None => ip.to_string(),
            };
            assert_eq!(out[X_FORWARDED_FOR], want_xff.as_str(), "{peer} {host:?}");
            let for_ = match peer.is_ipv6() {
                true => format!("for=\"[{ip}]\";proto=http"),
                false => format!("for={ip};proto=http"),
            };
            let want = match host.filter(|h| is_plain_authority(h)) {
                Some(h) => format!("{for_};host=\"{h}\""),
                None => for_,
            };
            assert_eq!(out[header::FORWARDED], want.as_str(), "{peer} {host:?}");
        }
    }

    #[test]
    fn the_client_is_named_upstream() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("gw.example"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        let peer = PeerAddr("127.0.0.9:5000".parse().unwrap());
        let out = request_headers(h, Some(&peer), &HeaderValue::from_static("rid"));
        assert_eq!(out["x-forwarded-for"], "10.0.0.1, 127.0.0.9");
        assert_eq!(
            out[header::FORWARDED],
            "for=127.0.0.9;proto=http;host=\"gw.example\""
        );
        assert_eq!(out[REQUEST_ID], "rid");
        assert!(!out.contains_key(header::HOST) && !out.contains_key(header::CONNECTION));
        // A Host that would inject its own elements is left out.
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a\",for=\"6.6.6.6"));
        let out = request_headers(h, Some(&peer), &HeaderValue::from_static("rid"));
        assert_eq!(out[header::FORWARDED], "for=127.0.0.9;proto=http");
    }
}
