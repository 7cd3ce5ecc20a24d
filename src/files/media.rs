//! Media types: what an upload is served as, and whether a browser may show
//! it in place.
//!
//! The type is the uploader's claim (its `Content-Type`), but only raster
//! images, audio and video are ever shown inline, and only when the content
//! starts as such a file does: a claim of `image/png` on bytes that are no
//! PNG becomes `application/octet-stream`, a download. Every other type
//! (HTML, SVG, XML, PDF, anything unknown) is always a download.

/// What every file is when nothing better is known.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// Bytes of a file's start that [`settle`] needs to see.
pub const HEAD_BYTES: usize = 64;

/// Whether a file's first bytes are of a given format.
type Signature = fn(&[u8]) -> bool;

/// The raster image types shown inline, with a check of their signature.
const RASTER: [(&str, Signature); 5] = [
    ("image/png", |h| h.starts_with(b"\x89PNG\r\n\x1a\n")),
    ("image/jpeg", |h| h.starts_with(b"\xff\xd8\xff")),
    ("image/gif", |h| {
        h.starts_with(b"GIF87a") || h.starts_with(b"GIF89a")
    }),
    ("image/webp", |h| {
        h.len() >= 12 && &h[..4] == b"RIFF" && &h[8..12] == b"WEBP"
    }),
    ("image/avif", |h| {
        iso_brands(h).any(|b| b == b"avif" || b == b"avis")
    }),
];

/// The major and compatible brands of an ISO base media file (MP4, M4A,
/// MOV, AVIF, 3GP) from its leading `ftyp` box, within `head`.
fn iso_brands(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    let boxed = head.len() >= 12 && &head[4..8] == b"ftyp";
    let size = if boxed {
        u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize
    } else {
        0
    };
    let end = size.min(head.len());
    let brands = if boxed && end >= 12 {
        // The major brand, then (after the minor version) the compatible ones.
        let mut list = vec![&head[8..12]];
        list.extend(head.get(16..end).unwrap_or_default().chunks_exact(4));
        list
    } else {
        Vec::new()
    };
    brands.into_iter()
}

/// True when `head` starts as a container or stream that browsers play as
/// audio or video: MP4/MOV/3GP (`ftyp`), Matroska/WebM, Ogg, RIFF WAVE and
/// AVI, FLAC, MP3 (ID3 or an MPEG frame) and ADTS AAC.
fn is_audio_or_video(head: &[u8]) -> bool {
    (head.len() >= 8 && &head[4..8] == b"ftyp")
        || head.starts_with(b"\x1a\x45\xdf\xa3")
        || head.starts_with(b"OggS")
        || (head.len() >= 12 && &head[..4] == b"RIFF" && matches!(&head[8..12], b"WAVE" | b"AVI "))
        || head.starts_with(b"fLaC")
        || head.starts_with(b"ID3")
        || (head.len() >= 2 && head[0] == 0xff && head[1] & 0xe0 == 0xe0)
}

/// The media type to store for an upload that claimed `claimed` (its
/// `Content-Type`, if any) and starts with `head` (at least the first
/// [`HEAD_BYTES`], or all of a smaller file).
///
/// The claim is reduced to its lowercase `type/subtype`; an inline type
/// whose content does not match stands as [`OCTET_STREAM`]. Without a claim
/// (or with `application/octet-stream`, or the form type curl sends by
/// default) a raster image is recognised by its signature, as a pasted
/// screenshot is.
pub fn settle(claimed: Option<&str>, head: &[u8]) -> String {
    let essence = claimed
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| is_media_type(c));
    // `curl --data-binary @file` claims a form unless told otherwise: no
    // file is one, so it is taken as no claim.
    let Some(essence) =
        essence.filter(|c| c != OCTET_STREAM && c != "application/x-www-form-urlencoded")
    else {
        return RASTER
            .iter()
            .find(|(_, matches)| matches(head))
            .map_or(OCTET_STREAM, |(kind, _)| kind)
            .to_owned();
    };
    let content_matches = if let Some((_, matches)) = RASTER.iter().find(|(k, _)| *k == essence) {
        matches(head)
    } else if essence.starts_with("audio/") || essence.starts_with("video/") {
        is_audio_or_video(head)
    } else {
        // Not an inline type: served as a download whatever it holds.
        true
    };
    if content_matches {
        essence
    } else {
        OCTET_STREAM.to_owned()
    }
}

/// True for a plausible `type/subtype` (RFC 6838 characters, at most 127 bytes).
fn is_media_type(text: &str) -> bool {
    let token = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    text.len() <= 127
        && text
            .split_once('/')
            .is_some_and(|(kind, sub)| token(kind) && token(sub))
}

/// True when a file of this (settled) type is shown in the page rather
/// than downloaded: raster images, audio and video.
pub fn is_inline(media_type: &str) -> bool {
    RASTER.iter().any(|(kind, _)| *kind == media_type)
        || media_type.starts_with("audio/")
        || media_type.starts_with("video/")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[test]
    fn a_claimed_image_is_kept_only_when_its_content_is_one() {
        assert_eq!(settle(Some("image/png"), PNG), "image/png");
        assert_eq!(settle(Some("IMAGE/PNG; x=1"), PNG), "image/png");
        assert_eq!(settle(Some("image/png"), b"<html>"), OCTET_STREAM);
        assert_eq!(settle(Some("image/jpeg"), PNG), OCTET_STREAM);
        assert_eq!(settle(Some("image/gif"), b"GIF89a...."), "image/gif");
        assert_eq!(
            settle(Some("image/webp"), b"RIFF\0\0\0\0WEBPVP8 "),
            "image/webp"
        );
        let avif = b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf";
        assert_eq!(settle(Some("image/avif"), avif), "image/avif");
        assert_eq!(
            settle(Some("image/avif"), b"\0\0\0\x18ftypisom\0\0\0\0isom"),
            OCTET_STREAM
        );
    }

    #[test]
    fn audio_and_video_claims_need_a_media_container() {
        assert_eq!(
            settle(Some("video/mp4"), b"\0\0\0\x18ftypisom\0\0\0\0"),
            "video/mp4"
        );
        assert_eq!(settle(Some("audio/ogg"), b"OggS\0\x02"), "audio/ogg");
        assert_eq!(settle(Some("audio/mpeg"), b"ID3\x04"), "audio/mpeg");
        assert_eq!(
            settle(Some("video/webm"), b"\x1a\x45\xdf\xa3\x9f"),
            "video/webm"
        );
        assert_eq!(
            settle(Some("video/mp4"), b"<script>alert(1)</script>"),
            OCTET_STREAM
        );
    }

    #[test]
    fn other_claims_are_kept_and_are_never_inline() {
        for kind in [
            "text/html",
            "image/svg+xml",
            "application/pdf",
            "text/xml",
            "application/zip",
        ] {
            assert_eq!(settle(Some(kind), b"anything"), kind);
            assert!(!is_inline(kind), "{kind} is a download");
        }
        assert!(!is_inline(OCTET_STREAM));
        assert!(is_inline("image/png") && is_inline("audio/ogg") && is_inline("video/mp4"));
    }

    #[test]
    fn without_a_claim_a_raster_image_is_recognised_and_the_rest_is_octet_stream() {
        assert_eq!(settle(None, PNG), "image/png");
        assert_eq!(settle(Some("application/octet-stream"), PNG), "image/png");
        assert_eq!(
            settle(Some("application/x-www-form-urlencoded"), PNG),
            "image/png"
        );
        assert_eq!(
            settle(Some("application/x-www-form-urlencoded"), b"x"),
            OCTET_STREAM
        );
        assert_eq!(settle(None, b"\xff\xd8\xff\xe0"), "image/jpeg");
        assert_eq!(settle(None, b"<svg onload=alert(1)>"), OCTET_STREAM);
        assert_eq!(settle(Some("not a type"), b"x"), OCTET_STREAM);
        assert_eq!(settle(Some("text/html\r\nx: y"), b"x"), OCTET_STREAM);
    }
}
