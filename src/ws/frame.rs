//! RFC 6455 frames as the gateway's proxy sees them: it forwards a direction's bytes unchanged
//! (masked frames stay masked, so nothing is unmasked or re-masked), and this scanner walks
//! them header by header to count messages and bytes, hold each to the limits, and notice a
//! close frame's code. It keeps at most one header (14 bytes) and never the payload.
//!
//! Checked per frame: reserved bits clear (no extension is negotiated through the proxy),
//! known opcode, the mask as the sender's role requires, control frames final and at most 125
//! bytes, continuations only inside a message, frame and message sizes, fragments per message.

/// Who sent the bytes being scanned: clients must mask their frames, servers must not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// The client side (frames masked).
    Client,
    /// The server side (frames unmasked).
    Server,
}

/// What a direction allows (see `[websocket]` in the gateway's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest frame payload.
    pub max_frame: u64,
    /// Largest message (the sum of its fragments).
    pub max_message: u64,
    /// Most fragments in one message.
    pub max_fragments: u32,
}

/// Why a direction's bytes were refused, with the close code it earns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A frame or message over its limit (1009).
    #[error("{0}")]
    TooBig(String),
    /// Within the protocol but over a policy limit (1008).
    #[error("{0}")]
    Policy(String),
    /// Not valid WebSocket framing (1002).
    #[error("{0}")]
    Protocol(String),
}

impl Violation {
    /// The close code RFC 6455 assigns to this kind of failure.
    pub fn close_code(&self) -> u16 {
        match self {
            Violation::TooBig(_) => super::close::TOO_BIG,
            Violation::Policy(_) => super::close::POLICY,
            Violation::Protocol(_) => super::close::PROTOCOL,
        }
    }

    /// A short name for metrics (`reason` label).
    pub fn reason(&self) -> &'static str {
        match self {
            Violation::TooBig(_) => "too_big",
            Violation::Policy(_) => "policy",
            Violation::Protocol(_) => "protocol",
        }
    }
}

/// Counts from one scanned chunk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// Data messages whose final frame began in the chunk.
    pub messages: u64,
    /// Payload bytes of data frames in the chunk.
    pub bytes: u64,
    /// A close frame ended in the chunk, with its code when it carried one (else 1005).
    pub close: Option<u16>,
}

/// Where the scanner is in the byte stream.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Collecting a header: `have` of its bytes are in `head`.
    Header { have: usize },
    /// Inside a payload: `left` bytes to go; `close` while it is a close frame's (the code's
    /// bytes are collected as they pass).
    Payload {
        left: u64,
        control: bool,
        close: Option<CloseCode>,
    },
}

/// A close frame's code as its first two payload bytes pass (unmasked with the frame's key).
#[derive(Debug, Clone, Copy)]
struct CloseCode {
    mask: [u8; 4],
    got: usize,
    bytes: [u8; 2],
    len: u64,
}

/// One direction's scanner.
#[derive(Debug, Clone)]
pub struct Scanner {
    sender: Sender,
    limits: FrameLimits,
    state: State,
    head: [u8; 14],
    /// Inside a fragmented message: its bytes and fragments so far.
    message: Option<(u64, u32)>,
}

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

fn protocol(what: impl Into<String>) -> Violation {
    Violation::Protocol(what.into())
}

impl Scanner {
    /// A scanner for the bytes `sender` sends, held to `limits`.
    pub fn new(sender: Sender, limits: FrameLimits) -> Self {
        Scanner {
            sender,
            limits,
            state: State::Header { have: 0 },
            head: [0; 14],
            message: None,
        }
    }

    /// Whether the bytes so far end on a frame boundary (a frame of our own may be written).
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header { have: 0 })
    }

    /// Scans the next bytes of the stream; the first violation stops the scan.
    pub fn scan(&mut self, mut bytes: &[u8]) -> Result<Seen, Violation> {
        let mut seen = Seen::default();
        while !bytes.is_empty() {
            match self.state {
                State::Header { have } => {
                    let need = header_len(&self.head[..have]).unwrap_or(2);
                    let take = (need - have).min(bytes.len());
                    self.head[have..have + take].copy_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    let have = have + take;
                    // The length bytes may say the header is longer than first thought.
                    match header_len(&self.head[..have]) {
                        Some(need) if have == need => self.header(need, &mut seen)?,
                        _ => self.state = State::Header { have },
                    }
                }
                State::Payload {
                    left,
                    control,
                    mut close,
                } => {
                    let take = (left.min(bytes.len() as u64)) as usize;
                    if let Some(c) = close.as_mut() {
                        for &b in &bytes[..take] {
                            if c.got < 2 {
                                c.bytes[c.got] = b ^ c.mask[c.got % 4];
                                c.got += 1;
                            }
                        }
                    }
                    if !control {
                        seen.bytes += take as u64;
                    }
                    bytes = &bytes[take..];
                    let left = left - take as u64;
                    if left == 0 {
                        if let Some(c) = close {
                            seen.close = Some(close_code(&c));
                        }
                        self.state = State::Header { have: 0 };
                    } else {
                        self.state = State::Payload {
                            left,
                            control,
                            close,
                        };
                    }
                }
            }
        }
        Ok(seen)
    }

    /// A whole header is in `head[..len]`: check it and move into its payload.
    fn header(&mut self, len: usize, seen: &mut Seen) -> Result<(), Violation> {
        let (b0, b1) = (self.head[0], self.head[1]);
        let fin = b0 & 0x80 != 0;
        if b0 & 0x70 != 0 {
            return Err(protocol("reserved bits set (no extension was negotiated)"));
        }
        let opcode = b0 & 0x0F;
        let masked = b1 & 0x80 != 0;
        match (self.sender, masked) {
            (Sender::Client, false) => return Err(protocol("a client frame was not masked")),
            (Sender::Server, true) => return Err(protocol("a server frame was masked")),
            _ => {}
        }
        let payload = payload_len(&self.head[..len]);
        let mut mask = [0u8; 4];
        if masked {
            mask.copy_from_slice(&self.head[len - 4..len]);
        }
        let control = opcode >= 0x8;
        match opcode {
            CLOSE | PING | PONG => {
                if !fin || payload > 125 {
                    return Err(protocol("a control frame was fragmented or over 125 bytes"));
                }
                if opcode == CLOSE && payload == 1 {
                    return Err(protocol("a close frame with a one-byte payload"));
                }
            }
            TEXT | BINARY | CONTINUATION => self.data(opcode, fin, payload, seen)?,
            other => return Err(protocol(format!("unknown opcode {other:#x}"))),
        }
        let close = (opcode == CLOSE).then_some(CloseCode {
            mask,
            got: 0,
            bytes: [0; 2],
            len: payload,
        });
        if payload == 0 {
            if let Some(c) = close {
                seen.close = Some(close_code(&c));
            }
            self.state = State::Header { have: 0 };
        } else {
            self.state = State::Payload {
                left: payload,
                control,
                close,
            };
        }
        Ok(())
    }

    /// A data frame's header: the message's sizes and fragments.
    fn data(
        &mut self,
        opcode: u8,
        fin: bool,
        payload: u64,
        seen: &mut Seen,
    ) -> Result<(), Violation> {
        let limits = self.limits;
        if payload > limits.max_frame {
            return Err(Violation::TooBig(format!(
                "a frame of {payload} bytes is over the limit of {}",
                limits.max_frame
            )));
        }
        let (bytes, fragments) = match (opcode, self.message) {
            (CONTINUATION, None) => return Err(protocol("a continuation frame outside a message")),
            (CONTINUATION, Some((b, f))) => (b.saturating_add(payload), f.saturating_add(1)),
            (_, Some(_)) => return Err(protocol("a new message began inside a fragmented one")),
            (_, None) => (payload, 1),
        };
        if bytes > limits.max_message {
            return Err(Violation::TooBig(format!(
                "a message of more than {} bytes",
                limits.max_message
            )));
        }
        if fragments > limits.max_fragments {
            return Err(Violation::Policy(format!(
                "a message in more than {} fragments",
                limits.max_fragments
            )));
        }
        self.message = match fin {
            true => {
                seen.messages += 1;
                None
            }
            false => Some((bytes, fragments)),
        };
        Ok(())
    }
}

/// The header's whole length once its first two bytes are known.
fn header_len(head: &[u8]) -> Option<usize> {
    if head.len() < 2 {
        return None;
    }
    let ext = match head[1] & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if head[1] & 0x80 != 0 { 4 } else { 0 };
    Some(2 + ext + mask)
}

/// The payload length of a whole header.
fn payload_len(head: &[u8]) -> u64 {
    match head[1] & 0x7F {
        126 => u64::from(u16::from_be_bytes([head[2], head[3]])),
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&head[2..10]);
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    }
}

fn close_code(c: &CloseCode) -> u16 {
    match c.len {
        0 => super::close::NO_STATUS,
        _ => u16::from_be_bytes(c.bytes),
    }
}

/// A frame as a sender writes it (for the gateway's own close frames and for tests):
/// masked with `mask` when given.
pub fn encode(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | opcode);
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xFFFF => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A close frame with `code` and `reason` (truncated to fit 125 bytes).
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(true, CLOSE, &payload, mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: FrameLimits = FrameLimits {
        max_frame: 1 << 16,
        max_message: 1 << 17,
        max_fragments: 8,
    };

    fn scan_all(sender: Sender, bytes: &[u8]) -> Result<Seen, Violation> {
        let mut s = Scanner::new(sender, LIMITS);
        s.scan(bytes)
    }

    #[test]
    fn counts_messages_bytes_and_the_close_code() {
        let key = Some([1, 2, 3, 4]);
        let mut stream = encode(true, TEXT, b"hello", key);
        stream.extend(encode(false, BINARY, &[7; 300], key));
        stream.extend(encode(true, PING, b"p", key));
        stream.extend(encode(true, CONTINUATION, &[8; 60_000], key));
        stream.extend(close_frame(1000, "bye", key));
        let seen = scan_all(Sender::Client, &stream).unwrap();
        assert_eq!(seen.messages, 2);
        assert_eq!(seen.bytes, 5 + 300 + 60_000);
        assert_eq!(seen.close, Some(1000));
        assert_eq!(
            scan_all(Sender::Server, &encode(true, CLOSE, &[], None))
                .unwrap()
                .close,
            Some(1005)
        );
    }

    #[test]
    fn each_rule_has_its_violation() {
        let key = Some([9, 9, 9, 9]);
        let cases: Vec<(Sender, Vec<u8>, u16)> = vec![
            (Sender::Client, encode(true, TEXT, b"x", None), 1002),
            (Sender::Server, encode(true, TEXT, b"x", key), 1002),
            (Sender::Client, encode(true, TEXT, &[0; 70_000], key), 1009),
            (Sender::Client, encode(true, 0x3, b"", key), 1002),
            (Sender::Client, encode(false, PING, b"", key), 1002),
            (Sender::Client, encode(true, PING, &[0; 126], key), 1002),
            (Sender::Client, encode(true, CONTINUATION, b"x", key), 1002),
            (Sender::Client, [0xC1, 0x80, 0, 0, 0, 0].to_vec(), 1002),
            (Sender::Client, encode(true, CLOSE, &[3], key), 1002),
            (
                Sender::Client,
                [
                    encode(false, TEXT, b"a", key),
                    encode(true, TEXT, b"b", key),
                ]
                .concat(),
                1002,
            ),
            (
                Sender::Client,
                [
                    encode(false, BINARY, &[0; 60_000], key),
                    encode(false, CONTINUATION, &[0; 60_000], key),
                    encode(true, CONTINUATION, &[0; 60_000], key),
                ]
                .concat(),
                1009,
            ),
        ];
        for (i, (sender, bytes, code)) in cases.into_iter().enumerate() {
            let err = scan_all(sender, &bytes).expect_err(&format!("case {i}"));
            assert_eq!(err.close_code(), code, "case {i}: {err}");
        }
    }

    #[test]
    fn a_flood_of_empty_continuations_is_a_policy_violation() {
        let key = Some([0; 4]);
        let mut flood = encode(false, TEXT, b"", key);
        for _ in 0..LIMITS.max_fragments {
            flood.extend(encode(false, CONTINUATION, b"", key));
        }
        let err = scan_all(Sender::Client, &flood).unwrap_err();
        assert_eq!(err.close_code(), 1008, "{err}");
    }

    fn frames() -> impl Strategy<Value = Vec<(bool, u8, Vec<u8>)>> {
        let payload = prop::collection::vec(any::<u8>(), 0..300);
        // No more frames than one message may have fragments: a longer run of
        // unfinished frames is a violation, not a valid stream.
        let most = LIMITS.max_fragments as usize;
        prop::collection::vec((any::<bool>(), payload), 1..=most).prop_map(|v| {
            // A valid sequence: fragments continue, the last one ends its message.
            let mut open = false;
            let n = v.len();
            v.into_iter()
                .enumerate()
                .map(|(i, (fin, p))| {
                    let fin = fin || i + 1 == n;
                    let op = if open { CONTINUATION } else { BINARY };
                    open = !fin;
                    (fin, op, p)
                })
                .collect()
        })
    }

    proptest! {
        /// Any split of a valid stream scans to the same counts as the whole.
        #[test]
        fn any_split_scans_the_same(fs in frames(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6)) {
            let key = Some([0xA5, 0x5A, 0x3C, 0xC3]);
            let bytes: Vec<u8> = fs.iter().flat_map(|(fin, op, p)| encode(*fin, *op, p, key)).collect();
            let whole = scan_all(Sender::Client, &bytes).unwrap();
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            at.sort_unstable();
            let mut s = Scanner::new(Sender::Client, LIMITS);
            let (mut total, mut last) = (Seen::default(), 0);
            for cut in at.into_iter().chain([bytes.len()]) {
                let seen = s.scan(&bytes[last..cut]).unwrap();
                total.messages += seen.messages;
                total.bytes += seen.bytes;
                last = cut;
            }
            prop_assert_eq!(total, whole);
            prop_assert!(s.at_boundary());
        }

        /// Arbitrary bytes never panic, and the scanner keeps no more than a header.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
            let _ = scan_all(Sender::Client, &bytes);
            let _ = scan_all(Sender::Server, &bytes);
        }
    }
}
