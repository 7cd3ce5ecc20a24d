//! Waiting for a connection's first request head before the HTTP layer sees
//! the connection, so that only a slow client is ever timed out, never a
//! busy server.
//!
//! actix-http times the first request from the moment its dispatcher first
//! looks at a connection, and checks that timer before it reads: a client
//! that sent its request at once, on a server busy with a crowd (a hall's
//! worth of phones joining after the Wi-Fi blinked), could be answered
//! `408 Request Timeout` with its whole request waiting in the socket. Here
//! the bytes are always looked at first: the connection is handed on once
//! its head has arrived whole, and refused only when, at the deadline, the
//! head is still incomplete: 5 s from its first byte, 30 s for that byte.
//! Plain TCP only; a TLS connection's head is encrypted, so TLS keeps the
//! HTTP layer's own timer (see `server.rs`).

use std::future::{ready, Future, Ready};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_service::{Service, Transform};
use actix_web::rt::net::TcpStream;
use tokio::io::{AsyncWriteExt, Interest};

/// How long a client may take to send its first request head, counted
/// from the first byte of it the server sees.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection may stay silent before its first byte, counted
/// from the server's first look at it. Longer than the head's time: when a
/// crowd reconnects at once and the listen backlog overflows, the kernel
/// drops the first packets of connections it had not yet queued, and the
/// client sends its request again only after its retransmission timer
/// (seconds, doubling), through no slowness of its own. Measured with
/// 95,000 clients reconnecting within a second to five nodes: three in
/// four were answered 408 when the 5 s ran from the first look.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most bytes looked at for the end of the head. A longer head is handed
/// on as it is: the HTTP layer's own limits answer it.
const LOOK_BYTES: usize = 8 * 1024;

/// What a slow client is told before the connection closes.
const TOO_SLOW: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Wraps the plain HTTP listener's service: each connection reaches it
/// once its first request head is in the socket.
pub struct WaitForRequestHead {
    /// For the first byte ([`FIRST_BYTE_TIMEOUT`]).
    pub first_byte: Duration,
    /// For the whole head from its first byte ([`HEAD_TIMEOUT`]).
    pub head: Duration,
}

impl<S> Transform<S, TcpStream> for WaitForRequestHead
where
    S: Service<TcpStream, Response = ()> + 'static,
{
    type Response = ();
    type Error = S::Error;
    type Transform = RequestHeadWaiter<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequestHeadWaiter {
            http: Rc::new(service),
            first_byte: self.first_byte,
            head: self.head,
        }))
    }
}

/// One worker's HTTP service, behind the wait for the head.
pub struct RequestHeadWaiter<S> {
    http: Rc<S>,
    first_byte: Duration,
    head: Duration,
}

impl<S> Service<TcpStream> for RequestHeadWaiter<S>
where
    S: Service<TcpStream, Response = ()> + 'static,
{
    type Response = ();
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<(), S::Error>>>>;

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx)
    }

    fn call(&self, mut stream: TcpStream) -> Self::Future {
        let http = self.http.clone();
        let (first_byte, head) = (self.first_byte, self.head);
        Box::pin(async move {
            match wait_for_head(&stream, first_byte, head).await {
                Arrival::Whole => http.call(stream).await,
                Arrival::TooSlow => {
                    // Best effort: the client is leaving or about to be cut off.
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        stream.write_all(TOO_SLOW).await?;
                        stream.shutdown().await
                    })
                    .await;
                    Ok(())
                }
                Arrival::Gone => Ok(()),
            }
        })
    }
}

/// How a connection's first request head arrived.
#[derive(Debug, PartialEq, Eq)]
enum Arrival {
    /// In the socket, whole (or longer than is looked at).
    Whole,
    /// Still incomplete at the deadline.
    TooSlow,
    /// The client closed, or the connection failed, before sending it.
    Gone,
}

/// Waits until the head `stream` has received so far is whole: for at most
/// `first_byte` from now for its first byte, then `head` from when that
/// byte was first seen. The socket is only peeked: the HTTP layer reads the
/// same bytes afterwards.
async fn wait_for_head(stream: &TcpStream, first_byte: Duration, head: Duration) -> Arrival {
    let mut deadline = tokio::time::Instant::now() + first_byte;
    let mut started = false;
    // On the heap, so the connection's future does not carry it for life.
    let mut look = vec![MaybeUninit::<u8>::uninit(); LOOK_BYTES];
    loop {
        // `timeout_at` polls the readiness before the clock: bytes already
        // in the socket are looked at however late the server comes to them.
        match tokio::time::timeout_at(deadline, stream.readable()).await {
            Err(_) => return Arrival::TooSlow,
            Ok(Err(_)) => return Arrival::Gone,
            Ok(Ok(())) => {}
        }
        // A head still incomplete counts as "would block", which clears the
        // readiness: the next wait ends only when more bytes arrive.
        let peeked = stream.try_io(Interest::READABLE, || {
            let n = socket2::SockRef::from(stream).peek(&mut look)?;
            // SAFETY: `peek` initialised the first `n` bytes of `look`.
            let seen = unsafe { std::slice::from_raw_parts(look.as_ptr().cast::<u8>(), n) };
            match head_state(seen, LOOK_BYTES) {
                Some(arrival) => Ok(arrival),
                None => Err(io::ErrorKind::WouldBlock.into()),
            }
        });
        match peeked {
            Ok(arrival) => return arrival,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Arrival::Gone,
        }
        // Part of the head is here: from now on, the client's own pace counts.
        if !started {
            started = true;
            deadline = tokio::time::Instant::now() + head;
        }
    }
}

/// What the first `seen` bytes of a connection (at most `look` looked at)
/// say: `None` while the head is still coming.
fn head_state(seen: &[u8], look: usize) -> Option<Arrival> {
    if seen.is_empty() {
        Some(Arrival::Gone)
    } else if seen.len() >= look || ends_head(seen) {
        Some(Arrival::Whole)
    } else {
        None
    }
}

/// True if `seen` holds a blank line: the end of a head, with CRLF line
/// ends or the bare LF ones HTTP parsers also accept.
fn ends_head(seen: &[u8]) -> bool {
    seen.windows(2).any(|w| w == b"\n\n") || seen.windows(3).any(|w| w == b"\n\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_whole_at_its_blank_line() {
        let head = b"GET /ws HTTP/1.1\r\nHost: board\r\n\r\n";
        assert_eq!(head_state(head, LOOK_BYTES), Some(Arrival::Whole));
        assert_eq!(head_state(&head[..head.len() - 1], LOOK_BYTES), None);
        assert_eq!(head_state(b"GET / HTTP/1.1\r\n", LOOK_BYTES), None);
        assert_eq!(
            head_state(b"GET / HTTP/1.1\nHost: b\n\n", LOOK_BYTES),
            Some(Arrival::Whole)
        );
    }

    #[test]
    fn a_head_longer_than_is_looked_at_goes_on_to_the_http_limits() {
        assert_eq!(head_state(&[b'a'; 16], 16), Some(Arrival::Whole));
        assert_eq!(head_state(&[b'a'; 15], 16), None);
    }

    #[test]
    fn a_connection_closed_before_its_head_is_gone() {
        assert_eq!(head_state(b"", LOOK_BYTES), Some(Arrival::Gone));
    }
}
