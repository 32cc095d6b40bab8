//! A connection with bytes put back in front of it: its first reads return what was already
//! read from it, then it reads on as before; writes go straight through. How the lean HTTP/1.1
//! path (issue #30) hands a connection to hyper when a head is one it leaves to the general
//! server (`http1::server::Parsed::Other`): hyper then reads that head as if it had never been
//! read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner`, with `pre` read first.
#[derive(Debug)]
pub struct Rewind<S> {
    pre: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    /// `inner` whose next reads return `pre` first.
    pub fn new(pre: Bytes, inner: S) -> Self {
        Rewind { pre, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// hyper reads a head split between the bytes put back and the connection, pipelined
    /// with a second request, and answers both in order.
    #[tokio::test]
    async fn hyper_serves_a_connection_whose_head_was_already_read() {
        let (mut client, server) = tokio::io::duplex(4096);
        let pre = Bytes::from_static(b"GET /first HTTP/1.1\r\nHo");
        let io = Rewind::new(pre, server);
        let service =
            hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                let body = bytes::Bytes::from(req.uri().path().to_string());
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                    body,
                )))
            });
        let conn = tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(io), service),
        );
        client
            .write_all(b"st: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        client.read_to_string(&mut out).await.unwrap();
        let first = out.find("/first").expect(&out);
        let second = out.find("/second").expect(&out);
        assert!(first < second, "{out}");
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
        conn.await.unwrap().unwrap();
    }

    /// A read smaller than what was put back takes it in pieces, then reads on.
    #[tokio::test]
    async fn small_reads_take_the_bytes_put_back_in_pieces() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut io = Rewind::new(Bytes::from_static(b"abcdef"), b);
        a.write_all(b"gh").await.unwrap();
        drop(a);
        let mut piece = [0u8; 4];
        let n = io.read(&mut piece).await.unwrap();
        assert_eq!(&piece[..n], b"abcd");
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"efgh");
    }
}
