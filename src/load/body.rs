//! A request body as the generator sends it: whole, or a client stream's messages paced apart
//! with each one's send time noted.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

/// A request body: whole (every HTTP request, unary gRPC, a client stream sent at once), or a
/// client stream's messages paced `interval` apart, each one's send time noted (bidi calls time
/// each answer from the request message it answers).
#[derive(Debug)]
pub enum ReqBody {
    /// The whole body (None: empty, or already sent).
    Whole(Option<Bytes>),
    /// Messages one by one.
    Paced(Paced),
}

/// A client stream's messages, `interval` apart.
#[derive(Debug)]
pub struct Paced {
    frames: VecDeque<Bytes>,
    interval: Duration,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    sent: SentTimes,
}

/// When each message of a paced stream went to the connection.
pub type SentTimes = Arc<Mutex<Vec<Instant>>>;

impl ReqBody {
    /// The whole body `bytes`.
    pub fn whole(bytes: Bytes) -> Self {
        ReqBody::Whole(Some(bytes).filter(|b| !b.is_empty()))
    }

    /// `frames` sent `interval` apart (the first at once).
    pub fn paced(frames: Vec<Bytes>, interval: Duration) -> Self {
        ReqBody::Paced(Paced {
            sent: Arc::new(Mutex::new(Vec::with_capacity(frames.len()))),
            frames: frames.into(),
            interval,
            wait: None,
        })
    }

    /// The send times of a paced body's messages (None for a whole one).
    pub fn sent_times(&self) -> Option<SentTimes> {
        match self {
            ReqBody::Whole(_) => None,
            ReqBody::Paced(p) => Some(p.sent.clone()),
        }
    }

    /// The bytes of a whole body (tests).
    pub fn bytes(&self) -> Option<&Bytes> {
        match self {
            ReqBody::Whole(b) => b.as_ref(),
            ReqBody::Paced(_) => None,
        }
    }
}

impl hyper::body::Body for ReqBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ReqBody::Whole(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ReqBody::Paced(p) => {
                if p.frames.is_empty() {
                    return Poll::Ready(None);
                }
                if let Some(wait) = &mut p.wait {
                    std::task::ready!(wait.as_mut().poll(cx));
                }
                let Some(frame) = p.frames.pop_front() else {
                    return Poll::Ready(None);
                };
                if let Ok(mut sent) = p.sent.lock() {
                    sent.push(Instant::now());
                }
                p.wait = Some(Box::pin(tokio::time::sleep(p.interval)));
                Poll::Ready(Some(Ok(Frame::data(frame))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Whole(b) => b.is_none(),
            ReqBody::Paced(p) => p.frames.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Whole(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ReqBody::Paced(_) => SizeHint::default(),
        }
    }
}
