//! Answers as they come off the wire: gzip, inflated in one pass by whoever reads them.

use bytes::Bytes;

use crate::classify::AttemptError;

/// An answer's body as it came: its text, or gzip of it still to inflate (a big answer is
/// inflated by its reader, on the blocking thread that reads it, not on its own).
#[derive(Debug, Clone)]
pub enum Body {
    Text(Bytes),
    Gzip(Bytes),
}

impl Body {
    /// The answer's text, inflated if it came compressed: work for a blocking thread when
    /// the answer is big. An answer that cannot be inflated is the attempt's failure.
    pub fn text(self) -> Result<Bytes, AttemptError> {
        match self {
            Body::Text(text) => Ok(text),
            Body::Gzip(gz) => inflate(&gz).map_err(|e| crate::unreadable(&e)),
        }
    }
}

/// The most an answer may inflate to. A 28-day hourly answer for 25 Tweets of every type
/// is a few megabytes; past this a body is taken for a fault, not an answer.
pub const MAX_INFLATED_BYTES: u64 = 256 << 20;

/// Inflates a gzip body in one pass, at most [`MAX_INFLATED_BYTES`].
pub fn inflate(body: &[u8]) -> Result<Bytes, String> {
    inflate_at_most(body, MAX_INFLATED_BYTES)
}

/// Inflates a gzip body in one pass into a buffer of the size its trailer gives (the size
/// modulo 2^32; the buffer grows if that was less), never zeroed first, or says why not:
/// not gzip (its checksum and length included), or more than `max` bytes.
fn inflate_at_most(body: &[u8], max: u64) -> Result<Bytes, String> {
    use flate2::{Decompress, FlushDecompress, Status};
    let told = body
        .len()
        .checked_sub(4)
        .map_or(0, |at| u32::from_le_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]) as u64);
    let mut out: Vec<u8> = Vec::with_capacity(told.clamp(1, max + 1) as usize);
    let mut inflater = Decompress::new_gzip(15);
    loop {
        let (read, written) = (inflater.total_in(), inflater.total_out());
        let status = inflater
            .decompress_vec(&body[read as usize..], &mut out, FlushDecompress::Finish)
            .map_err(|e| format!("gzip: {e}"))?;
        if out.len() as u64 > max {
            return Err(format!("gzip: the answer inflates past {max} bytes"));
        }
        match status {
            Status::StreamEnd => return Ok(Bytes::from(out)),
            _ if out.len() == out.capacity() => {
                // Told less than it holds: room for as much again, up to one past the bound.
                let more = out.len().max(1 << 16).min((max + 1) as usize - out.len());
                out.reserve_exact(more);
            }
            _ if (read, written) == (inflater.total_in(), inflater.total_out()) => {
                return Err("gzip: the body ends before its stream does".into());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(text: &[u8]) -> Vec<u8> {
        let mut out = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        out.write_all(text).unwrap();
        out.finish().unwrap()
    }

    #[test]
    fn a_body_inflates_whole_whatever_its_trailer_says_and_not_past_the_bound() {
        let text: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_string().into_bytes()).collect();
        let body = gzip(&text);
        assert_eq!(inflate(&body).unwrap(), text);
        // The trailer is a hint for the buffer only: one that lies is caught by the check.
        let mut lying = body.clone();
        let at = lying.len() - 4;
        lying[at..].copy_from_slice(&7u32.to_le_bytes());
        assert!(inflate(&lying).unwrap_err().starts_with("gzip:"));
        let bound = text.len() as u64 - 1;
        let past = inflate_at_most(&body, bound).unwrap_err();
        assert_eq!(past, format!("gzip: the answer inflates past {bound} bytes"));
        assert_eq!(inflate_at_most(&body, text.len() as u64).unwrap(), text);
        assert!(inflate(b"not gzip at all").unwrap_err().starts_with("gzip:"));
        assert_eq!(inflate(&gzip(b"")).unwrap(), b""[..]);
        assert!(inflate(&body[..body.len() / 2]).unwrap_err().starts_with("gzip:"));
    }
}
