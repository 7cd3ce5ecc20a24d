//! Files on the board: what an upload's name and media type become, and how
//! a file is served so that no upload can run script in the board's origin.
//!
//! The routes are `POST /api/files` (`upload.rs`) and `GET /files/<id>`
//! (`download.rs`); the content lives in the board's store, in chunks
//! (`store::FileStore`). A message carries files as [`crate::protocol::File`].

pub mod download;
pub mod media;
pub mod upload;

use std::time::Duration;

use crate::protocol::File;

/// The limits and timing of the board's files (`--max-file-bytes`,
/// `--max-files-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilesConfig {
    /// The largest file one upload may be.
    pub max_file_bytes: u64,
    /// All the board's files together, uploads in progress included.
    pub max_files_bytes: u64,
    /// How long a file no message carries is kept after its upload: long
    /// enough to finish writing the post it was uploaded for.
    pub orphan_after: Duration,
}

/// How long an uploaded file waits for a message to carry it.
pub const ORPHAN_AFTER: Duration = Duration::from_secs(60 * 60);

/// How often the board looks for files to remove: a fraction of
/// `orphan_after`, and at least once a minute.
pub fn sweep_every(orphan_after: Duration) -> Duration {
    (orphan_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

/// The longest file name, in bytes (as most file systems allow).
pub const MAX_NAME_BYTES: usize = 255;

/// The name given to a file sent without one (or with one that cleaning
/// leaves empty).
pub const UNNAMED: &str = "file";

/// Cleans an uploader's file name for storing, showing and saving: path
/// separators become `_` (so no name reaches outside a download folder);
/// control characters and the bidirectional controls that can reorder what
/// a name shows (`invoice\u{202e}fdp.exe` reads as `invoiceexe.pdf`) are
/// removed; at most [`MAX_NAME_BYTES`] bytes, keeping a short extension;
/// never empty, `.` or `..`.
pub fn clean_name(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .filter_map(|c| match c {
            '/' | '\\' => Some('_'),
            c if c.is_control() || is_bidi_control(c) => None,
            c => Some(c),
        })
        .collect();
    let name = cleaned.trim();
    let name = match name {
        "" | "." | ".." => return UNNAMED.to_owned(),
        name => name,
    };
    if name.len() <= MAX_NAME_BYTES {
        return name.to_owned();
    }
    // Keep an extension of up to 16 bytes, shorten the stem before it.
    let extension = match name.rfind('.') {
        Some(dot) if dot > 0 && name.len() - dot <= 16 => &name[dot..],
        _ => "",
    };
    let stem = &name[..name.len() - extension.len()];
    let mut end = MAX_NAME_BYTES - extension.len();
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{extension}", stem[..end].trim_end())
}

/// True for the Unicode bidirectional formatting characters: the embedding
/// and override controls (U+202A–U+202E), the isolates (U+2066–U+2069) and
/// the marks (U+200E, U+200F, U+061C).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// The files of a message from a SQLite `files` column (JSON, `NULL` for
/// none), column `index` of `row`.
pub fn from_column(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Vec<File>> {
    match row.get_ref(index)?.as_str_or_null()? {
        None => Ok(Vec::new()),
        Some(json) => serde_json::from_str(json).map_err(|error| {
            rusqlite::Error::FromSqlConversionFailure(
                index,
                rusqlite::types::Type::Text,
                Box::new(error),
            )
        }),
    }
}

/// A `files` column's value for these files: JSON, or `NULL` for none.
pub fn to_column(files: &[File]) -> Option<String> {
    (!files.is_empty()).then(|| serde_json::to_string(files).expect("plain data serialises"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_separators_cannot_lead_out_of_a_download_folder() {
        assert_eq!(clean_name("../../etc/passwd"), ".._.._etc_passwd");
        assert_eq!(clean_name("..\\..\\boot.ini"), ".._.._boot.ini");
        assert_eq!(clean_name(".."), UNNAMED);
        assert_eq!(clean_name("."), UNNAMED);
    }

    #[test]
    fn control_and_bidirectional_characters_are_removed() {
        assert_eq!(clean_name("report\n.txt"), "report.txt");
        assert_eq!(clean_name("a\u{0}b\u{7f}c"), "abc");
        assert_eq!(clean_name("invoice\u{202e}fdp.exe"), "invoicefdp.exe");
        for control in ['\u{202A}', '\u{202D}', '\u{2066}', '\u{2069}', '\u{200F}'] {
            assert_eq!(clean_name(&format!("x{control}y")), "xy", "{control:?}");
        }
        assert_eq!(clean_name("naïve café.pdf"), "naïve café.pdf");
    }

    #[test]
    fn a_name_is_never_empty() {
        for empty in ["", "   ", "\u{202e}", "\n\t"] {
            assert_eq!(clean_name(empty), UNNAMED, "{empty:?}");
        }
    }

    #[test]
    fn a_long_name_is_cut_to_255_bytes_on_a_character_and_keeps_its_extension() {
        let long = format!("{}.tar.gz", "é".repeat(300));
        let name = clean_name(&long);
        assert!(name.len() <= MAX_NAME_BYTES, "{} bytes", name.len());
        assert!(name.ends_with(".gz"), "{name}");
        assert!(name.starts_with("éé"));
        let no_extension = clean_name(&"x".repeat(1000));
        assert_eq!(no_extension.len(), MAX_NAME_BYTES);
    }
}
