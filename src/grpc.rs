//! gRPC's wire vocabulary, written once for the gateway, the load generator and the reports:
//! status code names, `grpc-status` / `grpc-message`, `grpc-timeout` and the 5-byte message
//! frame (the gRPC over HTTP/2 spec).

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use thiserror::Error;

/// Header (or trailer) carrying the status code.
pub const STATUS: &str = "grpc-status";
/// Header (or trailer) carrying the percent-encoded status message.
pub const MESSAGE: &str = "grpc-message";
/// Header carrying the caller's deadline.
pub const TIMEOUT: &str = "grpc-timeout";
/// Length of a message frame's prefix: compressed flag and big-endian length.
pub const FRAME_PREFIX: usize = 5;
/// The status code DEADLINE_EXCEEDED.
pub const DEADLINE_EXCEEDED: i32 = 4;

/// The canonical name of status code `code` (as grpc-gateway and Envoy print it).
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN_CODE",
    }
}

/// Base64 as gRPC and the proto3 JSON mapping write it: standard or URL-safe alphabet, padded
/// or not (`grpc-status-details-bin`, bytes in a path or query).
pub fn decode_base64(raw: &[u8]) -> Option<bytes::Bytes> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(raw).ok())
        .map(bytes::Bytes::from)
}

/// The number of a code name (`NOT_FOUND` → 5); 2 (UNKNOWN) for a name that is none.
pub fn code_number(name: &str) -> i32 {
    (0..=16).find(|c| code_name(*c) == name).unwrap_or(2)
}

/// The numeric `grpc-status` of a header or trailer map, if present and a number.
pub fn status_code(headers: &HeaderMap) -> Option<i32> {
    headers.get(STATUS)?.to_str().ok()?.trim().parse().ok()
}

/// The status message (`grpc-message`, percent-decoded), empty when absent.
pub fn status_message(headers: &HeaderMap) -> String {
    headers
        .get(MESSAGE)
        .map(|v| {
            percent_encoding::percent_decode(v.as_bytes())
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default()
}

/// Parses a `grpc-timeout` value: 1 to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_timeout(s: &str) -> Option<Duration> {
    let (&unit, digits) = s.as_bytes().split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // At most 8 digits: the largest value, in hours, is far from overflowing.
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The `grpc-timeout` value for `d`: microseconds while they fit in 8 digits, else
/// milliseconds (capped at 8 digits, about 27 hours), so it never says more than `d`.
pub fn encode_timeout(d: Duration) -> HeaderValue {
    // Written on the stack: one allocation (the value's own), not two (a `String` first).
    let us = d.as_micros();
    let (n, unit) = match us < 100_000_000 {
        true => (us, b'u'),
        false => (d.as_millis().min(99_999_999), b'm'),
    };
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(n).as_bytes();
    let mut v = [0u8; 9];
    v[..digits.len()].copy_from_slice(digits);
    v[digits.len()] = unit;
    HeaderValue::from_bytes(&v[..=digits.len()])
        .expect("digits and a unit are a valid header value")
}

/// `msg` with the message prefix (not compressed).
pub fn frame(msg: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(FRAME_PREFIX + msg.len());
    out.put_u8(0);
    out.put_u32(u32::try_from(msg.len()).unwrap_or(u32::MAX));
    out.put_slice(msg);
    out.freeze()
}

/// A response body that does not frame uncompressed messages of a bounded size.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The compressed flag is set although no compression was offered.
    #[error("the upstream sent a compressed message (none was offered)")]
    Compressed,
    /// A message's prefix announces more than the limit.
    #[error("response message framed as {framed} bytes, over the limit of {max}")]
    TooLarge {
        /// Length in the prefix.
        framed: usize,
        /// The limit.
        max: usize,
    },
    /// The body ended inside a message.
    #[error("the upstream's answer ended inside a message ({left} bytes left over)")]
    Truncated {
        /// Bytes of the unfinished message.
        left: usize,
    },
}

/// Takes the next whole message off the front of `buf` (the body as it arrives), if one is
/// there; a message announced over `max` bytes is an error as soon as its prefix is in, so the
/// buffer never holds more than one message and one chunk.
pub fn next_message(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < FRAME_PREFIX {
        return Ok(None);
    }
    if buf[0] != 0 {
        return Err(FrameError::Compressed);
    }
    let framed = (&buf[1..FRAME_PREFIX]).get_u32() as usize;
    if framed > max {
        return Err(FrameError::TooLarge { framed, max });
    }
    if buf.len() - FRAME_PREFIX < framed {
        return Ok(None);
    }
    buf.advance(FRAME_PREFIX);
    Ok(Some(buf.split_to(framed).freeze()))
}

/// What is left in `buf` when the body ends: nothing, or an unfinished message.
pub fn finished(buf: &BytesMut) -> Result<(), FrameError> {
    match buf.len() {
        0 => Ok(()),
        left => Err(FrameError::Truncated { left }),
    }
}

/// Finds where messages end in a body as it arrives, without keeping them: the load
/// generator counts and times a stream's messages, and needs none of their bytes. Holds at
/// most one 5-byte prefix.
#[derive(Debug, Default, Clone)]
pub struct MessageEnds {
    prefix: [u8; FRAME_PREFIX],
    /// Bytes of the current prefix seen so far.
    have: usize,
    /// Bytes of the current message still to come (after a whole prefix).
    remaining: u64,
    in_message: bool,
}

impl MessageEnds {
    /// Walks `chunk`, calling `on_end` once for each message that ends in it.
    pub fn feed(&mut self, mut chunk: &[u8], mut on_end: impl FnMut()) {
        loop {
            if self.in_message {
                let take = self
                    .remaining
                    .min(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
                self.remaining -= take;
                // `take` is at most `chunk.len()`, so it fits.
                chunk = &chunk[usize::try_from(take).unwrap_or(chunk.len())..];
                if self.remaining > 0 {
                    return;
                }
                self.in_message = false;
                on_end();
            }
            if chunk.is_empty() {
                return;
            }
            let take = (FRAME_PREFIX - self.have).min(chunk.len());
            self.prefix[self.have..self.have + take].copy_from_slice(&chunk[..take]);
            self.have += take;
            chunk = &chunk[take..];
            if self.have < FRAME_PREFIX {
                return;
            }
            self.have = 0;
            self.in_message = true;
            self.remaining = u64::from(u32::from_be_bytes([
                self.prefix[1],
                self.prefix[2],
                self.prefix[3],
                self.prefix[4],
            ]));
        }
    }

    /// Whether the body may end here (not inside a prefix or a message).
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && !self.in_message
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timeouts_parse_by_unit_and_refuse_the_rest() {
        assert_eq!(parse_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        for bad in ["123456789S", "x", "", "m", "+5m", "5", "-1S", "1.5S", "5s"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn frames_round_trip_and_bad_frames_are_named() {
        let f = frame(b"hello");
        assert_eq!(&f[..], b"\0\0\0\0\x05hello");
        let mut buf = BytesMut::from(&f[..3]);
        assert_eq!(next_message(&mut buf, 10), Ok(None));
        assert_eq!(finished(&buf), Err(FrameError::Truncated { left: 3 }));
        buf.extend_from_slice(&f[3..]);
        assert_eq!(
            next_message(&mut buf, 10),
            Ok(Some(Bytes::from_static(b"hello")))
        );
        assert_eq!(finished(&buf), Ok(()));
        assert_eq!(
            next_message(&mut BytesMut::from(&b"\x01\0\0\0\0"[..]), 10),
            Err(FrameError::Compressed)
        );
        // Refused from its prefix alone, before the message arrives.
        assert_eq!(
            next_message(&mut BytesMut::from(&b"\0\0\0\0\x0b"[..]), 10),
            Err(FrameError::TooLarge {
                framed: 11,
                max: 10
            })
        );
        let mut h = HeaderMap::new();
        h.insert(STATUS, HeaderValue::from_static("5"));
        h.insert(MESSAGE, HeaderValue::from_static("no%20user%2042"));
        assert_eq!(status_code(&h), Some(5));
        assert_eq!(status_message(&h), "no user 42");
        assert_eq!(code_name(5), "NOT_FOUND");
    }

    proptest! {
        /// What we send parses back to at most the deadline we meant, and loses at most a
        /// microsecond below 100 s (a millisecond above).
        #[test]
        fn encoded_timeouts_parse_back(us in 0u64..200_000_000_000) {
            let d = Duration::from_micros(us);
            let sent = encode_timeout(d);
            let back = parse_timeout(sent.to_str().unwrap()).unwrap();
            prop_assert!(back <= d);
            let cap = Duration::from_millis(99_999_999);
            let tolerance = if d < Duration::from_secs(100) { Duration::ZERO } else { Duration::from_millis(1) };
            prop_assert!(d.min(cap) - back <= tolerance, "{d:?} -> {sent:?} -> {back:?}");
        }

        /// Any string: no panic, and a value only for digits and a unit.
        #[test]
        fn arbitrary_timeouts_never_panic(s in ".{0,12}") {
            if let Some(d) = parse_timeout(&s) {
                let b = s.as_bytes();
                prop_assert!(b.len() >= 2 && b[..b.len() - 1].iter().all(u8::is_ascii_digit));
                prop_assert!(d <= Duration::from_secs(99_999_999 * 3600));
            }
        }

        /// Message ends are found at the same places whatever the cuts: once per message, each
        /// in the chunk holding the message's last byte (its prefix's, for an empty message).
        #[test]
        fn message_ends_are_found_whatever_the_cuts(
            msgs in proptest::collection::vec(0usize..40, 0..6),
            cuts in proptest::collection::vec(1usize..17, 0..40),
        ) {
            let wire: Vec<u8> = msgs.iter().flat_map(|n| frame(&vec![7u8; *n]).to_vec()).collect();
            let mut last_bytes = Vec::new();
            let mut end = 0;
            for n in &msgs {
                end += FRAME_PREFIX + n;
                last_bytes.push(end - 1);
            }
            let mut ends = MessageEnds::default();
            let mut found = Vec::new();
            let (mut at, mut cut) = (0, cuts.iter().cycle());
            while at < wire.len() {
                let n = cut.next().copied().unwrap_or(wire.len()).min(wire.len() - at);
                let mut here = 0;
                ends.feed(&wire[at..at + n], || here += 1);
                for _ in 0..here {
                    found.push((at, at + n));
                }
                at += n;
            }
            prop_assert!(ends.at_boundary());
            prop_assert_eq!(found.len(), msgs.len());
            for (last, (from, to)) in last_bytes.iter().zip(&found) {
                prop_assert!(from <= last && last < to, "{last} not in {from}..{to}");
            }
            // A body cut inside a message is not at a boundary.
            if let Some(cut) = wire.len().checked_sub(1).filter(|_| !msgs.is_empty()) {
                let mut part = MessageEnds::default();
                part.feed(&wire[..cut], || {});
                prop_assert!(!part.at_boundary());
            }
        }

        /// Messages framed one after another and arriving cut at any points come back whole,
        /// in order, and nothing is left over.
        #[test]
        fn messages_arriving_in_any_pieces_come_back_whole(
            msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..6),
            cuts in proptest::collection::vec(1usize..17, 0..40),
        ) {
            let wire: Vec<u8> = msgs.iter().flat_map(|m| frame(m).to_vec()).collect();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let (mut at, mut cut) = (0, cuts.iter().cycle());
            while at < wire.len() {
                let n = cut.next().copied().unwrap_or(wire.len()).min(wire.len() - at);
                buf.extend_from_slice(&wire[at..at + n]);
                at += n;
                while let Some(m) = next_message(&mut buf, 64).unwrap() {
                    got.push(m.to_vec());
                }
            }
            prop_assert_eq!(got, msgs);
            prop_assert_eq!(finished(&buf), Ok(()));
        }
    }
}
