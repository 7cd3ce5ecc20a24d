//! `lanboard send`: posts one message through the HTTP API and prints the id
//! the board stored it under, so `make 2>&1 | tail -5 | lanboard send` works;
//! with `--file`, the files are uploaded first and the message carries them.

use std::io::{Read, Write};

use clap::Args;

use super::{BoardArgs, ClientError, Remote};

/// Largest message read from stdin. The board's own limit (64 KiB unless
/// --max-frame-bytes says otherwise) decides what is accepted; this only
/// keeps a runaway pipe from filling memory first.
const MAX_STDIN_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub board: BoardArgs,

    /// The name shown with the message; without it, the login name.
    #[arg(long, env = "LANBOARD_NAME", value_name = "NAME")]
    pub name: Option<String>,

    /// A client id (1 to 64 printable characters) that makes a retried send
    /// store the message once: a repeat answers with the original's id.
    // No environment twin, unlike the other flags: a cid left in the
    // environment would silently turn every later send into a repeat.
    #[arg(long, value_name = "CID")]
    pub cid: Option<String>,

    /// A file the message carries (uploaded first, under its file name);
    /// repeat for several. With files and no words, the message has no text.
    #[arg(long = "file", value_name = "PATH")]
    pub files: Vec<std::path::PathBuf>,

    /// The message, as words joined by spaces; none, or -, reads it from stdin.
    #[arg(
        value_name = "MESSAGE",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub message: Vec<String>,
}

/// Runs `lanboard send`: prints the stored message's id on stdout.
pub fn run(args: SendArgs) -> Result<(), ClientError> {
    // Files and no words: a post of the files alone, not a read of stdin
    // that would wait on a terminal.
    let text = if args.message.is_empty() && !args.files.is_empty() {
        String::new()
    } else {
        message_text(&args.message)?
    };
    let name = args.name.clone().unwrap_or_else(login_name);
    let mut draft = serde_json::json!({ "name": name, "message": text });
    if let Some(cid) = &args.cid {
        draft["cid"] = cid.clone().into();
    }
    let remote = Remote::new(&args.board)?;
    let files = args.files;
    let stored = actix_web::rt::System::new().block_on(async move {
        if !files.is_empty() {
            let mut ids = Vec::with_capacity(files.len());
            for path in &files {
                ids.push(remote.upload(path).await?);
            }
            draft["files"] = ids.into();
        }
        remote.post(&draft).await
    })?;
    let mut stdout = std::io::stdout().lock();
    // The message is stored either way; a closed stdout only loses the id.
    let _ = writeln!(stdout, "{}", stored.id).and_then(|()| stdout.flush());
    Ok(())
}

/// The words joined by spaces, or stdin without its final line break.
fn message_text(words: &[String]) -> Result<String, ClientError> {
    if !(words.is_empty() || words == ["-"]) {
        return Ok(words.join(" "));
    }
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_STDIN_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ClientError::Input(format!("cannot read the message from stdin: {e}")))?;
    if bytes.len() as u64 > MAX_STDIN_BYTES {
        return Err(ClientError::Input(format!(
            "the message on stdin is larger than {} MiB",
            MAX_STDIN_BYTES / 1024 / 1024
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| ClientError::Input("the message on stdin is not UTF-8 text".to_owned()))?;
    // A pipe's output ends in a line break that is not part of the message.
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// The user's login name, as the shells set it; empty when unknown (the board
/// then shows the message as Anonymous).
fn login_name() -> String {
    ["USER", "USERNAME", "LOGNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_default()
}
