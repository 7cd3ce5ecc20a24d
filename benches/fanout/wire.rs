//! A lean WebSocket client (RFC 6455) for the load generator: the upgrade
//! request, frames decoded where they lie in one read buffer, and masked
//! frames encoded into one write buffer.
//!
//! tokio-tungstenite would allocate, copy and UTF-8-check every frame into its
//! own `Message`; at a million deliveries a second on one core that is the
//! generator's whole budget, so the receive path here copies nothing unless a
//! server splits a message into continuation frames.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Largest message accepted from a server: the original board sends its whole
/// history in one frame, and 1,000,000 stored messages are about 150 MB.
const MAX_MESSAGE: usize = 1 << 30;
/// Room kept free at the end of the read buffer before each read, unless the
/// socket was opened with a smaller one (see [`Socket::upgrade`]).
const READ_CHUNK: usize = 16 * 1024;
/// Longest upgrade response we wait for before calling the server broken.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// One frame found at the start of a buffer; ranges are relative to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Range<usize>,
    /// Length of the whole frame, header included.
    pub len: usize,
}

/// What the start of a buffer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Frame(Frame),
    /// Not a whole frame yet: at least this many bytes are needed.
    Need(usize),
}

/// Decodes the frame at the start of `buf`, unmasking its payload in place
/// when it is masked (servers never mask; the self-check decodes client
/// frames too).
pub fn decode(buf: &mut [u8]) -> io::Result<Decoded> {
    if buf.len() < 2 {
        return Ok(Decoded::Need(2));
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        // No extension (such as permessage-deflate) is ever negotiated.
        return Err(invalid("a frame has reserved bits set"));
    }
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 if buf.len() < 4 => return Ok(Decoded::Need(4)),
        126 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() < 10 => return Ok(Decoded::Need(10)),
        127 => {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(bytes);
            if len > MAX_MESSAGE as u64 {
                return Err(invalid("a frame is larger than 1 GiB"));
            }
            (len as usize, 10)
        }
        short => (short as usize, 2),
    };
    let mut key = [0; 4];
    if masked {
        if buf.len() < at + 4 {
            return Ok(Decoded::Need(at + 4));
        }
        key.copy_from_slice(&buf[at..at + 4]);
        at += 4;
    }
    let total = at + len;
    if buf.len() < total {
        return Ok(Decoded::Need(total));
    }
    if masked {
        apply_mask(&mut buf[at..total], key);
    }
    Ok(Decoded::Frame(Frame {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        payload: at..total,
        len: total,
    }))
}

/// Appends one final frame with a masked payload to `out`, as every client
/// frame must be (RFC 6455 section 5.3).
pub fn encode(opcode: u8, payload: &[u8], key: [u8; 4], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key);
}

fn apply_mask(bytes: &mut [u8], key: [u8; 4]) {
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte ^= key[i & 3];
    }
}

/// The HTTP request that opens a WebSocket on `path`.
pub fn upgrade_request(addr: SocketAddr, path: &str) -> String {
    // Any 16 bytes in base64 will do as the key; this is the RFC's sample.
    // The server's Sec-WebSocket-Accept is not checked: it guards against
    // caching proxies, and there is none between a loopback client and server.
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Returns the length of the response head once `buf` holds all of it, or an
/// error when the server refused the upgrade.
pub fn response_head(buf: &[u8]) -> io::Result<Option<usize>> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_RESPONSE_HEAD {
            Err(invalid("the upgrade response head never ends"))
        } else {
            Ok(None)
        };
    };
    let status = buf[..end].split(|&b| b == b'\n').next().unwrap_or(b"");
    if status.starts_with(b"HTTP/1.1 101") {
        Ok(Some(end + 4))
    } else {
        Err(invalid(&format!(
            "the server refused the WebSocket upgrade: {}",
            String::from_utf8_lossy(status).trim_end()
        )))
    }
}

/// Position of the first `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

/// One client connection: a TCP stream, the bytes read but not yet consumed,
/// and the frames waiting to be written.
pub struct Socket {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// Bytes the frame at `start` needs in all, once known.
    need: usize,
    /// A message arriving in continuation frames, and its opcode.
    partial: Vec<u8>,
    partial_opcode: Option<u8>,
    out: Vec<u8>,
    /// xorshift state for mask keys; servers do not check their randomness.
    mask: u32,
    /// Room kept free at the end of `buf` before each read.
    chunk: usize,
}

impl Socket {
    /// Connects to `addr` and completes the upgrade on `path`.
    pub async fn connect(addr: SocketAddr, path: &str, seed: u32) -> io::Result<Socket> {
        let stream = TcpStream::connect(addr).await?;
        Socket::upgrade(stream, addr, path, seed, READ_CHUNK).await
    }

    /// Completes the upgrade on `path` over `stream`, already connected to
    /// `addr` (say, from a chosen source address). `chunk` is the room kept
    /// free for each read: the buffer starts at twice that and grows only for
    /// a frame that needs it, so a crowd of quiet clients can use a small one.
    pub async fn upgrade(
        mut stream: TcpStream,
        addr: SocketAddr,
        path: &str,
        seed: u32,
        chunk: usize,
    ) -> io::Result<Socket> {
        stream.set_nodelay(true)?;
        stream
            .write_all(upgrade_request(addr, path).as_bytes())
            .await?;
        let mut buf = vec![0; 2 * chunk];
        let mut end = 0;
        let head = loop {
            if end == buf.len() {
                if buf.len() > MAX_RESPONSE_HEAD {
                    return Err(invalid("the upgrade response head is too long"));
                }
                buf.resize(buf.len() * 2, 0);
            }
            let n = stream.read(&mut buf[end..]).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection during the upgrade",
                ));
            }
            end += n;
            if let Some(head) = response_head(&buf[..end])? {
                break head;
            }
        };
        Ok(Socket {
            stream,
            buf,
            start: head,
            end,
            need: 0,
            partial: Vec::new(),
            partial_opcode: None,
            out: Vec::new(),
            mask: seed | 1,
            chunk,
        })
    }

    /// Reads once from the stream into the buffer; 0 means the server closed
    /// it. Cancel-safe, so it can sit in a `select!`.
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let wanted = self.need.max(self.end - self.start) + self.chunk;
        if self.buf.len() - self.start < wanted || self.buf.len() - self.end < self.chunk {
            // Move the unconsumed tail to the front; it is at most one
            // partial frame, except right after a big burst.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() < wanted {
                let len = wanted.max(self.buf.len() * 2);
                self.buf.resize(len, 0);
            }
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// The next whole text or binary message in the buffer, if any. Pings are
    /// answered (the pong is queued for [`Socket::flush`]); a close frame is
    /// an error carrying its reason.
    pub fn next_message(&mut self) -> io::Result<Option<&[u8]>> {
        loop {
            let frame = match decode(&mut self.buf[self.start..self.end])? {
                Decoded::Need(n) => {
                    self.need = n;
                    return Ok(None);
                }
                Decoded::Frame(frame) => frame,
            };
            let at = self.start;
            let payload = at + frame.payload.start..at + frame.payload.end;
            self.start += frame.len;
            self.need = 0;
            match (frame.opcode, frame.fin) {
                (OP_PING, _) => {
                    let key = self.next_key();
                    encode(OP_PONG, &self.buf[payload], key, &mut self.out);
                }
                (OP_PONG, _) => {}
                (OP_CLOSE, _) => {
                    let body = &self.buf[payload];
                    let code = body.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                    let reason = String::from_utf8_lossy(body.get(2..).unwrap_or(b""));
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        format!("the server closed the WebSocket ({code:?}: {reason})"),
                    ));
                }
                (OP_TEXT | OP_BINARY, true) if self.partial_opcode.is_none() => {
                    return Ok(Some(&self.buf[payload]));
                }
                (OP_TEXT | OP_BINARY, _) if self.partial_opcode.is_none() => {
                    self.partial_opcode = Some(frame.opcode);
                    self.partial.clear();
                    self.partial.extend_from_slice(&self.buf[payload]);
                }
                (OP_CONTINUATION, fin) if self.partial_opcode.is_some() => {
                    self.partial.extend_from_slice(&self.buf[payload]);
                    if self.partial.len() > MAX_MESSAGE {
                        return Err(invalid("a message is larger than 1 GiB"));
                    }
                    if fin {
                        self.partial_opcode = None;
                        return Ok(Some(&self.partial));
                    }
                }
                (opcode, _) => {
                    return Err(invalid(&format!(
                        "unexpected frame (opcode {opcode:#x}) for the message state"
                    )))
                }
            }
        }
    }

    /// Queues a text message for [`Socket::flush`].
    pub fn queue_text(&mut self, payload: &[u8]) {
        let key = self.next_key();
        encode(OP_TEXT, payload, key, &mut self.out);
    }

    /// Queues a close frame (1000, normal closure), so the server sees a
    /// client leaving rather than a connection breaking.
    pub fn queue_close(&mut self) {
        let key = self.next_key();
        encode(OP_CLOSE, &1000u16.to_be_bytes(), key, &mut self.out);
    }

    /// True if and only if frames wait to be written.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Writes every queued frame.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Gives back a read buffer that grew for a big message (a long history),
    /// once nothing in it is left to consume.
    pub fn shrink(&mut self) {
        if self.start == self.end && self.buf.len() > 2 * self.chunk {
            self.buf = vec![0; 2 * self.chunk];
            self.start = 0;
            self.end = 0;
        }
        self.partial = Vec::new();
    }

    fn next_key(&mut self) -> [u8; 4] {
        let mut x = self.mask;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask = x;
        x.to_le_bytes()
    }
}

/// Checks the pure parts of this module; panics on the first failure.
pub fn self_check() {
    for len in [0, 5, 125, 126, 65_535, 65_536, 200_000] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut wire = Vec::new();
        encode(OP_TEXT, &payload, [1, 2, 3, 4], &mut wire);
        for cut in [0, 1, wire.len() / 2, wire.len() - 1] {
            if cut < wire.len() {
                let partial = decode(&mut wire[..cut].to_vec()).unwrap();
                assert!(
                    matches!(partial, Decoded::Need(n) if n > cut),
                    "a cut frame ({cut} of {} bytes) asks for more",
                    wire.len()
                );
            }
        }
        let Decoded::Frame(frame) = decode(&mut wire).unwrap() else {
            panic!("a whole frame of {len} bytes decodes");
        };
        assert!(frame.fin && frame.opcode == OP_TEXT && frame.len == wire.len());
        assert_eq!(&wire[frame.payload], &payload[..], "payload of {len} bytes");
    }
    // An unmasked server frame followed by the start of the next one.
    let mut two = vec![0x81, 3, b'a', b'b', b'c', 0x89];
    assert_eq!(
        decode(&mut two).unwrap(),
        Decoded::Frame(Frame {
            fin: true,
            opcode: OP_TEXT,
            payload: 2..5,
            len: 5
        })
    );
    assert!(decode(&mut [0xC1, 0]).is_err(), "reserved bits are refused");

    assert_eq!(response_head(b"HTTP/1.1 101 Switching").unwrap(), None);
    assert_eq!(
        response_head(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81")
            .unwrap(),
        Some(56)
    );
    assert!(response_head(b"HTTP/1.1 400 Bad Request\r\n\r\n").is_err());
    assert_eq!(find(b"hello world", b"o w"), Some(4));
    assert_eq!(find(b"hi", b"long needle"), None);
}
