//! The WebSocket transport: everything between an HTTP upgrade request on
//! `/ws` and the board.
//!
//! - `upgrade`: the checks an upgrade request passes, the `101` answer (after
//!   whatever the HTTP layer still owed the client), and the hand-over of the
//!   raw connection to its session.
//! - `header`: reads a frame's header before its payload, so a limit is
//!   enforced before the bytes it limits are buffered.
//! - `socket`: one client's socket: whole messages in, ready-made frames out.
//! - `session`: one connection's life, from the welcome frames to the
//!   closing handshake.
//!
//! # Why hand-written
//! The transport sits on actix-http's WebSocket codec and its upgrade hook
//! rather than on actix-ws, because each connection then drives its own
//! socket. Measured with the fan-out benchmark (`benches/fanout.rs`) against
//! the same board on actix-ws: an idle connection costs 5.7 KiB instead of
//! 16.7 KiB at 10,000 connections (actix-ws keeps a fixed 8 KiB read and 8
//! KiB write buffer per connection; here an idle connection holds no buffer
//! at all), and 1,000 clients receive 5.91M instead of 1.73M deliveries/s
//! (every board frame is encoded once and written by every connection with
//! one vectored write per batch, with no second queue and no copy into a
//! response stream).
//!
//! # Which RFC 6455 rules are whose
//! The codec (`actix_http::ws::Codec`, as the rest of the actix stack uses
//! it) enforces: masked client frames (§5.3), zero RSV bits without an
//! extension (§5.2), known opcodes, control frames of at most 125 bytes and
//! never fragmented (§5.5), continuation frames only inside a fragmented
//! message and no new data frame inside one (§5.4), valid close codes and
//! UTF-8 close reasons (§7.4), and the handshake's `Sec-WebSocket-Key` and
//! `-Version` (§4.2.1, in `upgrade`).
//!
//! This module enforces itself:
//! - the size limit (`--max-frame-bytes`, close 1009) from each frame's
//!   header, before its payload is read, for single frames and for the
//!   running total of a fragmented message (`header`, `socket`); a control
//!   frame that declares more than 125 bytes is refused the same way (1002);
//! - a read buffer that never holds more than the limit plus one frame
//!   header (`socket`);
//! - UTF-8 of text messages, checked once they are whole, since a character
//!   may be split across fragments (§8.1, close 1007);
//! - the closing handshake (§7.1): the close frame goes out after every
//!   frame queued before it, and the server waits, bounded, for the client's
//!   own close frame before letting go of the socket (`session`).

mod header;
pub mod session;
pub mod socket;
pub mod upgrade;

pub use session::{SessionConfig, Sessions};
pub use socket::{close_reason, ping, pong, text, Incoming, IntoStream, ReadError, Socket, Stream};
