//! `lanboard tail`: prints the newest messages, then follows the board over
//! its WebSocket, reconnecting by itself, so every message is printed exactly
//! once and in id order however often the connection drops.
//!
//! The one piece of state is the last id printed (`Printer::last`): every
//! message at or below it is skipped, every resume asks for what follows it.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use actix_http::ws::Item;
use awc::ws::{Frame, Message as Outgoing};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::render::{self, Style};
use super::{BoardArgs, ClientError, Message, Remote, Socket};

/// Largest page the HTTP API gives (`protocol::MAX_PAGE`).
const PAGE: usize = crate::protocol::MAX_PAGE;
/// First wait before reconnecting; it doubles after each failed attempt.
const FIRST_RETRY: Duration = Duration::from_millis(200);
/// Longest wait between reconnection attempts.
const LAST_RETRY: Duration = Duration::from_secs(10);
/// How long the board may stay silent before the connection counts as lost.
/// The board pings every 15 s by default (--heartbeat), so four pings missed.
const SILENCE: Duration = Duration::from_secs(60);

// The flags below describe one run, not a machine's setup, so unlike the
// board's address and passphrase they have no environment twins.
#[derive(Debug, Args)]
pub struct TailArgs {
    #[command(flatten)]
    pub board: BoardArgs,

    /// Print every message after this id (instead of the newest --history).
    #[arg(long, value_name = "ID")]
    pub since: Option<u64>,

    /// How many of the newest messages to print first.
    #[arg(long, default_value_t = 10, value_name = "N", conflicts_with = "since")]
    pub history: usize,

    /// Print each message as one JSON line, exactly as the board sends it.
    #[arg(long)]
    pub json: bool,

    /// Keep printing new messages as they arrive (the default).
    #[arg(long, overrides_with = "no_follow")]
    pub follow: bool,

    /// Print the history and exit.
    #[arg(long, overrides_with = "follow")]
    pub no_follow: bool,
}

/// Runs `lanboard tail` until Ctrl-C, a closed stdout, or (with
/// `--no-follow`) the end of the history.
pub fn run(args: TailArgs) -> Result<(), ClientError> {
    let remote = Remote::new(&args.board)?;
    let style = if args.json {
        Style::Json
    } else {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Style::Text { color }
    };
    let mut printer = Printer {
        style,
        last: args.since.unwrap_or(0),
    };
    actix_web::rt::System::new().block_on(async move {
        let tailing = async {
            history(&remote, &args, &mut printer).await?;
            if args.no_follow {
                return Ok(());
            }
            follow(&remote, &mut printer).await
        };
        let outcome = tokio::select! {
            outcome = tailing => outcome,
            Ok(()) = tokio::signal::ctrl_c() => Ok(()),
        };
        match outcome {
            Ok(()) | Err(Halt::Closed) => Ok(()),
            Err(Halt::Failed(error)) => Err(error),
        }
    })
}

/// Why tailing stopped before it was told to.
enum Halt {
    /// Stdout was closed (say, by `head`): nobody is reading, a normal end.
    Closed,
    Failed(ClientError),
}

impl From<ClientError> for Halt {
    fn from(error: ClientError) -> Halt {
        Halt::Failed(error)
    }
}

/// Writes messages to stdout, each once: those at or below `last` are skipped.
struct Printer {
    style: Style,
    /// The id of the last message printed, or the id to start after.
    last: u64,
}

impl Printer {
    fn print(&mut self, messages: &[Message]) -> Result<(), Halt> {
        let mut text = String::new();
        for message in messages {
            if message.id > self.last {
                text.push_str(&render::render(message, self.style));
                self.last = message.id;
            }
        }
        if text.is_empty() {
            return Ok(());
        }
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|_| Halt::Closed)
    }
}

/// Prints the history the flags ask for: the newest N, or all after --since.
async fn history(remote: &Remote, args: &TailArgs, printer: &mut Printer) -> Result<(), Halt> {
    if args.since.is_some() {
        return catch_up(remote, printer, None).await;
    }
    let newest = latest(remote, args.history).await?;
    if args.history == 0 {
        // Nothing to print, but following starts after the newest message.
        printer.last = newest.last().map_or(0, |m| m.id);
        return Ok(());
    }
    printer.print(&newest)
}

/// The newest `count` messages, oldest first, paging back as needed; at
/// least the newest one when `count` is 0, to know where the board is.
async fn latest(remote: &Remote, count: usize) -> Result<Vec<Message>, ClientError> {
    let first = count.clamp(1, PAGE);
    let (mut messages, mut more) = remote.messages(&format!("limit={first}"), first).await?;
    while messages.len() < count && more && !messages.is_empty() {
        let before = messages[0].id;
        let wanted = (count - messages.len()).min(PAGE);
        let (mut older, older_more) = remote
            .messages(&format!("before={before}&limit={wanted}"), wanted)
            .await?;
        more = older_more;
        older.append(&mut messages);
        messages = older;
    }
    Ok(messages)
}

/// Prints every message after the last printed one, page by page over HTTP,
/// until the board has no more, or until `until` (an id the caller is about
/// to print anyway) was reached.
async fn catch_up(remote: &Remote, printer: &mut Printer, until: Option<u64>) -> Result<(), Halt> {
    loop {
        let (page, more) = remote
            .messages(&format!("since={}&limit={PAGE}", printer.last), PAGE)
            .await?;
        printer.print(&page)?;
        let reached = until.is_some_and(|until| printer.last >= until);
        if !more || page.is_empty() || reached {
            return Ok(());
        }
    }
}

/// Follows the board over its WebSocket for as long as it takes, resuming
/// after the last printed id whenever the connection drops.
async fn follow(remote: &Remote, printer: &mut Printer) -> Result<(), Halt> {
    let mut resume = Resume::default();
    let mut retry = FIRST_RETRY;
    // Whether the user was told the connection is lost (and so should be
    // told when it is back): once per outage, not once per attempt.
    let mut told_lost = false;
    loop {
        let lost = match remote.websocket(&resume.query(printer.last)).await {
            Ok(socket) => {
                match watch(remote, socket, printer, &mut resume, &mut told_lost).await? {
                    Ended::Reset => {
                        // The board started over: follow the new one from its first message.
                        printer.last = 0;
                        resume.epoch = None;
                        retry = FIRST_RETRY;
                        continue;
                    }
                    Ended::Dropped { reason, welcomed } => {
                        if welcomed {
                            retry = FIRST_RETRY;
                        }
                        reason
                    }
                }
            }
            Err(error) if is_transient(&error) => error.to_string(),
            Err(error) => return Err(error.into()),
        };
        if !told_lost {
            eprintln!("lanboard: lost the connection ({lost}); reconnecting");
            told_lost = true;
        }
        tokio::time::sleep(jitter(retry)).await;
        retry = (retry * 2).min(LAST_RETRY);
    }
}

/// Whether trying again later may help: a board that is down, restarting,
/// busy or waiting for its storage, as opposed to a wrong passphrase or an
/// untrusted certificate.
fn is_transient(error: &ClientError) -> bool {
    match error {
        ClientError::Unreachable { .. } | ClientError::Unavailable { .. } => true,
        ClientError::Refused { status, .. } => *status == 429,
        ClientError::Unexpected { status, .. } => *status >= 500,
        _ => false,
    }
}

/// Between half and all of `wait`, so clients that lost the same board do
/// not all come back at the same instant.
fn jitter(wait: Duration) -> Duration {
    let mut byte = [0u8; 1];
    // Without randomness the full wait is still a valid wait.
    let _ = getrandom::getrandom(&mut byte);
    wait / 2 + wait / 2 * u32::from(byte[0]) / 255
}

/// What a resume tells the board: the last id printed, and on a Redis board
/// the epoch the messages came from, so a board that started over in the
/// meantime says so (`board-reset`) instead of resuming in another history.
#[derive(Default)]
struct Resume {
    epoch: Option<String>,
}

impl Resume {
    fn query(&self, last: u64) -> String {
        match &self.epoch {
            Some(epoch) => format!("since={last}&epoch={}", query_escape(epoch)),
            None => format!("since={last}"),
        }
    }
}

/// Percent-escapes everything but unreserved characters.
fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// How one connection ended.
enum Ended {
    /// Lost for `reason`; `welcomed` when the board had answered with its
    /// messages first (so the next attempt waits the shortest time again).
    Dropped { reason: String, welcomed: bool },
    /// The board's history was lost and it started over (`board-reset`).
    Reset,
}

/// A protocol frame, its data kept as JSON text until its event is known.
#[derive(Deserialize)]
struct Event {
    event: String,
    data: Option<Box<RawValue>>,
    #[serde(default)]
    gap: bool,
    epoch: Option<String>,
}

/// One connection: prints what it brings until it drops.
async fn watch(
    remote: &Remote,
    mut socket: Socket,
    printer: &mut Printer,
    resume: &mut Resume,
    told_lost: &mut bool,
) -> Result<Ended, Halt> {
    let mut welcomed = false;
    let dropped = |reason: String, welcomed| Ok(Ended::Dropped { reason, welcomed });
    // A text message split into fragments, gathered until its last one.
    let mut fragments: Vec<u8> = Vec::new();
    loop {
        let frame = match tokio::time::timeout(SILENCE, socket.next()).await {
            Err(_) => return dropped(format!("no word from the board for {SILENCE:?}"), welcomed),
            Ok(None) => return dropped("the connection closed".to_owned(), welcomed),
            Ok(Some(Err(error))) => return dropped(error.to_string(), welcomed),
            Ok(Some(Ok(frame))) => frame,
        };
        let text = match frame {
            Frame::Text(bytes) => bytes.to_vec(),
            Frame::Continuation(Item::FirstText(bytes) | Item::FirstBinary(bytes)) => {
                fragments = bytes.to_vec();
                continue;
            }
            Frame::Continuation(Item::Continue(bytes)) => {
                fragments.extend_from_slice(&bytes);
                continue;
            }
            Frame::Continuation(Item::Last(bytes)) => {
                fragments.extend_from_slice(&bytes);
                std::mem::take(&mut fragments)
            }
            Frame::Ping(bytes) => {
                if let Err(error) = socket.send(Outgoing::Pong(bytes)).await {
                    return dropped(error.to_string(), welcomed);
                }
                continue;
            }
            Frame::Close(reason) => {
                // Answering the close is a courtesy; the connection ends either way.
                let _ = socket.send(Outgoing::Close(reason.clone())).await;
                let why = reason
                    .map(|r| format!("{:?} {}", r.code, r.description.unwrap_or_default()))
                    .unwrap_or_default();
                return dropped(format!("the board closed the connection {why}"), welcomed);
            }
            Frame::Pong(_) | Frame::Binary(_) => continue,
        };
        let event: Event = match serde_json::from_slice(&text) {
            Ok(event) => event,
            Err(error) => {
                log::warn!("a frame that is not a protocol event: {error}");
                continue;
            }
        };
        match event.event.as_str() {
            "messages-available" => {
                let messages = match parse_data(event.data.as_deref(), Message::parse_list) {
                    Some(messages) => messages,
                    None => return dropped("a malformed messages-available".to_owned(), welcomed),
                };
                if event.gap {
                    // The board sent only the newest of what was missed: the
                    // rest comes over HTTP first, so nothing is skipped.
                    let until = messages.first().map(|m| m.id.saturating_sub(1));
                    if let Err(halt) = catch_up(remote, printer, until).await {
                        return match halt {
                            Halt::Failed(error) if is_transient(&error) => {
                                dropped(error.to_string(), welcomed)
                            }
                            halt => Err(halt),
                        };
                    }
                }
                printer.print(&messages)?;
                if event.epoch.is_some() {
                    resume.epoch = event.epoch;
                }
                welcomed = true;
                if std::mem::take(told_lost) {
                    eprintln!("lanboard: reconnected to {}", remote.url());
                }
            }
            "message-added" => {
                match parse_data(event.data.as_deref(), |text| {
                    serde_json::from_str::<Box<RawValue>>(text).and_then(Message::parse)
                }) {
                    Some(message) => printer.print(&[message])?,
                    None => log::warn!("a malformed message-added"),
                }
            }
            "board-reset" => {
                let said = event
                    .data
                    .as_deref()
                    .and_then(|d| serde_json::from_str::<serde_json::Value>(d.get()).ok())
                    .and_then(|d| d["message"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "the board's history was lost".to_owned());
                eprintln!("lanboard: {said}; the board started over, following the new one");
                // Closing is a courtesy; the next connection starts afresh either way.
                let _ = socket.close().await;
                return Ok(Ended::Reset);
            }
            // presence, and whatever later versions add, are not for this client.
            _ => {}
        }
    }
}

fn parse_data<T>(
    data: Option<&RawValue>,
    parse: impl FnOnce(&str) -> Result<T, serde_json::Error>,
) -> Option<T> {
    data.and_then(|data| parse(data.get()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_waits_between_half_and_all_of_the_wait() {
        for _ in 0..100 {
            let wait = jitter(Duration::from_secs(2));
            assert!(wait >= Duration::from_secs(1) && wait <= Duration::from_secs(2));
        }
    }

    #[test]
    fn a_resume_names_the_epoch_escaped() {
        let resume = Resume {
            epoch: Some("a b/c".to_owned()),
        };
        assert_eq!(resume.query(7), "since=7&epoch=a%20b%2Fc");
        assert_eq!(Resume::default().query(0), "since=0");
    }

    #[test]
    fn only_a_board_that_may_come_back_is_retried() {
        let unreachable = ClientError::Unreachable {
            url: "http://x".into(),
            reason: "refused".into(),
        };
        assert!(is_transient(&unreachable));
        assert!(!is_transient(&ClientError::WrongPassphrase {
            url: "http://x".into()
        }));
    }
}
