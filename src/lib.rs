//! lanboard: a real-time message board for one office network, served by one
//! executable.
//!
//! # Layout
//! - `cli`: the command line and its environment twins, turned into a `Config`.
//! - `server`: starts a board step by step (store, board and its feed,
//!   writer, guard, socket, routes) and runs it until shutdown.
//! - `http`: the routes: page and HTTP API.
//! - `request_head`: a plain connection reaches the HTTP layer once its first
//!   request head has arrived, so only slow clients are timed out.
//! - `capacity`: the open-file limit, raised at start, and how many
//!   connections it lets one node hold.
//! - `ws`: the hand-written WebSocket transport: the upgrade, one client's
//!   socket (whole messages in, ready-made frames out, limits enforced from
//!   frame headers) and one connection's session from welcome to close.
//! - `protocol`: the JSON frames and the validation of what clients post.
//! - `board`: the hub: recent-message window and its epoch, subscribers,
//!   fan-out, presence; the `Follower` a shared store's tail feeds.
//! - `mailbox`: one connection's queue of board frames, bounded in bytes.
//! - `writer`: the thread that owns the log's writing end: commits posts,
//!   edits, deletions and blocks in batches, survives a failing store, tells the server if it ever stops.
//! - `store`: the history log (`Log`, persistence only) in SQLite, memory or
//!   Redis, and the Redis tail that feeds a `Follower`.
//! - `files`: uploads (`POST /api/files`) and downloads (`GET /files/<id>`):
//!   names, media types, and the headers that keep files inert.
//! - `transfer`: `export` and `import` as JSON Lines, files beside them.
//! - `tls`: `--tls-cert`/`--tls-key`, and plain HTTP on the TLS port
//!   answered with a redirect to `https://`.
//! - `client`: `send` and `tail`, the board from scripts and terminals over
//!   its HTTP API and WebSocket (https and wss too).
//! - `guard`: passphrase, Origin check, per-address limits, token buckets.
//! - `net`: the addresses to share, and their QR codes.
//! - `mdns`: the board's `NAME.local` and service on the local network (`--mdns`).
//! - `assets`: the embedded web client.
//!
//! # Events (protocol v1, one JSON object per text frame)
//! | event                | direction        | data                                  |
//! |----------------------|------------------|---------------------------------------|
//! | `messages-available` | server -> client | `[Message, ...]`, oldest first        |
//! | `add-message`        | client -> server | `{name, message, cid?, key?, files?}`, optional `ack` |
//! | `message-added`      | server -> all    | `Message`, in id order                |
//! | `ack`                | server -> sender | `Message`, with the client's `ack`    |
//! | `error`              | server -> sender | `{code, message}`, with `ack` if any  |
//! | `load-older`         | client -> server | `{before, limit}`                     |
//! | `older-messages`     | server -> sender | `{messages, more}`                    |
//! | `edit-message`       | client -> server | `{id, message, key}`, optional `ack`  |
//! | `delete-message`     | client -> server | `{id, key}`, optional `ack`           |
//! | `block-sender`       | client -> server | `{id, minutes, key}` (operator secret) |
//! | `message-edited`     | server -> all    | `Message` with `edited` and `change`  |
//! | `message-deleted`    | server -> all    | `{id, change}`                        |
//! | `presence`           | server -> all    | `{online}`, over every node           |
//! | `board-reset`        | server -> all    | `{message}`: the history was lost     |

pub mod assets;
pub mod board;
pub mod capacity;
pub mod cli;
pub mod client;
pub mod files;
pub mod guard;
pub mod http;
pub mod mailbox;
pub mod mdns;
pub mod net;
pub mod protocol;
pub mod request_head;
pub mod search;
pub mod server;
pub mod store;
pub mod tls;
pub mod transfer;
pub mod writer;
pub mod ws;
