//! HTTP/1.1 for the two lean clients, the load generator's (`load::h1`, which skips bodies) and
//! the gateway's proxy client (`gateway::h1`, which forwards them): response framing (RFC 9112
//! §6.3) here — how the body ends, walked in place in the read buffer without copying — and the
//! client core both drive in [`client`] (connect, write, parse the head, the reuse rule); and
//! request heads for a lean server path in [`server`].

pub mod client;
pub mod parked;
pub mod server;

/// A `Content-Length` value: digits only (no sign, no list, at most 19, surrounding blanks
/// allowed), as every reader here takes it; anything else cannot be framed safely.
pub fn content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// A header name from the wire, without an allocation for the usual custom ones: a standard
/// name costs none (`http`'s own table), and an `x-…` name is taken from this thread's last
/// few (a service answers with the same few on every response: each was one allocation a
/// header a request).
pub fn header_name(name: &[u8]) -> Result<http::HeaderName, http::header::InvalidHeaderName> {
    use std::cell::RefCell;
    const KEPT: usize = 8;
    thread_local! {
        static SEEN: RefCell<Vec<http::HeaderName>> = const { RefCell::new(Vec::new()) };
    }
    if !(name.len() > 2 && name[..2].eq_ignore_ascii_case(b"x-")) {
        return http::HeaderName::from_bytes(name);
    }
    SEEN.with_borrow_mut(|seen| {
        let found = seen.iter().find(|n| {
            n.as_str().len() == name.len() && n.as_str().as_bytes().eq_ignore_ascii_case(name)
        });
        if let Some(n) = found {
            return Ok(n.clone());
        }
        let n = http::HeaderName::from_bytes(name)?;
        if seen.len() == KEPT {
            seen.remove(0);
        }
        seen.push(n.clone());
        Ok(n)
    })
}

use bytes::{Buf, BytesMut};

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 64 * 1024;

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes.
    Length(u64),
    /// Chunked transfer coding; where the decoder is.
    Chunked(Chunk),
    /// When the connection closes.
    UntilClose,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this much left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailers,
}

/// What [`Framing::step`] found at the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The first this-many bytes of the buffer are body data: the caller takes or skips them.
    Data(usize),
    /// More bytes are needed.
    NeedMore,
    /// The body is complete.
    Done,
}

/// The head of a response, as far as framing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// How the body ends; None when there is no body (HEAD, 1xx, 204, 304, length 0).
    pub framing: Option<Framing>,
    /// Whether the connection can carry another request afterwards.
    pub keep_alive: bool,
}

/// The framing of a parsed response head. `head_request`: the request was HEAD.
pub fn head(resp: &httparse::Response<'_, '_>, head_request: bool) -> Result<Head, &'static str> {
    let code = resp.code.unwrap_or(0);
    let http10 = resp.version == Some(0);
    let mut length: Option<u64> = None;
    let mut transfer_coded = false;
    let mut chunked = false;
    let mut close = http10;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = content_length(h.value).ok_or("bad Content-Length")?;
            if length.is_some() {
                return Err("several Content-Length headers");
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_coded = true;
            // Chunked only counts as the final coding.
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && http10 {
                    close = false;
                }
            }
        }
    }
    if transfer_coded && length.is_some() {
        // A response that says both is how responses are smuggled (RFC 9112 §6.3).
        return Err("both Content-Length and Transfer-Encoding");
    }
    let framing = if head_request || (100..200).contains(&code) || code == 204 || code == 304 {
        None
    } else if chunked {
        Some(Framing::Chunked(Chunk::Size))
    } else if transfer_coded {
        Some(Framing::UntilClose)
    } else {
        match length {
            Some(0) => None,
            Some(n) => Some(Framing::Length(n)),
            None => Some(Framing::UntilClose),
        }
    };
    Ok(Head {
        framing,
        keep_alive: !close && framing != Some(Framing::UntilClose),
    })
}

impl Framing {
    /// Walks the body at the front of `buf`: chunk-size lines, CRLFs and trailers are consumed
    /// here; data is reported as [`Step::Data`] for the caller to take or skip. `eof`: nothing
    /// more will arrive.
    pub fn step(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Step, &'static str> {
        match self {
            Framing::Length(0) => Ok(Step::Done),
            Framing::Length(n) => {
                if buf.is_empty() {
                    return if eof {
                        Err("the body ended before its Content-Length")
                    } else {
                        Ok(Step::NeedMore)
                    };
                }
                let take = (*n).min(buf.len() as u64);
                *n -= take;
                Ok(Step::Data(take as usize))
            }
            Framing::UntilClose => Ok(if !buf.is_empty() {
                Step::Data(buf.len())
            } else if eof {
                Step::Done
            } else {
                Step::NeedMore
            }),
            Framing::Chunked(state) => {
                let step = state.step(buf, eof)?;
                if step == Step::Done {
                    *self = Framing::Length(0);
                }
                Ok(step)
            }
        }
    }
}

impl Chunk {
    /// Walks a chunked body: size lines and CRLFs are consumed, trailer lines skipped; data is
    /// reported for the caller. Done after the empty line that ends the trailers.
    fn step(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Step, &'static str> {
        let need_more = if eof {
            Err("the chunked body ended early")
        } else {
            Ok(Step::NeedMore)
        };
        loop {
            match *self {
                Chunk::Size | Chunk::Trailers => {
                    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                        if buf.len() > MAX_LINE {
                            return Err("chunk line too long");
                        }
                        return need_more;
                    };
                    if *self == Chunk::Trailers {
                        buf.advance(end + 2);
                        if end == 0 {
                            return Ok(Step::Done);
                        }
                        continue; // a trailer line: skipped
                    }
                    let hex = buf[..end].split(|&b| b == b';').next().unwrap_or_default();
                    let size = std::str::from_utf8(hex)
                        .ok()
                        .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                        .ok_or("bad chunk size")?;
                    buf.advance(end + 2);
                    *self = if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Data(n) => {
                    if buf.is_empty() {
                        return need_more;
                    }
                    let take = n.min(buf.len() as u64);
                    *self = if take == n {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(n - take)
                    };
                    return Ok(Step::Data(take as usize));
                }
                Chunk::DataEnd => {
                    if buf.len() < 2 {
                        return need_more;
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("chunk not followed by CRLF");
                    }
                    buf.advance(2);
                    *self = Chunk::Size;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_from_the_cache_are_the_names_asked_for() {
        assert_eq!(
            header_name(b"Content-Type").unwrap(),
            http::header::CONTENT_TYPE
        );
        // More distinct x- names than are kept, each asked twice in different cases.
        for i in 0..20 {
            let lower = format!("x-name-{i}");
            let upper = lower.to_ascii_uppercase();
            assert_eq!(header_name(lower.as_bytes()).unwrap().as_str(), lower);
            assert_eq!(header_name(upper.as_bytes()).unwrap().as_str(), lower);
        }
        assert_eq!(header_name(b"X-Name-3").unwrap().as_str(), "x-name-3");
        assert!(header_name(b"x-bad name").is_err());
    }

    /// Feeds `wire` `step` bytes at a time; returns the body.
    fn decode(framing: Framing, wire: &[u8], step: usize) -> Result<Vec<u8>, &'static str> {
        let mut f = framing;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            let eof = fed >= wire.len();
            match f.step(&mut buf, eof)? {
                Step::Data(n) => out.extend_from_slice(&buf.split_to(n)),
                Step::Done => return Ok(out),
                Step::NeedMore => {
                    let end = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn bodies_decode_whatever_the_read_sizes() {
        let chunked = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for step in [1, 2, 3, 7, 100] {
            assert_eq!(
                decode(Framing::Chunked(Chunk::Size), chunked, step).unwrap(),
                b"hello, world",
                "read size {step}"
            );
            assert_eq!(
                decode(Framing::Length(5), b"hello", step).unwrap(),
                b"hello"
            );
            assert_eq!(decode(Framing::UntilClose, b"abc", step).unwrap(), b"abc");
        }
        assert!(decode(Framing::Length(10), b"short", 3).is_err());
        assert!(decode(Framing::Chunked(Chunk::Size), b"5\r\nhel", 2).is_err());
        assert!(decode(Framing::Chunked(Chunk::Size), b"zz\r\n", 2).is_err());
    }

    fn parse(wire: &[u8], head_request: bool) -> Result<Head, &'static str> {
        let mut raw = [httparse::EMPTY_HEADER; 16];
        let mut r = httparse::Response::new(&mut raw);
        assert!(r.parse(wire).unwrap().is_complete());
        head(&r, head_request)
    }

    #[test]
    fn heads_say_how_the_body_ends() {
        let h = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", false).unwrap();
        assert_eq!((h.framing, h.keep_alive), (Some(Framing::Length(2)), true));
        let h = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", true).unwrap();
        assert_eq!(h.framing, None);
        let h = parse(b"HTTP/1.0 200 OK\r\n\r\n", false).unwrap();
        assert_eq!(
            (h.framing, h.keep_alive),
            (Some(Framing::UntilClose), false)
        );
        let h = parse(
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(h.keep_alive);
        let h = parse(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(
            (h.framing, h.keep_alive),
            (Some(Framing::Chunked(Chunk::Size)), false)
        );
        let h = parse(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(h.framing, Some(Framing::UntilClose));
        for no_body in [
            &b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n"[..],
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        ] {
            assert_eq!(parse(no_body, false).unwrap().framing, None);
        }
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", false).is_err());
        // What cannot be framed safely is refused, never guessed at (response smuggling).
        for unsafe_head in [
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 9\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: identity\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
        ] {
            assert!(
                parse(unsafe_head, false).is_err(),
                "{}",
                String::from_utf8_lossy(unsafe_head)
            );
        }
        assert!(
            parse(
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                false
            )
            .is_err()
        );
    }
}
