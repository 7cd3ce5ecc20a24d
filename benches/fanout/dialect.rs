//! The two boards' wire formats as the generator needs them: lanboard's
//! `{"event","data"}` frames and the original's Socket.IO v4 packets, plus the
//! stamp every generated message carries in its text.
//!
//! The original echoes a post as-is, without an id, so each message names its
//! sender, its sequence number and its send time itself:
//! `fo|<sender>|<seq>|<sent ns>|` and filler up to [`TEXT_LEN`] bytes. Frames
//! are recognised by prefix and the stamp read by a small scan, because a
//! full JSON parse per delivery would make the generator the bottleneck.

use std::io::Write;

use crate::wire::find;

/// Name on every generated message; it needs no JSON escaping.
pub const NAME: &str = "fanout";
/// Length of a generated message text in bytes (all ASCII).
pub const TEXT_LEN: usize = 100;
const STAMP_TAG: &[u8] = b"fo|";
const FILLER: &[u8] = b"the quick brown fox jumps over the lazy dog while the board fans out ";

/// Who sent a message, which of theirs it is, and when it left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub sender: u32,
    pub seq: u32,
    /// Nanoseconds since the generator's common start instant (in scenario
    /// 6, whose clients live in several processes, since the Unix epoch).
    pub sent_ns: u64,
}

impl Stamp {
    /// The (sender, seq) pair as one number, for the order checks.
    pub fn key(self) -> u64 {
        (u64::from(self.sender) << 32) | u64::from(self.seq)
    }
}

/// Appends the text of a message carrying `stamp` to `out`.
pub fn write_text(stamp: Stamp, out: &mut Vec<u8>) {
    let start = out.len();
    // Writing into a Vec cannot fail.
    let _ = write!(out, "fo|{}|{}|{}|", stamp.sender, stamp.seq, stamp.sent_ns);
    let mut filler = FILLER.iter().cycle();
    while out.len() - start < TEXT_LEN {
        // The filler is a non-empty cycle, so it never runs out.
        out.push(*filler.next().expect("an endless filler"));
    }
}

/// Reads the stamp at the start of a message text.
pub fn read_stamp(text: &[u8]) -> Option<Stamp> {
    let rest = text.strip_prefix(STAMP_TAG)?;
    let (sender, rest) = read_number(rest)?;
    let (seq, rest) = read_number(rest)?;
    let (sent_ns, _) = read_number(rest)?;
    Some(Stamp {
        sender: u32::try_from(sender).ok()?,
        seq: u32::try_from(seq).ok()?,
        sent_ns,
    })
}

/// Reads decimal digits up to a `|`, returning the number and what follows.
fn read_number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes.iter().position(|&b| !b.is_ascii_digit())?;
    if digits == 0 || digits > 19 || bytes[digits] != b'|' {
        return None;
    }
    let value = bytes[..digits]
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    Some((value, &bytes[digits + 1..]))
}

/// What one text message from a server means to the generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Socket.IO's open packet: answer with a connect request.
    Open,
    /// Socket.IO's ping: answer with a pong.
    Ping,
    /// The history a new client receives.
    Welcome,
    /// A message reached this client; `id` is lanboard's.
    Added { id: Option<u64>, stamp: Stamp },
    /// The server refused something or dropped the client.
    Refused(String),
    /// lanboard's count of the people online.
    Presence,
    /// Anything else (the connect answer, acks): ignored.
    Other,
}

/// What the senders post: the stamped text alone, or the same text with a
/// file (an image uploaded before the run), whose `File` every delivery then
/// carries too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posts {
    Text,
    Image,
}

impl Posts {
    /// What the tables add to the board's name.
    pub fn suffix(self) -> &'static str {
        match self {
            Posts::Text => "",
            Posts::Image => " + image",
        }
    }

    /// The name in the JSON document.
    pub fn key(self) -> &'static str {
        match self {
            Posts::Text => "text",
            Posts::Image => "image",
        }
    }
}

/// The `files` of a post carrying the file `id`.
pub fn files_json(id: &str) -> Vec<u8> {
    format!(r#"["{id}"]"#).into_bytes()
}

/// Which board is on the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Dialect {
    Lanboard,
    SocketIo,
}

const LB_ADDED: &[u8] = br#"{"event":"message-added","data":{"id":"#;
const LB_EVENT: &[u8] = br#""event":""#;
const LB_ID: &[u8] = br#""id":"#;
const SIO_ADDED: &[u8] = br#"42["message-added","#;
const SIO_WELCOME: &[u8] = br#"42["messages-available""#;
const MESSAGE_KEY: &[u8] = br#""message":""#;

impl Dialect {
    /// Where the WebSocket is.
    pub fn path(self) -> &'static str {
        match self {
            Dialect::Lanboard => "/ws",
            Dialect::SocketIo => "/socket.io/?EIO=4&transport=websocket",
        }
    }

    /// Classifies one text message from the server.
    pub fn classify(self, payload: &[u8]) -> Event {
        match self {
            Dialect::Lanboard => {
                // The board writes `message-added` frames itself, event
                // first: the fast path. Other frames may come from
                // `serde_json::json!`, whose keys are sorted, so their event
                // is looked up wherever it is.
                let (after_id, event) = match payload.strip_prefix(LB_ADDED) {
                    Some(rest) => (Some(rest), &b"message-added"[..]),
                    None => (
                        find(payload, LB_ID).map(|at| &payload[at + LB_ID.len()..]),
                        event_name(payload).unwrap_or(b""),
                    ),
                };
                match event {
                    b"message-added" => {
                        let rest = after_id.unwrap_or(b"");
                        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                        let id = rest[..digits]
                            .iter()
                            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
                        match stamp_after_key(payload) {
                            Some(stamp) if digits > 0 => Event::Added {
                                id: Some(id),
                                stamp,
                            },
                            _ => unreadable(payload),
                        }
                    }
                    b"messages-available" => Event::Welcome,
                    b"presence" => Event::Presence,
                    b"error" => Event::Refused(format!("error event: {}", clip(payload))),
                    _ => Event::Other,
                }
            }
            Dialect::SocketIo => match payload {
                [b'0', b'{', ..] => Event::Open,
                b"2" => Event::Ping,
                [b'4', b'1', ..] => Event::Refused("the server disconnected the socket".into()),
                [b'4', b'4', ..] => Event::Refused(format!("connect error: {}", clip(payload))),
                _ if payload.starts_with(SIO_ADDED) => {
                    match stamp_after_key(&payload[SIO_ADDED.len()..]) {
                        Some(stamp) => Event::Added { id: None, stamp },
                        None => unreadable(payload),
                    }
                }
                _ if payload.starts_with(SIO_WELCOME) => Event::Welcome,
                _ => Event::Other,
            },
        }
    }

    /// The payload of an `add-message` carrying `text` (plain ASCII without
    /// quotes or backslashes, so it needs no escaping) and, when `files` is
    /// not empty, the files it names: a JSON array of file ids, which only
    /// lanboard takes.
    pub fn add_message(self, text: &[u8], files: &[u8], out: &mut Vec<u8>) {
        out.clear();
        let (open, close): (&[u8], &[u8]) = match self {
            Dialect::Lanboard => (br#"{"event":"add-message","data":{"name":""#, b"}}"),
            Dialect::SocketIo => (br#"42["add-message",{"name":""#, b"}]"),
        };
        out.extend_from_slice(open);
        out.extend_from_slice(NAME.as_bytes());
        out.extend_from_slice(br#"",""#);
        out.extend_from_slice(&MESSAGE_KEY[1..]);
        out.extend_from_slice(text);
        out.push(b'"');
        if !files.is_empty() {
            out.extend_from_slice(br#","files":"#);
            out.extend_from_slice(files);
        }
        out.extend_from_slice(close);
    }

    /// The answer to [`Event::Open`], if the dialect has one.
    pub fn connect_request(self) -> Option<&'static [u8]> {
        match self {
            Dialect::Lanboard => None,
            Dialect::SocketIo => Some(b"40"),
        }
    }

    /// The answer to [`Event::Ping`].
    pub fn pong(self) -> &'static [u8] {
        b"3"
    }
}

/// The value of the `"event"` key. Quotes inside JSON strings are escaped,
/// so the first `"event":"` is the key itself.
fn event_name(json: &[u8]) -> Option<&[u8]> {
    let start = find(json, LB_EVENT)? + LB_EVENT.len();
    let len = json[start..].iter().position(|&b| b == b'"')?;
    Some(&json[start..start + len])
}

/// The stamp in the first `"message":"` value. The name before it is ours and
/// holds no quote, so the first such key is the message's own.
fn stamp_after_key(json: &[u8]) -> Option<Stamp> {
    let at = find(json, MESSAGE_KEY)?;
    read_stamp(&json[at + MESSAGE_KEY.len()..])
}

fn unreadable(payload: &[u8]) -> Event {
    Event::Refused(format!(
        "a message without a fan-out stamp: {}",
        clip(payload)
    ))
}

/// The start of a frame, for error messages.
fn clip(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(&payload[..payload.len().min(200)]);
    text.into_owned()
}

/// Checks the pure parts of this module; panics on the first failure.
pub fn self_check() {
    let stamp = Stamp {
        sender: 7,
        seq: 4_000_000_000,
        sent_ns: 123_456_789_012,
    };
    let mut text = Vec::new();
    write_text(stamp, &mut text);
    assert_eq!(text.len(), TEXT_LEN);
    assert!(text.iter().all(|b| b.is_ascii_graphic() || *b == b' '));
    assert!(
        !text.ends_with(b" "),
        "the server would trim a trailing space"
    );
    assert_eq!(read_stamp(&text), Some(stamp));
    assert_eq!(read_stamp(b"fo|1|2|"), None);
    assert_eq!(read_stamp(b"fo|1|x|3|"), None);
    assert_eq!(read_stamp(b"hello"), None);

    let id = "ab".repeat(32);
    let mut payload = Vec::new();
    Dialect::Lanboard.add_message(&text, &files_json(&id), &mut payload);
    let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(value["data"]["files"], serde_json::json!([id]));
    assert_eq!(
        value["data"]["message"].as_str().unwrap().as_bytes(),
        &text[..]
    );
    for dialect in [Dialect::Lanboard, Dialect::SocketIo] {
        let mut payload = Vec::new();
        dialect.add_message(&text, b"", &mut payload);
        let value: serde_json::Value = match dialect {
            Dialect::Lanboard => serde_json::from_slice(&payload).unwrap(),
            Dialect::SocketIo => serde_json::from_slice(&payload[2..]).unwrap(),
        };
        let data = match dialect {
            Dialect::Lanboard => {
                assert_eq!(value["event"], "add-message");
                &value["data"]
            }
            Dialect::SocketIo => {
                assert_eq!(value[0], "add-message");
                &value[1]
            }
        };
        assert_eq!(data["name"], NAME);
        assert_eq!(data["message"].as_str().unwrap().as_bytes(), &text[..]);
    }

    let text = String::from_utf8(text).unwrap();
    let added = format!(
        r#"{{"event":"message-added","data":{{"id":42,"name":"{NAME}","message":"{text}","time":1}}}}"#
    );
    assert_eq!(
        Dialect::Lanboard.classify(added.as_bytes()),
        Event::Added {
            id: Some(42),
            stamp
        }
    );
    // A message with a file: the file's JSON comes after the text.
    let with_file = format!(
        r#"{{"event":"message-added","data":{{"id":43,"name":"{NAME}","message":"{text}","time":1,"files":[{{"id":"{id}","name":"fanout.png","size":9,"type":"image/png"}}]}}}}"#
    );
    assert_eq!(
        Dialect::Lanboard.classify(with_file.as_bytes()),
        Event::Added {
            id: Some(43),
            stamp
        }
    );
    // A name that is not ours, containing the key's words, still finds the message.
    let added = format!(
        r#"{{"event":"message-added","data":{{"id":3,"name":"\"message\":\"","message":"{text}","time":1}}}}"#
    );
    assert!(matches!(
        Dialect::Lanboard.classify(added.as_bytes()),
        Event::Added { id: Some(3), .. }
    ));
    // The same message with sorted keys, as `serde_json::json!` writes it.
    let sorted = format!(
        r#"{{"data":{{"id":9,"message":"{text}","name":"{NAME}","time":1}},"event":"message-added"}}"#
    );
    assert_eq!(
        Dialect::Lanboard.classify(sorted.as_bytes()),
        Event::Added { id: Some(9), stamp }
    );
    // Refusals are compared by kind only: their text is for people.
    let refused = || Event::Refused(String::new());
    let cases = [
        (
            Dialect::Lanboard,
            r#"{"event":"messages-available","data":[]}"#,
            Event::Welcome,
        ),
        (
            Dialect::Lanboard,
            r#"{"event":"presence","data":{"online":3}}"#,
            Event::Presence,
        ),
        (
            Dialect::Lanboard,
            r#"{"event":"error","data":{"code":"x"}}"#,
            refused(),
        ),
        (
            Dialect::Lanboard,
            r#"{"data":{"code":"rate-limited"},"event":"error"}"#,
            refused(),
        ),
        (
            Dialect::Lanboard,
            r#"{"ack":3,"data":{"id":1},"event":"ack"}"#,
            Event::Other,
        ),
        (
            Dialect::Lanboard,
            r#"{"event":"message-added","data":{"id":1,"name":"a","message":"hi","time":1}}"#,
            refused(),
        ),
        (
            Dialect::SocketIo,
            r#"0{"sid":"a","pingInterval":25000}"#,
            Event::Open,
        ),
        (Dialect::SocketIo, "2", Event::Ping),
        (Dialect::SocketIo, r#"40{"sid":"b"}"#, Event::Other),
        (
            Dialect::SocketIo,
            r#"42["messages-available",[]]"#,
            Event::Welcome,
        ),
        (Dialect::SocketIo, "41", refused()),
    ];
    for (dialect, frame, expected) in cases {
        let event = dialect.classify(frame.as_bytes());
        assert_eq!(
            std::mem::discriminant(&event),
            std::mem::discriminant(&expected),
            "{dialect:?} {frame} gave {event:?}"
        );
    }
    let added = format!(r#"42["message-added",{{"name":"{NAME}","message":"{text}"}}]"#);
    assert_eq!(
        Dialect::SocketIo.classify(added.as_bytes()),
        Event::Added { id: None, stamp }
    );
}
