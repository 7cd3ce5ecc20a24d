//! `lanboard send` and `lanboard tail`: the board from scripts and terminals,
//! through the same HTTP API and WebSocket protocol as the page.
//!
//! This module owns what both commands share: the flags that say where the
//! board is and how to reach it ([`BoardArgs`]), the HTTP and WebSocket client
//! built from them ([`Remote`]), and [`ClientError`], whose every message is
//! the one line `main` prints before exiting with status 1.
//! `send.rs` posts one message; `tail.rs` prints and follows the board;
//! `render.rs` turns a message into a line; `tls.rs` decides which
//! certificates are trusted.

mod render;
pub mod send;
pub mod tail;
mod tls;

use std::path::PathBuf;
use std::time::Duration;

use awc::error::{ConnectError, SendRequestError, WsClientError};
use awc::http::StatusCode;
use clap::Args;
use serde::Deserialize;
use serde_json::value::RawValue;

pub use send::SendArgs;
pub use tail::TailArgs;

/// How long connecting (TCP and TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may wait for the head of its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer body or WebSocket frame read: a page of 500 messages, or a
/// resume of 5,000, of 4,000 four-byte characters each stays well below it.
const MAX_BODY_BYTES: usize = 128 * 1024 * 1024;

/// Where the board is and how to reach it; shared by `send` and `tail`.
#[derive(Debug, Args)]
pub struct BoardArgs {
    /// The board's address, as its banner prints it (http:// or https://).
    #[arg(
        long,
        env = "LANBOARD_URL",
        default_value = "http://127.0.0.1:4000",
        value_name = "URL"
    )]
    pub url: String,

    /// The board's passphrase, if it has one (prefer the environment
    /// variable: command lines are visible to other users of the machine).
    #[arg(
        long,
        env = "LANBOARD_PASSWORD",
        hide_env_values = true,
        value_name = "PASSPHRASE"
    )]
    pub password: Option<String>,

    /// Trust the certificates in this PEM file (the CA that signed the
    /// board's certificate), besides the system's.
    #[arg(long, env = "LANBOARD_CA_CERT", value_name = "PATH")]
    pub ca_cert: Option<PathBuf>,

    /// Accept any certificate from an https:// board, such as a self-signed
    /// one: the connection is encrypted but anyone in between could read it.
    #[arg(long, env = "LANBOARD_INSECURE")]
    pub insecure: bool,
}

/// Every way `send` or `tail` fails; each message is one whole line.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--url {url:?} is not a board address: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot read {path}: {reason}")]
    CaCert { path: String, reason: String },
    #[error("cannot reach the board at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error(
        "the certificate of {url} could not be verified ({reason}); \
         use --insecure for a self-signed board, or --ca-cert FILE"
    )]
    Certificate { url: String, reason: String },
    #[error("{url} needs a passphrase: set LANBOARD_PASSWORD (or --password)")]
    NeedsPassphrase { url: String },
    #[error("{url} refused the passphrase (401 unauthorized)")]
    WrongPassphrase { url: String },
    #[error("the board refused the message ({status} {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error(
        "the board cannot store messages right now ({code}): {message}; \
         send it again later (with the same --cid, it is stored once)"
    )]
    Unavailable { code: String, message: String },
    #[error("the board answered {status} {code}: {message}")]
    Unexpected {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the answer from {url} is not what a lanboard sends: {reason}")]
    BadAnswer { url: String, reason: String },
    #[error("{0}")]
    Input(String),
}

/// The `{"code","message"}` body of the board's refusals.
#[derive(Debug, Default, Deserialize)]
struct Refusal {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// A message as the board sends it: the fields a line shows, and the exact
/// JSON text for `--json`.
#[derive(Debug)]
pub struct Message {
    pub id: u64,
    pub name: String,
    pub message: String,
    /// Milliseconds since the Unix epoch.
    pub time: i64,
    /// The names and sizes of the files it carries.
    pub files: Vec<FileName>,
    pub raw: Box<RawValue>,
}

/// What a line shows of a file a message carries.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FileName {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub size: u64,
}

impl Message {
    /// Reads the fields out of a Message object, keeping its text.
    fn parse(raw: Box<RawValue>) -> Result<Message, serde_json::Error> {
        #[derive(Deserialize)]
        struct Fields {
            id: u64,
            #[serde(default)]
            name: String,
            #[serde(default)]
            message: String,
            #[serde(default)]
            time: i64,
            #[serde(default)]
            files: Vec<FileName>,
        }
        let fields: Fields = serde_json::from_str(raw.get())?;
        Ok(Message {
            id: fields.id,
            name: fields.name,
            message: fields.message,
            time: fields.time,
            files: fields.files,
            raw,
        })
    }

    /// Reads a JSON array of Message objects.
    fn parse_list(text: &str) -> Result<Vec<Message>, serde_json::Error> {
        let raws: Vec<Box<RawValue>> = serde_json::from_str(text)?;
        raws.into_iter().map(Message::parse).collect()
    }
}

/// One board, reached over HTTP(S) and WebSocket with the flags' passphrase
/// and trust. Cheap to clone.
#[derive(Clone)]
pub struct Remote {
    /// The address as given, without a trailing slash, for messages.
    base: String,
    http: awc::Client,
    password: Option<String>,
}

impl Remote {
    /// Checks the address and builds the client; trust is loaded only for
    /// an https:// board.
    pub fn new(args: &BoardArgs) -> Result<Remote, ClientError> {
        let base = normalize_url(&args.url)?;
        let mut connector = awc::Connector::new().timeout(CONNECT_TIMEOUT);
        if base.starts_with("https://") {
            connector = connector.rustls_0_23(tls::client_config(args)?);
        }
        let http = awc::Client::builder()
            .connector(connector)
            .timeout(REQUEST_TIMEOUT)
            // One attempt per request: the callers decide when to try again.
            .disable_redirects()
            .finish();
        Ok(Remote {
            base,
            http,
            password: args.password.clone(),
        })
    }

    /// The board's address, as shown in messages.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: awc::http::Method, path: &str) -> awc::ClientRequest {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.password {
            Some(password) => request.bearer_auth(password),
            None => request,
        }
    }

    /// `GET /api/messages?<query>`: a page of messages, oldest first.
    ///
    /// Also says whether the board has more beyond this page in the
    /// direction asked (its `Lanboard-More` header): a page can be cut short
    /// of `limit` by the board's byte budget, so its length alone does not
    /// tell. A board that does not send the header is taken at its length.
    pub async fn messages(
        &self,
        query: &str,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), ClientError> {
        let request = self.request(awc::http::Method::GET, &format!("/api/messages?{query}"));
        let mut more = None;
        let (status, body) = self
            .exchange_with(request.send(), |headers| {
                more = headers
                    .get(crate::protocol::MORE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v == "true");
            })
            .await?;
        if status != StatusCode::OK {
            return Err(self.refusal(status, &body));
        }
        let messages = Message::parse_list(&body).map_err(|e| self.bad_answer(e))?;
        let more = more.unwrap_or(messages.len() >= limit);
        Ok((messages, more))
    }

    /// `POST /api/messages`: the stored message, or the original one for a
    /// repeated cid.
    pub async fn post(&self, draft: &serde_json::Value) -> Result<Message, ClientError> {
        let request = self.request(awc::http::Method::POST, "/api/messages");
        let (status, body) = self.exchange(request.send_json(draft)).await?;
        if status != StatusCode::CREATED && status != StatusCode::OK {
            return Err(self.refusal(status, &body));
        }
        let raw: Box<RawValue> = serde_json::from_str(&body).map_err(|e| self.bad_answer(e))?;
        Message::parse(raw).map_err(|e| self.bad_answer(e))
    }

    /// `POST /api/files?name=`: uploads the file at `path` under its file
    /// name, streamed from the disk with its length declared (so a board
    /// that takes smaller files refuses it before it is sent); its id.
    pub async fn upload(&self, path: &std::path::Path) -> Result<String, ClientError> {
        let unreadable =
            |e: std::io::Error| ClientError::Input(format!("cannot read {}: {e}", path.display()));
        let file = std::fs::File::open(path).map_err(unreadable)?;
        let size = file.metadata().map_err(unreadable)?.len();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let query: String = name
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        // A local file reads faster than any board takes it: blocking reads
        // of a chunk at a time are fine on this command's own runtime.
        let chunks = futures_util::stream::unfold(Some(file), |file| async move {
            let mut file = file?;
            let mut chunk = vec![0u8; crate::store::CHUNK_BYTES];
            match std::io::Read::read(&mut file, &mut chunk) {
                Ok(0) => None,
                Ok(n) => {
                    chunk.truncate(n);
                    Some((Ok(bytes::Bytes::from(chunk)), Some(file)))
                }
                Err(e) => Some((Err(e), None)),
            }
        });
        let body = actix_http::body::SizedStream::new(size, chunks);
        let request = self
            .request(awc::http::Method::POST, &format!("/api/files?name={query}"))
            .insert_header((
                awc::http::header::CONTENT_TYPE,
                mime_guess::from_path(path)
                    .first_raw()
                    .unwrap_or("application/octet-stream"),
            ));
        let (status, body) = self.exchange(request.send_body(body)).await?;
        if status != StatusCode::CREATED && status != StatusCode::OK {
            return Err(self.refusal(status, &body));
        }
        #[derive(Deserialize)]
        struct Uploaded {
            id: String,
        }
        let uploaded: Uploaded = serde_json::from_str(&body).map_err(|e| self.bad_answer(e))?;
        Ok(uploaded.id)
    }

    /// Sends a request and reads the whole answer.
    async fn exchange(
        &self,
        sending: awc::SendClientRequest,
    ) -> Result<(StatusCode, String), ClientError> {
        self.exchange_with(sending, |_| {}).await
    }

    /// Sends a request, lets `head` look at the answer's headers, and reads
    /// the whole answer.
    async fn exchange_with(
        &self,
        sending: awc::SendClientRequest,
        head: impl FnOnce(&awc::http::header::HeaderMap),
    ) -> Result<(StatusCode, String), ClientError> {
        let mut response = sending.await.map_err(|e| self.send_error(&e))?;
        head(response.headers());
        let body =
            response
                .body()
                .limit(MAX_BODY_BYTES)
                .await
                .map_err(|e| ClientError::Unreachable {
                    url: self.base.clone(),
                    reason: format!("the answer could not be read: {e}"),
                })?;
        let body = String::from_utf8(body.to_vec()).map_err(|e| self.bad_answer(e))?;
        Ok((response.status(), body))
    }

    /// Opens the WebSocket at `/ws?<query>`, with the passphrase on the upgrade.
    pub async fn websocket(&self, query: &str) -> Result<Socket, ClientError> {
        let url = format!("{}/ws?{query}", self.ws_base());
        let mut request = self.http.ws(url).max_frame_size(MAX_BODY_BYTES);
        if let Some(password) = &self.password {
            request = request.bearer_auth(password);
        }
        match request.connect().await {
            Ok((_, socket)) => Ok(socket),
            Err(WsClientError::InvalidResponseStatus(status)) => {
                // awc keeps no body of a refused upgrade; the status says enough.
                Err(self.refusal(status, ""))
            }
            Err(WsClientError::SendRequest(error)) => Err(self.send_error(&error)),
            Err(error) => Err(ClientError::BadAnswer {
                url: self.base.clone(),
                reason: format!("the WebSocket upgrade failed: {error}"),
            }),
        }
    }

    fn ws_base(&self) -> String {
        match self.base.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}"),
            None => format!("ws://{}", self.base.trim_start_matches("http://")),
        }
    }

    /// Turns a refusal's status and `{"code","message"}` body into its error.
    fn refusal(&self, status: StatusCode, body: &str) -> ClientError {
        let Refusal { code, message } = serde_json::from_str(body).unwrap_or_default();
        let message = if message.is_empty() {
            status
                .canonical_reason()
                .unwrap_or("no reason given")
                .to_owned()
        } else {
            message
        };
        match status.as_u16() {
            401 if self.password.is_none() => ClientError::NeedsPassphrase {
                url: self.base.clone(),
            },
            401 => ClientError::WrongPassphrase {
                url: self.base.clone(),
            },
            400 | 413 | 429 => ClientError::Refused {
                status: status.as_u16(),
                code,
                message,
            },
            503 if code == "storage-unavailable" => ClientError::Unavailable { code, message },
            status => ClientError::Unexpected {
                status,
                code,
                message,
            },
        }
    }

    fn bad_answer(&self, error: impl std::fmt::Display) -> ClientError {
        ClientError::BadAnswer {
            url: self.base.clone(),
            reason: error.to_string(),
        }
    }

    /// Explains a request that got no answer, naming a certificate that
    /// failed validation as such.
    fn send_error(&self, error: &SendRequestError) -> ClientError {
        let url = self.base.clone();
        if let SendRequestError::Connect(ConnectError::Io(io)) = error {
            if let Some(rustls_error) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return match rustls_error {
                    rustls::Error::InvalidCertificate(reason) => ClientError::Certificate {
                        url,
                        reason: tls::describe(reason),
                    },
                    other => ClientError::Unreachable {
                        url,
                        reason: format!(
                            "the TLS handshake failed ({other}); is it an https:// board?"
                        ),
                    },
                };
            }
        }
        let reason = match error {
            SendRequestError::Connect(ConnectError::Io(io)) => io.to_string(),
            SendRequestError::Connect(ConnectError::Timeout) | SendRequestError::Timeout => {
                "no answer in time".to_owned()
            }
            // A TLS board answers a plain request with bytes that are not HTTP.
            SendRequestError::Response(parse) if url.starts_with("http://") => {
                format!("{parse}; is it an https:// board?")
            }
            other => other.to_string(),
        };
        ClientError::Unreachable { url, reason }
    }
}

/// The WebSocket as awc hands it over.
pub type Socket = actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>;

/// The address without its trailing slash, after checking its scheme and host;
/// `ws://` and `wss://` are taken as their HTTP twins.
fn normalize_url(url: &str) -> Result<String, ClientError> {
    let bad = |reason: &str| ClientError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = url.trim().trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/ws").unwrap_or(trimmed);
    let base = if let Some(rest) = trimmed.strip_prefix("ws://") {
        format!("http://{rest}")
    } else if let Some(rest) = trimmed.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
        trimmed.to_owned()
    } else {
        return Err(bad("it must start with http:// or https://"));
    };
    let uri: awc::http::Uri = base.parse().map_err(|e| bad(&format!("{e}")))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("it names no host"));
    }
    if uri.query().is_some() {
        return Err(bad("it must not carry a query"));
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_trailing_slash_and_websocket_schemes_become_http() {
        assert_eq!(
            normalize_url("http://10.0.0.2:4000/").unwrap(),
            "http://10.0.0.2:4000"
        );
        assert_eq!(
            normalize_url("wss://board.lan/ws").unwrap(),
            "https://board.lan"
        );
        assert_eq!(
            normalize_url("https://proxy.lan/board/").unwrap(),
            "https://proxy.lan/board"
        );
    }

    #[test]
    fn urls_without_a_scheme_or_host_are_refused() {
        assert!(normalize_url("10.0.0.2:4000").is_err());
        assert!(normalize_url("ftp://10.0.0.2").is_err());
        assert!(normalize_url("http://").is_err());
    }

    #[test]
    fn messages_keep_their_exact_json_text() {
        let text = r#"[{"id":7,"name":"Ada","message":"hi","time":1764000000000,"extra":1}]"#;
        let list = Message::parse_list(text).unwrap();
        assert_eq!(list[0].id, 7);
        assert_eq!(
            list[0].raw.get(),
            r#"{"id":7,"name":"Ada","message":"hi","time":1764000000000,"extra":1}"#
        );
    }
}
