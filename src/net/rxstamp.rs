//! Kernel receive timestamps on TCP sockets (Linux `SO_TIMESTAMPING`, software receive stamps).
//!
//! The kernel stamps each packet when it arrives; `recvmsg` hands back, with the bytes, the
//! stamp of the last byte it returned (Linux's TCP rule since 4.14). A reader that wakes late —
//! its thread busy with other work, or descheduled — still learns when its answer arrived, so a
//! load generator's own wake-up delay is kept out of the latency it reports. The stamp is on
//! the realtime clock; it becomes an `Instant` through the gap between it and the realtime clock
//! read at the same moment as `Instant::now()` (a clock step inside that gap would skew one
//! sample; a gap outside 0..=10 s is discarded as such). Linux turns stamping on for the whole
//! machine when the first socket asks, a moment later (deferred work): packets of that moment
//! come without a stamp, and their read time stands in.

use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, TimestampingFlag, Timestamps, recvmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use nix::time::{ClockId, clock_gettime};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Longest plausible gap between a packet's arrival and its read; past it the stamp is ignored.
const MAX_GAP: Duration = Duration::from_secs(10);

/// Asks the kernel to stamp what `tcp` receives. Fails where the kernel or socket refuses.
pub fn enable(tcp: &TcpStream) -> Result<(), String> {
    let flags = TimestampingFlag::SOF_TIMESTAMPING_RX_SOFTWARE
        | TimestampingFlag::SOF_TIMESTAMPING_SOFTWARE;
    setsockopt(tcp, sockopt::Timestamping, &flags).map_err(|e| format!("SO_TIMESTAMPING: {e}"))
}

/// A reader that keeps each read's arrival time: a scratch buffer for `recvmsg` (allocated once)
/// and room for the control message.
#[derive(Debug)]
pub struct StampedReader {
    scratch: Box<[u8]>,
    control: Vec<u8>,
}

impl StampedReader {
    /// A reader taking at most `chunk` bytes a read.
    pub fn new(chunk: usize) -> Self {
        StampedReader {
            scratch: vec![0; chunk].into_boxed_slice(),
            control: nix::cmsg_space!(Timestamps),
        }
    }

    /// Reads what is there (waiting until something is) and appends it to `buf`: the byte
    /// count (0 at end of stream) and when the last of them arrived, if the kernel said.
    pub async fn read(
        &mut self,
        tcp: &TcpStream,
        buf: &mut BytesMut,
    ) -> io::Result<(usize, Option<Instant>)> {
        loop {
            tcp.readable().await?;
            let got = tcp.try_io(Interest::READABLE, || self.recv(tcp.as_raw_fd()));
            match got {
                Ok((n, stamp)) => {
                    buf.extend_from_slice(&self.scratch[..n]);
                    return Ok((n, stamp.and_then(arrival)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads what is there without waiting (`WouldBlock` when nothing is), as [`read`]
    /// (Self::read) does: the byte count and when the last of them arrived. For a socket kept
    /// out of the runtime's reactor (see `http1::parked`).
    pub fn try_read(
        &mut self,
        fd: std::os::fd::RawFd,
        buf: &mut BytesMut,
    ) -> io::Result<(usize, Option<Instant>)> {
        let (n, stamp) = self.recv(fd)?;
        buf.extend_from_slice(&self.scratch[..n]);
        Ok((n, stamp.and_then(arrival)))
    }

    fn recv(&mut self, fd: std::os::fd::RawFd) -> io::Result<(usize, Option<TimeSpec>)> {
        let mut iov = [IoSliceMut::new(&mut self.scratch)];
        let msg = recvmsg::<()>(fd, &mut iov, Some(&mut self.control), MsgFlags::empty())
            .map_err(io::Error::from)?;
        let stamp = msg.cmsgs().ok().and_then(|mut c| {
            c.find_map(|m| match m {
                ControlMessageOwned::ScmTimestampsns(t) => Some(t.system),
                _ => None,
            })
        });
        Ok((
            msg.bytes,
            stamp.filter(|s| s.tv_sec() != 0 || s.tv_nsec() != 0),
        ))
    }
}

/// The `Instant` of a realtime-clock stamp: now, less how long ago the stamp was.
fn arrival(stamp: TimeSpec) -> Option<Instant> {
    let (now, real) = (Instant::now(), clock_gettime(ClockId::CLOCK_REALTIME).ok()?);
    let gap = Duration::from(real).checked_sub(Duration::from(stamp))?;
    (gap <= MAX_GAP).then(|| now.checked_sub(gap)).flatten()
}

/// For tests: a connected pair whose client has stamping on, returned once a probe came back
/// stamped, so the machine-wide switch is on while the pair lives.
#[cfg(test)]
pub(crate) async fn keep_stamping_on() -> (TcpStream, TcpStream) {
    use tokio::io::AsyncWriteExt;
    let (client, mut server) = stamped_pair().await;
    let mut reader = StampedReader::new(64);
    for _ in 0..500 {
        server.write_all(b"x").await.unwrap();
        if reader
            .read(&client, &mut BytesMut::new())
            .await
            .unwrap()
            .1
            .is_some()
        {
            return (client, server);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the kernel never stamped a loopback packet in 5 s");
}

/// For tests: a connected (client, server) pair on loopback, the client stamping.
#[cfg(test)]
async fn stamped_pair() -> (TcpStream, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    enable(&client).unwrap();
    (client, server)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A peer's bytes read well after they arrived carry their arrival time, not the read's.
    #[tokio::test]
    async fn a_late_read_keeps_the_arrival_time() {
        let _on = keep_stamping_on().await;
        let (client, mut server) = stamped_pair().await;
        server.write_all(b"hello").await.unwrap();
        let written = Instant::now();
        // The bytes are in the client's socket now; the reader comes 200 ms later.
        std::thread::sleep(Duration::from_millis(200));
        let mut reader = StampedReader::new(1024);
        let mut buf = BytesMut::new();
        let (n, at) = reader.read(&client, &mut buf).await.unwrap();
        let read = Instant::now();
        assert_eq!((n, &buf[..]), (5, &b"hello"[..]));
        let at = at.expect("the kernel stamps loopback packets");
        assert!(
            at <= written + Duration::from_millis(100),
            "{:?} after the write",
            at - written
        );
        assert!(read - at >= Duration::from_millis(100));
    }
}
