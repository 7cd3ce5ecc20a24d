//! Wire protocol v1: the JSON frames that travel over `/ws` and the HTTP API.
//!
//! Every frame is one JSON object `{"event": <string>, "data": <value>}`, with a
//! top-level `"ack"` on replies to a client that asked for one. This module owns
//! the shapes of those frames, the validation of what a client posts (so an
//! invalid [`Draft`] cannot exist) and the error codes a client can receive.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One stored message, as every client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Assigned by the server: starts at 1, strictly increasing, never reused.
    pub id: u64,
    pub name: String,
    pub message: String,
    /// Milliseconds since the Unix epoch, assigned by the server.
    pub time: i64,
    /// When the message was last edited (ms since the Unix epoch); absent
    /// for a message never edited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited: Option<i64>,
    /// The files the message carries, in the order they were attached;
    /// absent for a message without files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<File>,
}

/// A file uploaded to the board (`POST /api/files`), as messages carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct File {
    /// SHA-256 of the content, as 64 lowercase hex digits: the same content
    /// is the same file.
    pub id: String,
    /// The uploader's file name, cleaned (see `files::clean_name`).
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// The media type it is served with (see `files::media`).
    #[serde(rename = "type")]
    pub media_type: String,
}

/// Most files one message may carry.
pub const MAX_FILES_PER_MESSAGE: usize = 10;

/// True for a file id: 64 lowercase hex digits.
pub fn is_file_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Limits applied to what clients post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_name_chars: usize,
    pub max_message_chars: usize,
}

/// The name shown for a client that leaves the Name field empty.
pub const ANONYMOUS: &str = "Anonymous";

/// A validated message that has not been stored yet: the only way to build
/// one is [`Draft::parse`], so everything that reaches the store obeys the
/// limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    name: String,
    message: String,
    /// The client's own id for this post, so a resend after a lost ack is
    /// answered with the original instead of being stored twice.
    cid: Option<String>,
    /// The author key the post was sent with, which may later edit or
    /// delete it. Only its hash is ever stored.
    key: Option<String>,
    /// The address the post came from (an IPv6 host by its /64), kept with
    /// the message so the operator can block its sender; shown to no one.
    sender: Option<String>,
    /// The ids of the files the post carries; the store turns them into
    /// [`File`]s, refusing an id it does not hold.
    files: Vec<String>,
}

/// Longest `cid` a client may choose.
pub const MAX_CID_CHARS: usize = 64;

/// Shortest and longest author key (printable ASCII).
pub const KEY_CHARS: std::ops::RangeInclusive<usize> = 16..=128;

/// Most minutes a `block-sender` may block for: a week.
pub const MAX_BLOCK_MINUTES: u64 = 10_080;

impl Draft {
    /// Validates the `data` of an `add-message` (or the body of a POST).
    ///
    /// The name is trimmed and an empty one becomes "Anonymous"; control
    /// characters other than newline and tab are removed from both fields
    /// (they can reorder or hide text in other people's browsers); the message
    /// loses trailing whitespace and must not be blank.
    pub fn parse(data: &Value, limits: Limits) -> Result<Draft, Rejection> {
        let object = data.as_object().ok_or_else(|| {
            Rejection::new(
                Code::BadRequest,
                "data must be an object like {\"name\": \"...\", \"message\": \"...\"}",
            )
        })?;
        let name = match object.get("name") {
            None | Some(Value::Null) => "",
            Some(Value::String(name)) => name.as_str(),
            Some(_) => return Err(Rejection::new(Code::BadRequest, "name must be a string")),
        };
        let files = file_ids(object)?;
        let message = match object.get("message") {
            Some(Value::String(message)) => message.as_str(),
            // A post of files alone needs no text.
            None | Some(Value::Null) if !files.is_empty() => "",
            None | Some(Value::Null) => {
                return Err(Rejection::new(Code::EmptyMessage, "message is missing"))
            }
            Some(_) => return Err(Rejection::new(Code::BadRequest, "message must be a string")),
        };
        let cid = match object.get("cid") {
            None | Some(Value::Null) => None,
            Some(Value::String(cid))
                if (1..=MAX_CID_CHARS).contains(&cid.chars().count())
                    && !cid.chars().any(char::is_control) =>
            {
                Some(cid.clone())
            }
            Some(_) => {
                return Err(Rejection::new(
                    Code::BadRequest,
                    format!("cid must be a string of 1 to {MAX_CID_CHARS} printable characters"),
                ))
            }
        };
        let key = optional_key(object)?;
        let draft = if files.is_empty() {
            Draft::new(name, message, limits)?
        } else {
            Draft::with_files(name, message, files, limits)?
        };
        Ok(draft.with_cid(cid).with_key(key))
    }

    /// Validates a post of `files` (ids, checked by the caller) whose text
    /// may be blank.
    fn with_files(
        name: &str,
        message: &str,
        files: Vec<String>,
        limits: Limits,
    ) -> Result<Draft, Rejection> {
        let text = if message.trim().is_empty() {
            String::new()
        } else {
            clean_message(message, limits)?
        };
        Ok(Draft {
            message: text,
            files,
            ..Draft::new(name, "-", limits)?
        })
    }

    /// The ids of the files the post carries, in order.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// The same draft carrying the client's id `cid`.
    pub fn with_cid(self, cid: Option<String>) -> Draft {
        Draft { cid, ..self }
    }

    /// The same draft carrying the author key `key`.
    pub fn with_key(self, key: Option<String>) -> Draft {
        Draft { key, ..self }
    }

    /// The same draft sent from `ip`.
    pub fn with_sender(self, ip: Option<std::net::IpAddr>) -> Draft {
        Draft {
            sender: ip.map(|ip| sender_address(ip).to_string()),
            ..self
        }
    }

    pub fn cid(&self) -> Option<&str> {
        self.cid.as_deref()
    }

    /// The author key, as sent: compared with the operator secret, never stored.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// What the store keeps of the author key: its hash.
    pub fn key_hash(&self) -> Option<String> {
        self.key.as_deref().map(key_hash)
    }

    /// The sender's address (see [`sender_address`]), when known.
    pub fn sender(&self) -> Option<&str> {
        self.sender.as_deref()
    }

    /// Validates a name and a message given as strings.
    pub fn new(name: &str, message: &str, limits: Limits) -> Result<Draft, Rejection> {
        let name = strip_controls(name.trim(), false);
        let name = match name.trim() {
            "" => ANONYMOUS.to_owned(),
            trimmed => trimmed.to_owned(),
        };
        if name.chars().count() > limits.max_name_chars {
            return Err(Rejection::new(
                Code::NameTooLong,
                format!("name is longer than {} characters", limits.max_name_chars),
            ));
        }
        Ok(Draft {
            name,
            message: clean_message(message, limits)?,
            cid: None,
            key: None,
            sender: None,
            files: Vec::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Turns the draft into a stored message with the id and time the store
    /// gave it, and the files its ids name.
    pub fn into_message(self, id: u64, time: i64, files: Vec<File>) -> Message {
        Message {
            id,
            name: self.name,
            message: self.message,
            time,
            edited: None,
            files,
        }
    }
}

/// Validates a message's text as posted or edited: control characters other
/// than newline and tab removed, trailing whitespace and leading blank lines
/// trimmed, not blank, within the limit.
pub fn clean_message(message: &str, limits: Limits) -> Result<String, Rejection> {
    let message = strip_controls(message, true);
    let message = message.trim_end().trim_start_matches(['\n', '\r']);
    if message.trim().is_empty() {
        return Err(Rejection::new(Code::EmptyMessage, "message is empty"));
    }
    if message.chars().count() > limits.max_message_chars {
        return Err(Rejection::new(
            Code::MessageTooLong,
            format!(
                "message is longer than {} characters",
                limits.max_message_chars
            ),
        ));
    }
    Ok(message.to_owned())
}

/// The `files` of a post: absent, or up to [`MAX_FILES_PER_MESSAGE`] file
/// ids; an id listed twice counts once.
fn file_ids(object: &serde_json::Map<String, Value>) -> Result<Vec<String>, Rejection> {
    let bad = || {
        Rejection::new(
            Code::BadRequest,
            format!(
                "files must be a list of at most {MAX_FILES_PER_MESSAGE} file ids \
                 (the \"id\" POST /api/files answered with: 64 hex digits)"
            ),
        )
    };
    let list = match object.get("files") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(bad()),
    };
    let mut ids: Vec<String> = Vec::with_capacity(list.len());
    for id in list {
        match id {
            Value::String(id) if is_file_id(id) => {
                if !ids.contains(id) {
                    ids.push(id.clone());
                }
            }
            _ => return Err(bad()),
        }
    }
    if ids.len() > MAX_FILES_PER_MESSAGE {
        return Err(bad());
    }
    Ok(ids)
}

/// The `key` of a post: absent, or 16 to 128 printable ASCII characters.
fn optional_key(object: &serde_json::Map<String, Value>) -> Result<Option<String>, Rejection> {
    match object.get("key") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(key)) if is_key(key) => Ok(Some(key.clone())),
        Some(_) => Err(bad_key()),
    }
}

/// The `key` an edit, a deletion or a block must carry.
fn required_key(data: &Value) -> Result<String, Rejection> {
    match data.get("key") {
        Some(Value::String(key)) if is_key(key) => Ok(key.clone()),
        _ => Err(bad_key()),
    }
}

/// True for 16 to 128 printable ASCII characters (space included).
pub fn is_key(key: &str) -> bool {
    KEY_CHARS.contains(&key.len()) && key.bytes().all(|b| (b' '..=b'~').contains(&b))
}

fn bad_key() -> Rejection {
    Rejection::new(
        Code::BadRequest,
        format!(
            "key must be a string of {} to {} printable ASCII characters",
            KEY_CHARS.start(),
            KEY_CHARS.end()
        ),
    )
}

/// SHA-256 of an author key, as hex: what is stored to recognise its posts.
pub fn key_hash(key: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, key.as_bytes()).as_ref())
}

/// Lowercase hex of `bytes`, two digits a byte: file ids, key hashes,
/// tokens and ETags.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(DIGITS[usize::from(b >> 4)] as char);
        text.push(DIGITS[usize::from(b & 15)] as char);
    }
    text
}

/// The address a sender is known and blocked by: an IPv4 address itself,
/// an IPv6 host by its /64 (a phone changes its temporary address within
/// it), an IPv4-mapped IPv6 address as IPv4.
pub fn sender_address(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv6Addr};
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

/// Removes control characters; newline and tab survive in messages only.
fn strip_controls(text: &str, keep_layout: bool) -> String {
    text.chars()
        .filter(|&c| !c.is_control() || (keep_layout && (c == '\n' || c == '\t')))
        .collect()
}

/// Machine-readable reason for a rejection, sent as `data.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BadJson,
    BadRequest,
    UnknownEvent,
    EmptyMessage,
    MessageTooLong,
    NameTooLong,
    StorageError,
    StorageUnavailable,
    Unavailable,
    RateLimited,
    TooLarge,
    Unauthorized,
    ForbiddenOrigin,
    TooManyConnections,
    Forbidden,
    NotFound,
    Blocked,
    FilesFull,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadJson => "bad-json",
            Code::BadRequest => "bad-request",
            Code::UnknownEvent => "unknown-event",
            Code::EmptyMessage => "empty-message",
            Code::MessageTooLong => "message-too-long",
            Code::NameTooLong => "name-too-long",
            Code::StorageError => "storage-error",
            Code::StorageUnavailable => "storage-unavailable",
            Code::Unavailable => "unavailable",
            Code::RateLimited => "rate-limited",
            Code::TooLarge => "too-large",
            Code::Unauthorized => "unauthorized",
            Code::ForbiddenOrigin => "forbidden-origin",
            Code::TooManyConnections => "too-many-connections",
            Code::Forbidden => "forbidden",
            Code::NotFound => "not-found",
            Code::Blocked => "blocked",
            Code::FilesFull => "files-full",
        }
    }
}

/// Why a request was refused: a code for programs and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: Code,
    pub message: String,
    /// For `blocked`: when the block ends (ms since the Unix epoch).
    pub until: Option<i64>,
}

impl Rejection {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
            until: None,
        }
    }

    /// The `{"code","message"}` body used by both the `error` event and HTTP
    /// errors, with `"until"` when a block refused the request.
    pub fn body(&self) -> Value {
        let mut body = serde_json::json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(until) = self.until {
            body["until"] = until.into();
        }
        body
    }
}

/// What a client asked for in one text frame.
#[derive(Debug, PartialEq)]
pub struct Request {
    /// The client's correlation number, echoed in the reply when present.
    pub ack: Option<u64>,
    pub action: Action,
}

#[derive(Debug, PartialEq)]
pub enum Action {
    AddMessage(Draft),
    LoadOlder {
        before: u64,
        limit: usize,
    },
    /// `edit-message`: the message's new text, already validated.
    EditMessage {
        id: u64,
        message: String,
        key: String,
    },
    DeleteMessage {
        id: u64,
        key: String,
    },
    BlockSender {
        id: u64,
        minutes: u64,
        key: String,
    },
}

/// The largest page a client may ask for with `load-older` or `?limit=`.
pub const MAX_PAGE: usize = 500;

/// Most bytes of message JSON that one catch-up answer carries: the
/// `messages-available` of a resume, an `older-messages` page, a page of the
/// HTTP API. Counts alone do not bound them: 5,000 messages of 4,000
/// characters made one resume frame of 20 MB, and every client that resumed
/// at once and read slowly held one. 1 MiB is a few hundred of the longest
/// messages, thousands of ordinary ones, and well under a second on any LAN.
/// A message larger than this on its own still goes out, alone: the message
/// limits bound it.
pub const CATCH_UP_BYTES: usize = 1 << 20;

/// The HTTP API's answer to "are there more messages beyond this page?" in
/// the direction it pages (newer with `since`, older otherwise): `true` or
/// `false`. A header, because the body is a bare JSON array that scripts
/// already read.
pub const MORE_HEADER: &str = "lanboard-more";

/// With `?around=`, which pages both ways: whether newer messages follow
/// the page (`MORE_HEADER` says whether older ones precede it).
pub const NEWER_HEADER: &str = "lanboard-newer";

/// Parses one client frame. A rejection carries the ack when one could be read,
/// so the client can match the error to what it sent.
pub fn parse_request(text: &str, limits: Limits) -> Result<Request, (Option<u64>, Rejection)> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        (
            None,
            Rejection::new(Code::BadJson, format!("not JSON: {e}")),
        )
    })?;
    let Value::Object(mut object) = value else {
        return Err((
            None,
            Rejection::new(
                Code::BadRequest,
                "a frame must be a JSON object with \"event\" and \"data\"",
            ),
        ));
    };
    let ack = match object.get("ack") {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_u64() {
            Some(ack) => Some(ack),
            None => {
                return Err((
                    None,
                    Rejection::new(Code::BadRequest, "ack must be a non-negative integer"),
                ))
            }
        },
    };
    let fail = |rejection| Err((ack, rejection));
    let data = object.remove("data").unwrap_or(Value::Null);
    let event = match object.get("event") {
        Some(Value::String(event)) => event.as_str(),
        _ => return fail(Rejection::new(Code::BadRequest, "event must be a string")),
    };
    let action = match event {
        "add-message" => match Draft::parse(&data, limits) {
            Ok(draft) => Action::AddMessage(draft),
            Err(rejection) => return fail(rejection),
        },
        "load-older" => {
            let before = data.get("before").and_then(Value::as_u64);
            let limit = match data.get("limit") {
                None | Some(Value::Null) => Some(100),
                Some(limit) => limit.as_u64().map(|l| l as usize),
            };
            match (before, limit) {
                (Some(before), Some(limit)) if (1..=MAX_PAGE).contains(&limit) => {
                    Action::LoadOlder { before, limit }
                }
                _ => {
                    return fail(Rejection::new(
                        Code::BadRequest,
                        format!(
                            "load-older needs {{\"before\": <id>, \"limit\": <1..={MAX_PAGE}>}}"
                        ),
                    ))
                }
            }
        }
        "edit-message" => match parse_edit(&data, limits) {
            Ok(action) => action,
            Err(rejection) => return fail(rejection),
        },
        "delete-message" => match (message_id(&data), required_key(&data)) {
            (Ok(id), Ok(key)) => Action::DeleteMessage { id, key },
            (Err(rejection), _) | (_, Err(rejection)) => return fail(rejection),
        },
        "block-sender" => match parse_block(&data) {
            Ok(action) => action,
            Err(rejection) => return fail(rejection),
        },
        other => {
            return fail(Rejection::new(
                Code::UnknownEvent,
                format!("unknown event {other:?}"),
            ))
        }
    };
    Ok(Request { ack, action })
}

/// The `id` of an edit, a deletion or a block: a message id.
fn message_id(data: &Value) -> Result<u64, Rejection> {
    match data.get("id").and_then(Value::as_u64) {
        Some(id) if id > 0 => Ok(id),
        _ => Err(Rejection::new(
            Code::BadRequest,
            "id must be the id of a message (a positive integer)",
        )),
    }
}

/// The new text of an edit: `data.message`, validated as a post's.
pub fn edited_text(data: &Value, limits: Limits) -> Result<String, Rejection> {
    match data.get("message") {
        Some(Value::String(message)) => clean_message(message, limits),
        None | Some(Value::Null) => Err(Rejection::new(Code::EmptyMessage, "message is missing")),
        Some(_) => Err(Rejection::new(Code::BadRequest, "message must be a string")),
    }
}

/// The data of `edit-message`: `{"id", "message", "key"}`.
fn parse_edit(data: &Value, limits: Limits) -> Result<Action, Rejection> {
    Ok(Action::EditMessage {
        id: message_id(data)?,
        message: edited_text(data, limits)?,
        key: required_key(data)?,
    })
}

/// The data of `block-sender`: `{"id", "minutes", "key"}`.
fn parse_block(data: &Value) -> Result<Action, Rejection> {
    let id = message_id(data)?;
    let minutes = match data.get("minutes").and_then(Value::as_u64) {
        Some(minutes) if (1..=MAX_BLOCK_MINUTES).contains(&minutes) => minutes,
        _ => {
            return Err(Rejection::new(
                Code::BadRequest,
                format!("minutes must be 1 to {MAX_BLOCK_MINUTES}"),
            ))
        }
    };
    Ok(Action::BlockSender {
        id,
        minutes,
        key: required_key(data)?,
    })
}

/// Writes the JSON of `value` into a `String`.
fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    // Serialising these plain structs (strings and integers, no maps with
    // non-string keys) into memory cannot fail.
    serde_json::to_string(value).expect("plain data serialises")
}

/// What every `message-added` frame starts with; the message's JSON follows,
/// then a closing brace. The board keeps each message only as this frame and
/// slices the message's JSON out of it, so a message is serialised once.
pub const MESSAGE_ADDED_PREFIX: &str = r#"{"event":"message-added","data":"#;

/// `{"event":"message-added","data":<message>}`.
pub fn message_added_frame(message: &Message) -> String {
    let mut frame = String::with_capacity(MESSAGE_ADDED_PREFIX.len() + 64 + message.message.len());
    frame.push_str(MESSAGE_ADDED_PREFIX);
    frame.push_str(&to_json(message));
    frame.push('}');
    frame
}

/// A JSON array spliced together from already serialised elements.
pub fn json_array<'a>(elements: impl IntoIterator<Item = &'a str>) -> String {
    let mut array = String::from("[");
    for (i, json) in elements.into_iter().enumerate() {
        if i > 0 {
            array.push(',');
        }
        array.push_str(json);
    }
    array.push(']');
    array
}

/// `{"event":"messages-available","data":[...]}` from the messages' JSON, oldest
/// first. `gap` adds `"gap":true` when a resuming client missed more messages
/// than one frame carries: it then gets the newest ones and pages back with
/// `load-older`.
pub fn messages_available_frame<'a>(
    messages: impl IntoIterator<Item = &'a str>,
    gap: bool,
    epoch: Option<&str>,
) -> String {
    let gap = if gap { r#","gap":true"# } else { "" };
    // Epochs are hex tokens made by lanboard; serialising keeps that safe anyway.
    let epoch = epoch.map_or(String::new(), |e| format!(r#","epoch":{}"#, to_json(e)));
    format!(
        r#"{{"event":"messages-available","data":{}{gap}{epoch}}}"#,
        json_array(messages)
    )
}

/// `{"event":"older-messages","data":{"messages":[...],"more":<bool>}}`, with the ack when asked.
pub fn older_messages_frame<'a>(
    messages: impl IntoIterator<Item = &'a str>,
    more: bool,
    ack: Option<u64>,
) -> String {
    let ack = ack
        .map(|ack| format!(r#","ack":{ack}"#))
        .unwrap_or_default();
    format!(
        r#"{{"event":"older-messages","data":{{"messages":{},"more":{more}}}{ack}}}"#,
        json_array(messages)
    )
}

/// `{"event":"ack","ack":<n>,"data":<data>}`: the stored or edited
/// message, `{"id"}` for a deletion, `{"id","until"}` for a block.
pub fn ack_frame(ack: u64, data: &impl Serialize) -> String {
    to_json(&serde_json::json!({ "event": "ack", "ack": ack, "data": data }))
}

/// The data of `message-edited`: the message in its new form and the
/// change's place in the board's order.
pub fn edited_data(message: &Message, change: u64) -> Value {
    let mut data = serde_json::to_value(message).expect("plain data serialises");
    data["change"] = change.into();
    data
}

/// `{"event":"message-edited","data":{...message, "edited", "change"}}`.
pub fn message_edited_frame(message: &Message, change: u64) -> String {
    to_json(&serde_json::json!({ "event": "message-edited", "data": edited_data(message, change) }))
}

/// `{"event":"message-deleted","data":{"id","change"}}`.
pub fn message_deleted_frame(id: u64, change: u64) -> String {
    format!(r#"{{"event":"message-deleted","data":{{"id":{id},"change":{change}}}}}"#)
}

/// `{"event":"error","data":{"code","message"}}`, with the ack when there is one.
pub fn error_frame(rejection: &Rejection, ack: Option<u64>) -> String {
    with_ack(
        serde_json::json!({ "event": "error", "data": rejection.body() }),
        ack,
    )
}

/// `{"event":"board-reset","data":{"message"}}`: the history this client
/// shows no longer exists (the store lost it); start over.
pub fn board_reset_frame(message: &str) -> String {
    to_json(&serde_json::json!({ "event": "board-reset", "data": { "message": message } }))
}

/// `{"event":"presence","data":{"online":<n>}}`.
pub fn presence_frame(online: usize) -> String {
    format!(r#"{{"event":"presence","data":{{"online":{online}}}}}"#)
}

fn with_ack(mut frame: Value, ack: Option<u64>) -> String {
    if let (Some(ack), Value::Object(object)) = (ack, &mut frame) {
        object.insert("ack".into(), ack.into());
    }
    to_json(&frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The limits of a board started without flags (`--max-*-chars`).
    fn default_limits() -> Limits {
        crate::cli::default_config().session.limits
    }

    fn draft(name: &str, message: &str) -> Result<Draft, Rejection> {
        Draft::new(name, message, default_limits())
    }

    #[test]
    fn an_empty_name_becomes_anonymous_and_names_are_trimmed() {
        assert_eq!(draft("   ", "hi").unwrap().name(), "Anonymous");
        assert_eq!(draft("  ada \t", "hi").unwrap().name(), "ada");
    }

    #[test]
    fn a_cid_is_kept_when_valid_and_refused_when_not() {
        let parse = |data| Draft::parse(&data, default_limits());
        let ok = parse(json!({"name": "a", "message": "hi", "cid": "7f3a"})).unwrap();
        assert_eq!(ok.cid(), Some("7f3a"));
        assert_eq!(parse(json!({"message": "hi"})).unwrap().cid(), None);
        assert_eq!(
            parse(json!({"message": "hi", "cid": null})).unwrap().cid(),
            None
        );
        let longest = "x".repeat(MAX_CID_CHARS);
        assert!(parse(json!({"message": "hi", "cid": longest})).is_ok());
        for bad in [
            json!(""),
            json!(7),
            json!("x".repeat(MAX_CID_CHARS + 1)),
            json!("a\u{0}b"),
        ] {
            let refused = parse(json!({"message": "hi", "cid": bad})).unwrap_err();
            assert_eq!(refused.code, Code::BadRequest, "cid {bad} is refused");
        }
    }

    #[test]
    fn a_post_of_files_needs_no_text_and_names_at_most_ten_distinct_ids() {
        let parse = |data| Draft::parse(&data, default_limits());
        let id = |n: u32| format!("{n:064x}");
        let alone = parse(json!({"files": [id(1)]})).unwrap();
        assert_eq!((alone.message(), alone.files()), ("", &[id(1)][..]));
        let blank = parse(json!({"message": " \n", "files": [id(1)]})).unwrap();
        assert_eq!(blank.message(), "", "blank text with files is no text");
        let twice = parse(json!({"message": "x", "files": [id(1), id(2), id(1)]})).unwrap();
        assert_eq!(twice.files(), [id(1), id(2)]);
        let ten: Vec<String> = (0..10).map(id).collect();
        assert_eq!(parse(json!({"files": ten})).unwrap().files().len(), 10);
        let eleven: Vec<String> = (0..11).map(id).collect();
        for bad in [
            json!(eleven),
            json!(["ABCD".repeat(16)]),
            json!(["abc"]),
            json!([1]),
            json!("not a list"),
        ] {
            let refused = parse(json!({"message": "x", "files": bad})).unwrap_err();
            assert_eq!(refused.code, Code::BadRequest, "files {bad}");
        }
        assert_eq!(
            parse(json!({"files": []})).unwrap_err().code,
            Code::EmptyMessage,
            "no files and no text"
        );
        let long = "x".repeat(default_limits().max_message_chars + 1);
        assert_eq!(
            parse(json!({"message": long, "files": [id(1)]}))
                .unwrap_err()
                .code,
            Code::MessageTooLong
        );
    }

    #[test]
    fn hex_is_lowercase_and_two_digits_a_byte() {
        assert_eq!(hex(&[0, 15, 16, 255]), "000f10ff");
    }

    #[test]
    fn blank_messages_are_refused() {
        for blank in ["", "   ", "\n\n", "\t \r\n"] {
            assert_eq!(draft("a", blank).unwrap_err().code, Code::EmptyMessage);
        }
    }

    #[test]
    fn limits_count_characters_not_bytes() {
        let limits = default_limits();
        assert!(draft(&"é".repeat(64), &"ü".repeat(4000)).is_ok());
        assert_eq!(
            draft(&"é".repeat(65), "x").unwrap_err().code,
            Code::NameTooLong
        );
        assert_eq!(
            draft("a", &"ü".repeat(limits.max_message_chars + 1))
                .unwrap_err()
                .code,
            Code::MessageTooLong
        );
    }

    #[test]
    fn control_characters_are_stripped_but_newlines_and_tabs_kept() {
        let d = draft("a\u{7}b", "one\u{0}\n\ttwo\u{1b}[31m").unwrap();
        assert_eq!(d.name(), "ab");
        assert_eq!(d.message(), "one\n\ttwo[31m");
    }

    #[test]
    fn html_is_kept_literally() {
        let payload = "<img src=x onerror=alert(1)>";
        let d = draft(payload, payload).unwrap();
        assert_eq!((d.name(), d.message()), (payload, payload));
    }

    #[test]
    fn add_message_parses_with_and_without_ack() {
        let request = parse_request(
            r#"{"event":"add-message","data":{"name":"a","message":"b","extra":1},"ack":7,"future":true}"#,
            default_limits(),
        )
        .unwrap();
        assert_eq!(request.ack, Some(7));
        assert_eq!(request.action, Action::AddMessage(draft("a", "b").unwrap()));
        let request = parse_request(
            r#"{"event":"add-message","data":{"message":"b"}}"#,
            default_limits(),
        )
        .unwrap();
        assert_eq!(request.ack, None);
    }

    #[test]
    fn malformed_frames_get_the_right_code_and_keep_the_ack() {
        let code = |text: &str| parse_request(text, default_limits()).unwrap_err();
        assert_eq!(code("{nope").1.code, Code::BadJson);
        assert_eq!(code("[1,2]").1.code, Code::BadRequest);
        assert_eq!(code(r#"{"data":{}}"#).1.code, Code::BadRequest);
        let (ack, rejection) = code(r#"{"event":"dance","ack":3}"#);
        assert_eq!((ack, rejection.code), (Some(3), Code::UnknownEvent));
        let (ack, rejection) =
            code(r#"{"event":"add-message","data":{"name":5,"message":"x"},"ack":4}"#);
        assert_eq!((ack, rejection.code), (Some(4), Code::BadRequest));
        assert_eq!(
            code(r#"{"event":"add-message","data":"hi"}"#).1.code,
            Code::BadRequest
        );
        assert_eq!(
            code(r#"{"event":"add-message","ack":-1}"#).1.code,
            Code::BadRequest
        );
    }

    #[test]
    fn load_older_requires_a_bounded_limit() {
        let ok = parse_request(
            r#"{"event":"load-older","data":{"before":10,"limit":500}}"#,
            default_limits(),
        )
        .unwrap();
        assert_eq!(
            ok.action,
            Action::LoadOlder {
                before: 10,
                limit: 500
            }
        );
        for bad in [
            r#"{"event":"load-older","data":{"before":10,"limit":501}}"#,
            r#"{"event":"load-older","data":{"before":10,"limit":0}}"#,
            r#"{"event":"load-older","data":{"limit":5}}"#,
        ] {
            assert_eq!(
                parse_request(bad, default_limits()).unwrap_err().1.code,
                Code::BadRequest
            );
        }
    }

    #[test]
    fn frames_have_the_documented_shape() {
        let message = Message {
            id: 1,
            name: "a".into(),
            message: "b".into(),
            time: 5,
            edited: None,
            files: Vec::new(),
        };
        let added = message_added_frame(&message);
        let frame: Value = serde_json::from_str(&added).unwrap();
        assert_eq!(
            frame,
            json!({"event":"message-added","data":{"id":1,"name":"a","message":"b","time":5}})
        );
        let json = &added[MESSAGE_ADDED_PREFIX.len()..added.len() - 1];
        let frame: Value =
            serde_json::from_str(&messages_available_frame([json, json], false, None)).unwrap();
        assert_eq!(frame["data"].as_array().unwrap().len(), 2);
        assert_eq!(frame.get("gap"), None);
        let frame: Value =
            serde_json::from_str(&messages_available_frame([json], true, Some("e1"))).unwrap();
        assert_eq!(frame["gap"], true);
        assert_eq!(frame["epoch"], "e1");
        let frame: Value =
            serde_json::from_str(&older_messages_frame([json], true, Some(4))).unwrap();
        assert_eq!(
            frame,
            json!({"event":"older-messages","ack":4,"data":{"messages":[message],"more":true}})
        );
        let frame: Value = serde_json::from_str(&ack_frame(9, &message)).unwrap();
        assert_eq!(frame["ack"], 9);
        let rejection = Rejection::new(Code::BadJson, "x");
        let frame: Value = serde_json::from_str(&error_frame(&rejection, None)).unwrap();
        assert_eq!(
            frame,
            json!({"event":"error","data":{"code":"bad-json","message":"x"}})
        );
        let frame: Value = serde_json::from_str(&presence_frame(3)).unwrap();
        assert_eq!(frame, json!({"event":"presence","data":{"online":3}}));
    }
}
