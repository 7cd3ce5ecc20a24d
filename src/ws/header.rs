//! A WebSocket frame's header, read on its own (RFC 6455 §5.2), so the
//! socket can refuse a frame by its declared length before reading the
//! payload. The codec parses the frame again once it is whole; this only
//! answers "how long, and what kind".

/// Longest header a client frame can have: 2 bytes, a 64-bit length, a mask.
pub const MAX_HEADER: usize = 2 + 8 + 4;

/// Most payload a control frame (close, ping, pong) may carry (§5.5).
pub const MAX_CONTROL_PAYLOAD: u64 = 125;

/// What a frame's header declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The frame's opcode (§5.2): 0 continuation, 1 text, 2 binary, 8 and up
    /// control frames.
    pub opcode: u8,
    /// Bytes of the header itself, mask key included.
    pub len: usize,
    /// The payload length the client declares; it may lie, which is why it
    /// is checked before anything past the header is kept.
    pub payload: u64,
}

impl Header {
    /// True for close, ping and pong (and the reserved control opcodes).
    pub fn is_control(&self) -> bool {
        self.opcode & 0x08 != 0
    }

    /// True for the frame that continues a fragmented message.
    pub fn is_continuation(&self) -> bool {
        self.opcode == 0
    }
}

/// Reads the header at the start of `bytes`; `None` until all of it has
/// arrived. The mask key's presence is taken from the mask bit, so a frame
/// the codec will refuse as unmasked still has its length read correctly.
pub fn peek(bytes: &[u8]) -> Option<Header> {
    let (&first, rest) = bytes.split_first()?;
    let (&second, rest) = rest.split_first()?;
    let (payload, rest) = match second & 0x7f {
        126 => {
            let (length, rest) = rest.split_first_chunk::<2>()?;
            (u64::from(u16::from_be_bytes(*length)), rest)
        }
        127 => {
            let (length, rest) = rest.split_first_chunk::<8>()?;
            (u64::from_be_bytes(*length), rest)
        }
        short => (u64::from(short), rest),
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    if rest.len() < mask {
        return None;
    }
    Some(Header {
        opcode: first & 0x0f,
        len: bytes.len() - rest.len() + mask,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_is_read_only_once_its_length_and_mask_have_arrived() {
        // A masked text frame declaring 2^62 bytes.
        let mut frame = vec![0x81, 0xff];
        frame.extend_from_slice(&(1u64 << 62).to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        for cut in 0..frame.len() {
            assert_eq!(peek(&frame[..cut]), None, "complete at {cut} bytes");
        }
        assert_eq!(
            peek(&frame),
            Some(Header {
                opcode: 1,
                len: MAX_HEADER,
                payload: 1 << 62
            })
        );
        assert_eq!(frame.len(), MAX_HEADER);
    }

    #[test]
    fn short_and_16_bit_lengths_are_read_and_the_opcode_tells_the_kind() {
        let ping = peek(&[0x89, 0x80 | 5, 0, 0, 0, 0]).unwrap();
        assert_eq!(ping.payload, 5);
        assert!(ping.is_control());
        let continuation = peek(&[0x00, 0x80 | 126, 0x01, 0x00, 9, 9, 9, 9]).unwrap();
        assert_eq!(continuation.payload, 256);
        assert_eq!(continuation.len, 8);
        assert!(continuation.is_continuation());
        assert!(!continuation.is_control());
        // Unmasked: no mask key to wait for.
        assert_eq!(peek(&[0x82, 3]).unwrap().payload, 3);
    }
}
