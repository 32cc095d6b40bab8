//! Request heads for a lean HTTP/1.1 server path (issue #30's first wall): a head parsed in
//! place from the connection's read buffer (httparse), every rule that keeps a request from
//! being read two ways applied before anything else sees it, and its framing — how its body
//! ends — decided once. Nothing here allocates: the head is spans into the buffer, kept in a
//! per-connection [`Spans`] table whose room is reused.
//!
//! Stricter than hyper wherever the RFC lets a server refuse (RFC 9112 §2.2, §3, §5, §6.1, §6.3),
//! never laxer, so that a head this accepts is one hyper would accept too (property-tested
//! against hyper's own server in `tests`):
//! - lines end in CRLF; a bare LF or CR anywhere in the head is a 400;
//! - obs-fold (a header line starting with a space or tab) is a 400 (httparse's default);
//! - `Transfer-Encoding` with `Content-Length` is a 400 (the smuggling pair), as is any
//!   coding but exactly `chunked` (one header, one token), and any on HTTP/1.0;
//! - `Content-Length` is digits only, at most 19, and once (a repeat is a 400 even when equal);
//! - a request line over [`Limits::line`] is a 414, a head over [`Limits::head`] or with over
//!   [`MAX_HEADERS`] fields a 431;
//! - the target is origin-form (`/…`) or `*`; absolute-form and authority-form are handed to
//!   the general server (`Parsed::Other`), which is also where `Upgrade`, `Expect` and the
//!   HTTP/2 preface (h2c with prior knowledge) go.

/// Most header fields a head may have (more is a 431).
pub const MAX_HEADERS: usize = 100;

/// Size limits of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line, bytes.
    pub line: usize,
    /// Longest head (request line and fields), bytes.
    pub head: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            line: 8 * 1024,
            head: 64 * 1024,
        }
    }
}

/// Why a head is refused: the status to answer before closing, and a sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 414 or 431.
    pub status: u16,
    /// What was wrong.
    pub reason: &'static str,
}

const fn refuse(status: u16, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

/// How a request's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (no `Content-Length`, or 0, and not chunked).
    None,
    /// This many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// A byte range of the buffer the head was parsed from.
pub type Span = std::ops::Range<usize>;

/// The spans of a head's fields, reused from one request to the next (its room stays).
#[derive(Debug, Default)]
pub struct Spans {
    /// (name, value) per field, in order.
    pub fields: Vec<(Span, Span)>,
}

/// A parsed head, as spans into the buffer it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Bytes of the head, blank line included: the body (if any) starts here.
    pub len: usize,
    /// The method.
    pub method: Span,
    /// The request target (origin-form, or `*`).
    pub target: Span,
    /// HTTP/1.1 (else 1.0).
    pub http11: bool,
    /// How its body ends.
    pub body: BodyFraming,
    /// Whether the connection may carry another request after this one's answer.
    pub keep_alive: bool,
    /// How many `Host` fields it has (HTTP/1.1 needs exactly one: the gateway's intake says).
    pub hosts: usize,
}

/// What the front of a buffer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole head yet (and within the limits so far).
    Partial,
    /// A head this path serves.
    Head(Head),
    /// A valid head this path leaves to the general server (an upgrade, `Expect`, a target
    /// that is not origin-form): the connection goes there, its bytes with it.
    Other,
}

/// Parses the head at the front of `buf`; the fields' spans go to `spans` (cleared first).
pub fn parse(buf: &[u8], limits: &Limits, spans: &mut Spans) -> Result<Parsed, Refusal> {
    spans.fields.clear();
    // HTTP/2 with prior knowledge (h2c) opens with its preface: the general server's.
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if buf.len() < PREFACE.len() && PREFACE.starts_with(buf) && !buf.is_empty() {
        return Ok(Parsed::Partial);
    }
    if buf.starts_with(PREFACE) {
        return Ok(Parsed::Other);
    }
    let Some(end) = head_end(buf) else {
        return partial(buf, limits);
    };
    if end > limits.head {
        return Err(refuse(431, "the request head is over the limit"));
    }
    let head = &buf[..end];
    // Every LF must follow a CR and every CR precede an LF: a bare one is read as a line end
    // by some parsers and not by others.
    for (i, &b) in head.iter().enumerate() {
        let bare = match b {
            b'\n' => i == 0 || head[i - 1] != b'\r',
            b'\r' => head.get(i + 1) != Some(&b'\n'),
            _ => false,
        };
        if bare {
            return Err(refuse(400, "a bare CR or LF in the request head"));
        }
    }
    let line = head.iter().position(|&b| b == b'\r').unwrap_or(head.len());
    if line > limits.line {
        return Err(refuse(414, "the request line is over the limit"));
    }
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == end => {}
        Ok(_) => return Err(refuse(400, "a malformed request head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refuse(431, "too many header fields"));
        }
        Err(_) => return Err(refuse(400, "a malformed request head")),
    }
    let base = head.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(refuse(400, "a malformed request line"));
    };
    let http11 = version == 1;
    let mut framing = Framing::default();
    for h in req.headers.iter() {
        framing.field(h.name.as_bytes(), h.value, http11)?;
        spans.fields.push((span(h.name.as_bytes()), span(h.value)));
    }
    let body = framing.body(http11)?;
    if framing.other || !(target.starts_with('/') || (target == "*" && method == "OPTIONS")) {
        return Ok(Parsed::Other);
    }
    Ok(Parsed::Head(Head {
        len: end,
        method: span(method.as_bytes()),
        target: span(target.as_bytes()),
        http11,
        body,
        keep_alive: framing.keep_alive(http11),
        hosts: framing.hosts,
    }))
}

/// Where the blank line ending the head is (the index after it).
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// A head not complete yet: refused as soon as it cannot fit the limits.
fn partial(buf: &[u8], limits: &Limits) -> Result<Parsed, Refusal> {
    let line_done = buf.contains(&b'\n');
    if !line_done && buf.len() > limits.line {
        return Err(refuse(414, "the request line is over the limit"));
    }
    if buf.len() >= limits.head {
        return Err(refuse(431, "the request head is over the limit"));
    }
    // A bare LF before the end is already a refusal; refusing it now saves waiting.
    if buf
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || buf[i - 1] != b'\r'))
    {
        return Err(refuse(400, "a bare CR or LF in the request head"));
    }
    Ok(Parsed::Partial)
}

/// What the fields say about framing and the connection.
#[derive(Debug, Default)]
struct Framing {
    length: Option<u64>,
    transfer_encodings: usize,
    chunked: bool,
    close: bool,
    keep_alive: bool,
    hosts: usize,
    /// `Upgrade` or `Expect`: for the general server.
    other: bool,
}

impl Framing {
    fn field(&mut self, name: &[u8], value: &[u8], http11: bool) -> Result<(), Refusal> {
        if name.eq_ignore_ascii_case(b"content-length") {
            if self.length.is_some() {
                return Err(refuse(400, "several Content-Length fields"));
            }
            let n = super::content_length(value)
                .ok_or(refuse(400, "a Content-Length that is not a number"))?;
            self.length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if !http11 {
                return Err(refuse(400, "Transfer-Encoding on HTTP/1.0"));
            }
            self.transfer_encodings += 1;
            self.chunked = value.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    self.other = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            self.hosts += 1;
        } else if name.eq_ignore_ascii_case(b"upgrade") || name.eq_ignore_ascii_case(b"expect") {
            self.other = true;
        }
        Ok(())
    }

    fn body(&self, http11: bool) -> Result<BodyFraming, Refusal> {
        match (self.transfer_encodings, self.length) {
            (0, None | Some(0)) => Ok(BodyFraming::None),
            (0, Some(n)) => Ok(BodyFraming::Length(n)),
            (_, Some(_)) => Err(refuse(
                400,
                "both Content-Length and Transfer-Encoding (a smuggling attempt)",
            )),
            (1, None) if self.chunked && http11 => Ok(BodyFraming::Chunked),
            _ => Err(refuse(
                400,
                "a Transfer-Encoding other than exactly one chunked",
            )),
        }
    }

    fn keep_alive(&self, http11: bool) -> bool {
        !self.close && (http11 || self.keep_alive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parsed(raw: &[u8]) -> Result<Parsed, Refusal> {
        parse(raw, &Limits::default(), &mut Spans::default())
    }

    fn status(raw: &[u8]) -> u16 {
        match parsed(raw) {
            Ok(Parsed::Head(_)) => 200,
            Ok(Parsed::Other) => 1,
            Ok(Parsed::Partial) => 0,
            Err(r) => r.status,
        }
    }

    #[test]
    fn a_plain_get_is_spans_into_the_buffer() {
        let raw = b"GET /api/users/7?x=1 HTTP/1.1\r\nHost: a\r\nX-Y: z\r\n\r\nrest";
        let mut spans = Spans::default();
        let Ok(Parsed::Head(h)) = parse(raw, &Limits::default(), &mut spans) else {
            panic!()
        };
        assert_eq!(&raw[h.method.clone()], b"GET");
        assert_eq!(&raw[h.target.clone()], b"/api/users/7?x=1");
        assert_eq!(h.len, raw.len() - 4);
        assert_eq!(
            (h.http11, h.body, h.keep_alive, h.hosts),
            (true, BodyFraming::None, true, 1)
        );
        let names: Vec<&[u8]> = spans.fields.iter().map(|(n, _)| &raw[n.clone()]).collect();
        assert_eq!(names, [&b"Host"[..], b"X-Y"]);
        assert_eq!(&raw[spans.fields[1].1.clone()], b"z");
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let cases: &[(&[u8], u16)] = &[
            // CL.TE and TE.CL
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400),
            // obfuscated Transfer-Encoding
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            // Content-Length: twice, negative, not a number, a list
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1e3\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            // obs-fold, bare LF, bare CR
            (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400),
            // request line and head limits
            (&[b"GET /".as_slice(), &[b'a'; 9000], b" HTTP/1.1\r\nHost: a\r\n\r\n"].concat(), 414),
            // a good chunked POST, and what the general server takes
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 200),
            (b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 1),
            (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 1),
            (b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", 1),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 1),
            (b"PRI * HTTP/2", 0),
        ];
        for (raw, want) in cases {
            assert_eq!(status(raw), *want, "{:?}", String::from_utf8_lossy(raw));
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            431
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "v".repeat(70_000));
        assert_eq!(
            status(big.as_bytes()),
            431,
            "refused before its end arrives"
        );
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a\r\n"), 0);
    }

    #[test]
    fn framing_and_keep_alive_follow_the_fields() {
        let head = |raw: &[u8]| match parsed(raw) {
            Ok(Parsed::Head(h)) => h,
            other => panic!("{other:?}"),
        };
        let h = head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(h.body, BodyFraming::Length(12));
        let h = head(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!h.keep_alive && !h.http11 && h.hosts == 0);
        let h = head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(h.keep_alive);
    }

    /// What hyper's HTTP/1.1 server makes of `raw`: the first request's method and target,
    /// or None when it refuses it.
    fn hyper_reads(raw: &[u8]) -> Option<(String, String)> {
        use tokio::io::AsyncWriteExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let _ = tx.send((req.method().to_string(), req.uri().to_string()));
                    async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::new()),
                        ))
                    }
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(server), service);
            client.write_all(raw).await.unwrap();
            client.shutdown().await.unwrap();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
            rx.try_recv().ok()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// However the bytes arrive, the head is the same once it is all there, and nothing
        /// before is refused that the whole is not.
        #[test]
        fn any_split_parses_alike(cut in 0usize..200, body in "[a-z]{0,20}") {
            let raw = format!(
                "POST /x/{body} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nA: b\r\n\r\n{body}",
                body.len()
            );
            let raw = raw.as_bytes();
            let whole = parsed(raw);
            let cut = cut.min(raw.len());
            match parsed(&raw[..cut]) {
                Ok(Parsed::Partial) => {}
                got => prop_assert_eq!(got, whole),
            }
        }

        /// Arbitrary bytes never panic, and a refusal is one of the statuses it names.
        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Err(r) = parsed(&raw) {
                prop_assert!([400, 414, 431].contains(&r.status));
            }
        }

        /// A head accepted here is accepted by hyper's own server too, with the same method
        /// and target: heads built from a good one with hostile bytes spliced in.
        #[test]
        fn what_is_accepted_hyper_accepts(
            at in 0usize..60,
            splice in prop_oneof![
                Just("\n"), Just("\r"), Just(" "), Just("\t"), Just(":"), Just("\r\n"),
                Just("\r\n "), Just("\u{0}"), Just("é"), Just("Transfer-Encoding: chunked\r\n"),
                Just("Content-Length: 2\r\n"), Just("Host: b\r\n"), Just("/"), Just("%"),
            ],
        ) {
            let good = "GET /a/b?c=d HTTP/1.1\r\nHost: a\r\nX-Y: z\r\n\r\n";
            let at = (0..=at.min(good.len())).rev().find(|i| good.is_char_boundary(*i)).unwrap_or(0);
            let raw = format!("{}{splice}{}", &good[..at], &good[at..]);
            if let Ok(Parsed::Head(h)) = parsed(raw.as_bytes()) {
                let seen = hyper_reads(raw.as_bytes());
                let want = (
                    String::from_utf8_lossy(&raw.as_bytes()[h.method.clone()]).into_owned(),
                    String::from_utf8_lossy(&raw.as_bytes()[h.target.clone()]).into_owned(),
                );
                prop_assert_eq!(seen, Some(want), "{:?}", raw);
            }
        }

        /// Heads built from hostile pieces: what is accepted is framed one way only.
        #[test]
        fn accepted_heads_have_one_framing(
            pieces in proptest::collection::vec(prop_oneof![
                Just("Content-Length: 3\r\n"),
                Just("Content-Length: 4\r\n"),
                Just("Transfer-Encoding: chunked\r\n"),
                Just("Transfer-Encoding: gzip\r\n"),
                Just("Host: a\r\n"),
                Just("Connection: close\r\n"),
                Just("X: y\r\n"),
            ], 0..6)
        ) {
            let raw = format!("POST / HTTP/1.1\r\n{}\r\n", pieces.concat());
            if let Ok(Parsed::Head(h)) = parsed(raw.as_bytes()) {
                let cl = pieces.iter().filter(|p| p.starts_with("Content-Length")).count();
                let te = pieces.iter().filter(|p| p.starts_with("Transfer")).count();
                prop_assert!(cl <= 1 && te <= 1 && !(cl == 1 && te == 1));
                prop_assert_eq!(h.body == BodyFraming::Chunked, te == 1);
            }
        }
    }
}
