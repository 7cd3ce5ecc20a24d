//! How `lanboard tail` shows a message: `HH:MM name: text` in local time,
//! continuation lines indented under the text, the name coloured on a
//! terminal; or, with `--json`, the message's JSON exactly as the board sent it.

use chrono::{Local, TimeZone};

use super::Message;

/// How messages are written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// One Message object a line, for scripts.
    Json,
    /// `HH:MM name: text`, names coloured when `color`.
    Text { color: bool },
}

/// The message as it is printed, ending in a newline.
pub fn render(message: &Message, style: Style) -> String {
    match style {
        Style::Json => format!("{}\n", message.raw.get()),
        Style::Text { color } => {
            let mut text = message.message.clone();
            for file in &message.files {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&format!("[{} {}]", file.name, size(file.size)));
            }
            text_line(&clock(message.time), &message.name, &text, color)
        }
    }
}

/// A file's size as people read it: `512 B`, `48.2 KB`, `3.1 MB`.
fn size(bytes: u64) -> String {
    match bytes {
        0..1000 => format!("{bytes} B"),
        1000..1_000_000 => format!("{:.1} KB", bytes as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", bytes as f64 / 1e6),
        _ => format!("{:.1} GB", bytes as f64 / 1e9),
    }
}

/// `HH:MM` of a time in milliseconds since the epoch, in local time.
fn clock(millis: i64) -> String {
    Local
        .timestamp_millis_opt(millis)
        .single()
        .map_or_else(|| "--:--".to_owned(), |t| t.format("%H:%M").to_string())
}

fn text_line(clock: &str, name: &str, text: &str, color: bool) -> String {
    // The board removes control characters other than newline and tab, but a
    // terminal must not take orders from whatever a board sends: drop any.
    let name = printable(name);
    let prefix_width = clock.chars().count() + 1 + name.chars().count() + 2;
    let shown_name = if color {
        format!("\x1b[1;{}m{name}\x1b[0m", name_color(&name))
    } else {
        name
    };
    let mut out = format!("{clock} {shown_name}: ");
    let indent = " ".repeat(prefix_width);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
            out.push_str(&indent);
        }
        out.push_str(&printable(line));
    }
    out.push('\n');
    out
}

/// The text without control characters, tabs kept.
fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| *c == '\t' || !c.is_control())
        .collect()
}

/// One of six ANSI colours, the same for a name every time.
fn name_color(name: &str) -> u8 {
    // FNV-1a: stable across runs and releases, unlike std's RandomState.
    let hash = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    31 + (hash % 6) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_lines_are_indented_under_the_text() {
        let line = text_line("09:05", "Ada", "first\nsecond\nthird", false);
        assert_eq!(
            line,
            "09:05 Ada: first\n           second\n           third\n"
        );
    }

    #[test]
    fn names_are_coloured_only_when_asked_and_always_alike() {
        let plain = text_line("09:05", "Ada", "hi", false);
        assert!(!plain.contains('\x1b'));
        let colored = text_line("09:05", "Ada", "hi", true);
        assert!(colored.starts_with("09:05 \x1b[1;3"), "{colored:?}");
        assert!(colored.ends_with("\x1b[0m: hi\n"), "{colored:?}");
        assert_eq!(colored, text_line("09:05", "Ada", "hi", true));
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        let line = text_line("09:05", "A\x1b[2Jda", "x\x07y\tz", false);
        assert_eq!(line, "09:05 A[2Jda: xy\tz\n");
    }

    #[test]
    fn files_show_as_lines_of_their_name_and_size_under_the_text() {
        let raw = serde_json::value::RawValue::from_string(
            r#"{"id":1,"name":"Ada","message":"the failing screen","time":0,
                "files":[{"id":"x","name":"error.png","size":48213,"type":"image/png"},
                         {"id":"y","name":"log.txt","size":512,"type":"text/plain"}]}"#
                .to_owned(),
        )
        .unwrap();
        let message = Message::parse(raw).unwrap();
        let line = render(&message, Style::Text { color: false });
        let shown = line.split_once(' ').unwrap().1;
        assert_eq!(
            shown,
            "Ada: the failing screen\n           [error.png 48.2 KB]\n           [log.txt 512 B]\n"
        );
        let alone = serde_json::value::RawValue::from_string(
            r#"{"id":2,"name":"Ada","message":"","time":0,"files":[{"name":"a.pdf","size":3100000}]}"#
                .to_owned(),
        )
        .unwrap();
        let line = render(
            &Message::parse(alone).unwrap(),
            Style::Text { color: false },
        );
        assert!(line.ends_with("Ada: [a.pdf 3.1 MB]\n"), "{line:?}");
    }

    #[test]
    fn json_lines_are_the_message_as_sent() {
        let raw = serde_json::value::RawValue::from_string(
            r#"{"id":1,"name":"Ada","message":"a\nb","time":0}"#.to_owned(),
        )
        .unwrap();
        let message = Message::parse(raw).unwrap();
        assert_eq!(
            render(&message, Style::Json),
            "{\"id\":1,\"name\":\"Ada\",\"message\":\"a\\nb\",\"time\":0}\n"
        );
    }
}
