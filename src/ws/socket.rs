//! One client's WebSocket: reading whole messages from the client and
//! writing ready-made frames to it.
//!
//! - An idle connection holds no buffer at all: a plain TCP socket is read
//!   only once it is readable, through a stack buffer, and what is left of a
//!   partial frame is kept only until the frame is whole.
//! - A frame is measured by its header before its payload is read: one over
//!   the limit (alone, or with the fragments before it) is refused at once,
//!   and the read buffer never holds more than the limit plus one header.
//! - The board encodes each frame once and every connection writes those
//!   same bytes with one vectored write per batch, with no copy and no
//!   queue between the connection and its socket.

use std::io::{self, IoSlice};

use actix_codec::{Decoder, Encoder};
use actix_http::ws::{CloseCode, CloseReason, Codec, Frame, Item, Message, ProtocolError};
use bytes::{Buf, Bytes, BytesMut};
use bytestring::ByteString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::header::{self, Header, MAX_CONTROL_PAYLOAD, MAX_HEADER};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 4096;
/// Most payload of a refused frame that is read and dropped so the client
/// can complete the closing handshake (bounded in time by the session's
/// close deadline too).
const MAX_DISCARD: u64 = 16 << 20;
/// Most slices one vectored write takes (Linux's IOV_MAX is 1024).
const MAX_SLICES: usize = 512;

/// Any other byte stream a connection can run on (TLS).
pub trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// What an upgraded connection's stream becomes.
pub trait IntoStream: AsyncRead + AsyncWrite + Unpin + 'static {
    fn into_stream(self) -> Stream;
}

impl IntoStream for TcpStream {
    fn into_stream(self) -> Stream {
        Stream::Tcp(self)
    }
}

impl IntoStream for actix_tls::accept::rustls_0_23::TlsStream<TcpStream> {
    fn into_stream(self) -> Stream {
        Stream::Other(Box::new(self))
    }
}

/// The connection's byte stream.
pub enum Stream {
    /// Plain TCP: read only when readable, so an idle connection holds no
    /// read buffer.
    Tcp(TcpStream),
    /// Anything else, read through a buffer while waiting.
    Other(Box<dyn Io>),
}

impl Stream {
    /// Appends what the socket has to `buf`, at most `room` bytes (more than
    /// 0); 0 means the client closed. Cancel-safe: nothing read is ever held
    /// outside `buf`.
    async fn read_into(&mut self, buf: &mut BytesMut, room: usize) -> io::Result<usize> {
        let room = room.min(READ_CHUNK);
        match self {
            Stream::Tcp(tcp) => loop {
                tcp.readable().await?;
                match read_ready(tcp, buf, room) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    result => return result,
                }
            },
            Stream::Other(io) => {
                buf.reserve(room);
                // `take` keeps a TLS stream from filling all the spare
                // capacity `reserve` may have given.
                (&mut **io).take(room as u64).read_buf(buf).await
            }
        }
    }

    /// Writes every byte of `slices`.
    async fn write_all(&mut self, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
        while !slices.is_empty() {
            let written = match self {
                Stream::Tcp(tcp) => tcp.write_vectored(slices).await?,
                Stream::Other(io) => io.write_vectored(slices).await?,
            };
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut slices, written);
        }
        match self {
            Stream::Tcp(_) => Ok(()),
            // TLS holds written records until flushed.
            Stream::Other(io) => io.flush().await,
        }
    }

    /// Ends the sending side, so the client reads the close frame and then
    /// the end of the stream.
    async fn shutdown(&mut self) {
        // A client that is already gone needs no end of stream.
        let _ = match self {
            Stream::Tcp(tcp) => tcp.shutdown().await,
            Stream::Other(io) => io.shutdown().await,
        };
    }
}

/// Reads what a readable socket holds (at most `room` bytes) through a
/// stack buffer, so only the bytes that arrived are kept.
fn read_ready(tcp: &TcpStream, buf: &mut BytesMut, room: usize) -> io::Result<usize> {
    let mut chunk = [0u8; READ_CHUNK];
    let n = tcp.try_read(&mut chunk[..room])?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// A whole message from the client.
#[derive(Debug)]
pub enum Incoming {
    Text(ByteString),
    Binary,
    Ping(Bytes),
    Pong,
    Close(Option<CloseReason>),
}

/// Why a connection cannot go on reading.
#[derive(Debug)]
pub enum ReadError {
    /// The client went away without a close frame.
    Gone,
    /// A frame or message broke the protocol or a limit; the close frame to
    /// answer it with.
    Broken(CloseReason),
}

/// A close frame's code and the sentence that explains it.
pub fn close_reason(code: CloseCode, description: &str) -> CloseReason {
    CloseReason {
        code,
        description: Some(description.to_owned()),
    }
}

fn broken(code: CloseCode, description: &str) -> ReadError {
    ReadError::Broken(close_reason(code, description))
}

/// A message arriving in fragments.
struct Fragments {
    text: bool,
    bytes: BytesMut,
}

/// One client's WebSocket.
pub struct Socket {
    stream: Stream,
    /// Bytes of a frame not yet whole; empty and unallocated between frames,
    /// never longer than `max_message + MAX_HEADER`.
    unread: BytesMut,
    codec: Codec,
    fragments: Option<Fragments>,
    /// Largest frame, and largest message after joining its fragments.
    max_message: usize,
    /// Payload bytes of a refused frame still to arrive, dropped as they
    /// come so the client's close frame after them can be read.
    skip: u64,
}

impl Socket {
    /// Wraps an upgraded stream; `unread` is whatever the client sent after
    /// its upgrade request.
    pub fn new(stream: Stream, unread: BytesMut, max_message: usize) -> Socket {
        Socket {
            stream,
            unread,
            codec: Codec::new().max_size(max_message),
            fragments: None,
            max_message,
            skip: 0,
        }
    }

    /// The next whole message. Cancel-safe: a partly read frame stays
    /// buffered for the next call.
    pub async fn next(&mut self) -> Result<Incoming, ReadError> {
        loop {
            while let Some(frame) = self.decode()? {
                if let Some(message) = self.join(frame)? {
                    self.release_buffer();
                    return Ok(message);
                }
            }
            self.read_more().await?;
        }
    }

    /// Reads what the socket has next into the (released if empty) buffer,
    /// never past the limit plus one header.
    async fn read_more(&mut self) -> Result<(), ReadError> {
        self.release_buffer();
        // A frame within the limit fits in this room whole, and every whole
        // frame was decoded before this is called, so there is always room.
        let room = (self.max_message + MAX_HEADER).saturating_sub(self.unread.len());
        if room == 0 {
            return Err(broken(CloseCode::Size, "frame too large"));
        }
        match self.stream.read_into(&mut self.unread, room).await {
            Ok(0) => Err(ReadError::Gone),
            Ok(_) => Ok(()),
            Err(error) => {
                log::debug!("read failed: {error}");
                Err(ReadError::Gone)
            }
        }
    }

    /// After a close frame of ours: reads and drops whatever the client
    /// still sends until its own close frame (the end of the closing
    /// handshake) or the end of the stream. Frames that would be refused
    /// (the rest of a message that went over the limit, fragments of a
    /// message no longer being joined) are dropped too, as long as the
    /// stream stays readable; a header that lies about more than can be
    /// dropped ends the wait at once.
    pub async fn until_close(&mut self) {
        self.fragments = None;
        loop {
            let buffered = self.unread.len();
            match self.decode() {
                Ok(Some(Frame::Close(_))) => return,
                Ok(Some(_)) => continue,
                Ok(None) => {}
                // The refused frame was taken off the buffer, or its
                // payload is being dropped: what follows is still frames.
                Err(_) if self.unread.len() < buffered || self.skip > 0 => continue,
                Err(_) => return,
            }
            if self.read_more().await.is_err() {
                return;
            }
        }
    }

    fn decode(&mut self) -> Result<Option<Frame>, ReadError> {
        self.drop_skipped();
        if let Some(header) = header::peek(&self.unread) {
            self.check(header)?;
        }
        self.codec
            .decode(&mut self.unread)
            .map_err(|error| match error {
                ProtocolError::Overflow => broken(CloseCode::Size, "frame too large"),
                other => {
                    log::debug!("protocol error: {other}");
                    broken(CloseCode::Protocol, "WebSocket protocol error")
                }
            })
    }

    /// Refuses a frame by what its header declares, before its payload is
    /// read: over the limit alone or with the fragments before it (1009), or
    /// a control frame longer than RFC 6455 allows (1002).
    fn check(&mut self, header: Header) -> Result<(), ReadError> {
        if header.is_control() {
            if header.payload > MAX_CONTROL_PAYLOAD {
                return Err(broken(CloseCode::Protocol, "control frame too long"));
            }
            return Ok(());
        }
        let before = match (&self.fragments, header.is_continuation()) {
            (Some(fragments), true) => fragments.bytes.len() as u64,
            _ => 0,
        };
        if before.saturating_add(header.payload) <= self.max_message as u64 {
            return Ok(());
        }
        self.fragments = None;
        // A client over the limit by a believable amount (a page pasting a
        // long text) has its frame's payload dropped as it arrives, never
        // buffered, so it can finish sending, read the close frame and
        // answer it. One that declares more is not waited for: its header
        // stays, so every later read fails, which ends the connection as
        // soon as it sends more.
        if header.payload <= MAX_DISCARD {
            self.unread.advance(header.len);
            self.skip = header.payload;
        }
        Err(broken(CloseCode::Size, "message too large"))
    }

    /// Drops the buffered part of a refused frame's payload.
    fn drop_skipped(&mut self) {
        if self.skip > 0 {
            let n = self.unread.len().min(self.skip as usize);
            self.unread.advance(n);
            self.skip -= n as u64;
        }
    }

    /// An idle connection keeps no read buffer.
    fn release_buffer(&mut self) {
        if self.unread.is_empty() && self.unread.capacity() > 0 {
            self.unread = BytesMut::new();
        }
    }

    /// Turns a frame into a message, joining fragments; `None` while a
    /// fragmented message is still arriving.
    fn join(&mut self, frame: Frame) -> Result<Option<Incoming>, ReadError> {
        let text = match frame {
            Frame::Text(bytes) => bytes,
            Frame::Binary(_) => return Ok(Some(Incoming::Binary)),
            Frame::Ping(bytes) => return Ok(Some(Incoming::Ping(bytes))),
            Frame::Pong(_) => return Ok(Some(Incoming::Pong)),
            Frame::Close(reason) => return Ok(Some(Incoming::Close(reason))),
            Frame::Continuation(item) => {
                let (first, last, bytes) = match item {
                    Item::FirstText(b) => (Some(true), false, b),
                    Item::FirstBinary(b) => (Some(false), false, b),
                    Item::Continue(b) => (None, false, b),
                    Item::Last(b) => (None, true, b),
                };
                let fragments = match (first, self.fragments.as_mut()) {
                    (Some(text), _) => self.fragments.insert(Fragments {
                        text,
                        bytes: BytesMut::new(),
                    }),
                    (None, Some(fragments)) => fragments,
                    // The codec tracks fragment order; this cannot be reached.
                    (None, None) => {
                        return Err(broken(CloseCode::Protocol, "continuation not started"))
                    }
                };
                if fragments.bytes.len() + bytes.len() > self.max_message {
                    return Err(broken(CloseCode::Size, "message too large"));
                }
                fragments.bytes.extend_from_slice(&bytes);
                if !last {
                    return Ok(None);
                }
                let Some(Fragments { text, bytes }) = self.fragments.take() else {
                    return Ok(None);
                };
                if !text {
                    return Ok(Some(Incoming::Binary));
                }
                bytes.freeze()
            }
        };
        match ByteString::try_from(text) {
            Ok(text) => Ok(Some(Incoming::Text(text))),
            Err(_) => Err(broken(CloseCode::Invalid, "text frames must be UTF-8")),
        }
    }

    /// Writes ready-made frames, in order, with as few system calls as the
    /// socket allows.
    pub async fn write<'a>(
        &mut self,
        frames: impl IntoIterator<Item = &'a Bytes>,
    ) -> io::Result<()> {
        let mut frames = frames.into_iter().peekable();
        while frames.peek().is_some() {
            let mut slices: Vec<IoSlice<'_>> = frames
                .by_ref()
                .take(MAX_SLICES)
                .map(|frame| IoSlice::new(frame))
                .collect();
            self.stream.write_all(&mut slices).await?;
        }
        Ok(())
    }

    /// Sends a close frame and ends the sending side (the client may still
    /// send its own close frame).
    pub async fn close(&mut self, reason: Option<CloseReason>) -> io::Result<()> {
        self.write([&encode(Message::Close(reason))]).await?;
        self.stream.shutdown().await;
        Ok(())
    }
}

/// Encodes one server frame (servers never mask, so the bytes are the same
/// for every client).
fn encode(message: Message) -> Bytes {
    let mut frame = BytesMut::new();
    // Encoding a server frame into memory has no failure case.
    let _ = Codec::new().encode(message, &mut frame);
    frame.freeze()
}

/// A text frame.
pub fn text(payload: impl Into<ByteString>) -> Bytes {
    encode(Message::Text(payload.into()))
}

/// A ping frame, for the heartbeat.
pub fn ping() -> Bytes {
    encode(Message::Ping(Bytes::new()))
}

/// The pong answering `payload`'s ping.
pub fn pong(payload: Bytes) -> Bytes {
    encode(Message::Pong(payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn a_text_frame_is_the_unmasked_header_then_the_payload() {
        let short = text("hi");
        assert_eq!(&short[..], b"\x81\x02hi");
        let long = text("x".repeat(300));
        assert_eq!(&long[..4], b"\x81\x7e\x01\x2c");
        assert_eq!(long.len(), 4 + 300);
    }

    #[test]
    fn a_close_frame_carries_its_code_and_reason() {
        let frame = encode(Message::Close(Some(CloseReason {
            code: CloseCode::Away,
            description: Some("bye".into()),
        })));
        assert_eq!(&frame[..], b"\x88\x05\x03\xe9bye");
    }

    /// A client's frames: masked, as RFC 6455 requires of clients.
    fn client_frames(messages: Vec<Message>) -> Vec<u8> {
        let mut codec = Codec::new().client_mode();
        let mut frames = BytesMut::new();
        for message in messages {
            codec.encode(message, &mut frames).unwrap();
        }
        frames.to_vec()
    }

    fn fragment(item: fn(Bytes) -> Item, payload: &[u8]) -> Message {
        Message::Continuation(item(Bytes::copy_from_slice(payload)))
    }

    /// A connected pair on loopback: the server's socket and the client's stream.
    async fn pair(max_message: usize) -> (Socket, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let server = Socket::new(
            Stream::Tcp(accepted.unwrap().0),
            BytesMut::new(),
            max_message,
        );
        (server, client.unwrap())
    }

    #[tokio::test]
    async fn a_message_trickling_in_byte_by_byte_and_in_fragments_arrives_whole_and_leaves_no_buffer(
    ) {
        let (mut socket, mut client) = pair(1024).await;
        let bytes = client_frames(vec![
            fragment(Item::FirstText, "héllo, ".as_bytes()),
            fragment(Item::Continue, b"wor"),
            fragment(Item::Last, b"ld"),
        ]);
        let sender = tokio::spawn(async move {
            for byte in bytes {
                client.write_all(&[byte]).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        match socket.next().await {
            Ok(Incoming::Text(text)) => assert_eq!(&text[..], "héllo, world"),
            other => panic!("expected the joined text, got {other:?}"),
        }
        assert_eq!(
            socket.unread.capacity(),
            0,
            "an idle socket keeps no read buffer"
        );
        drop(sender.await.unwrap());
        assert!(matches!(socket.next().await, Err(ReadError::Gone)));
    }

    #[tokio::test]
    async fn fragments_over_the_limit_and_text_that_is_not_utf8_are_refused_with_their_codes() {
        let (mut socket, mut client) = pair(16).await;
        let bytes = client_frames(vec![
            fragment(Item::FirstText, &[b'a'; 10]),
            fragment(Item::Last, &[b'b'; 10]),
        ]);
        client.write_all(&bytes).await.unwrap();
        match socket.next().await {
            Err(ReadError::Broken(reason)) => assert_eq!(reason.code, CloseCode::Size),
            other => panic!("expected 1009, got {other:?}"),
        }

        let (mut socket, mut client) = pair(16).await;
        let mut frame = client_frames(vec![Message::Text("ok".into())]);
        // The payload is masked: flip it into an invalid UTF-8 byte pair.
        let masked = frame.len() - 2;
        frame[masked] ^= b'o' ^ 0xc3;
        frame[masked + 1] ^= b'k' ^ 0x28;
        client.write_all(&frame).await.unwrap();
        match socket.next().await {
            Err(ReadError::Broken(reason)) => assert_eq!(reason.code, CloseCode::Invalid),
            other => panic!("expected 1007, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_read_buffer_never_holds_more_than_the_limit_and_one_header() {
        let (mut socket, mut client) = pair(256).await;
        // 300 pings of 125 bytes, about 39 KiB, sent at once.
        let pings: Vec<Message> = (0..300)
            .map(|_| Message::Ping(Bytes::from_static(&[7; 125])))
            .collect();
        let bytes = client_frames(pings);
        let sender = tokio::spawn(async move {
            client.write_all(&bytes).await.unwrap();
            client
        });
        for _ in 0..300 {
            match socket.next().await {
                Ok(Incoming::Ping(payload)) => assert_eq!(payload.len(), 125),
                other => panic!("expected a ping, got {other:?}"),
            }
            assert!(
                socket.unread.len() <= 256 + MAX_HEADER,
                "{} bytes buffered",
                socket.unread.len()
            );
        }
        drop(sender.await.unwrap());
    }

    #[tokio::test]
    async fn a_refused_frame_a_little_over_the_limit_is_dropped_so_the_close_after_it_is_read() {
        let (mut socket, mut client) = pair(16).await;
        let mut bytes = client_frames(vec![Message::Text("x".repeat(100).into())]);
        bytes.extend(client_frames(vec![Message::Close(None)]));
        client.write_all(&bytes).await.unwrap();
        match socket.next().await {
            Err(ReadError::Broken(reason)) => assert_eq!(reason.code, CloseCode::Size),
            other => panic!("expected 1009, got {other:?}"),
        }
        assert!(matches!(socket.next().await, Ok(Incoming::Close(None))));
    }

    #[tokio::test]
    async fn thousands_of_shared_frames_go_out_whole_and_in_order_across_partial_writes() {
        let (mut socket, mut client) = pair(1024).await;
        let frames: Vec<Bytes> = (0..3000)
            .map(|i| text(format!("{i:04}{}", "x".repeat(1000))))
            .collect();
        let expected: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
        let reader = tokio::spawn(async move {
            let mut received = vec![0; expected.len()];
            client.read_exact(&mut received).await.unwrap();
            received == expected
        });
        // About 3 MiB in one call: far more than a socket buffer takes at once.
        socket.write(&frames).await.unwrap();
        assert!(
            reader.await.unwrap(),
            "the bytes arrived changed or out of order"
        );
    }
}
