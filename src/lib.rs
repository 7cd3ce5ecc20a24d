//! lanboard: a real-time message board for one office network, served by one
//! executable.
//!
//! # Layout
//! - `cli`: the command line and its environment twins, turned into a `Config`.
//! - `server`: opens the store, binds, wires the routes, runs until shutdown.
//! - `http`: the routes: page and HTTP API.
//! - `ws`: the hand-written WebSocket transport: the upgrade, one client's
//!   socket (whole messages in, ready-made frames out, limits enforced from
//!   frame headers) and one connection's session from welcome to close.
//! - `protocol`: the JSON frames and the validation of what clients post.
//! - `board`: the hub: recent-message window, subscribers, fan-out, presence.
//! - `writer`: the thread that commits posts in batches and assigns ids.
//! - `store`: the history log and its live feed, in SQLite, memory or Redis.
//! - `transfer`: `export` and `import` as JSON Lines.
//! - `guard`: passphrase, Origin check, per-address limits, token buckets.
//! - `net`: the addresses to share, and their QR codes.
//! - `assets`: the embedded web client.
//!
//! # Events (protocol v1, one JSON object per text frame)
//! | event                | direction        | data                                  |
//! |----------------------|------------------|---------------------------------------|
//! | `messages-available` | server -> client | `[Message, ...]`, oldest first        |
//! | `add-message`        | client -> server | `{name, message, cid?}`, optional `ack` |
//! | `message-added`      | server -> all    | `Message`, in id order                |
//! | `ack`                | server -> sender | `Message`, with the client's `ack`    |
//! | `error`              | server -> sender | `{code, message}`, with `ack` if any  |
//! | `load-older`         | client -> server | `{before, limit}`                     |
//! | `older-messages`     | server -> sender | `{messages, more}`                    |
//! | `presence`           | server -> all    | `{online}`, over every node           |
//! | `board-reset`        | server -> all    | `{message}`: the history was lost     |

pub mod assets;
pub mod board;
pub mod cli;
pub mod guard;
pub mod http;
pub mod net;
pub mod protocol;
pub mod server;
pub mod store;
pub mod transfer;
pub mod writer;
pub mod ws;
