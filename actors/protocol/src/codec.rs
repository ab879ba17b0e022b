//! Frames: a 4-byte big-endian length, then a postcard body whose first field
//! is the protocol version.
//!
//! ```text
//! frame = len:u32be | body            (len <= the direction's limit)
//! body  = version:varint(u16) | rest of WireRequest / WireResponse
//! ```
//!
//! Decoding is total: any byte string yields a value or a [`CodecError`], never
//! a panic, and nothing is allocated beyond the (bounded) frame itself and the
//! decoded value, whose lists are bounded by [`crate::limits`]. The version is
//! read before the rest, so a peer speaking a newer version gets a typed
//! [`CodecError::UnsupportedVersion`] rather than a parse error.
//!
//! Reading frames from a stream is `omega-transport`'s job; this module only
//! builds, splits and decodes byte strings.
//!
//! zstd is not used: ternary embeddings are incompressible (measured in
//! `tests/sizes.rs`), and the frames that would gain (catalog pages) are not
//! under the per-sync budget.

use crate::domain::{
    DomainError, PackedSyncRequest, PackedSyncResponse, SyncRequest, SyncResponse,
};
use crate::limits::{MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME};
use crate::wire::{WireRequest, WireResponse, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};

/// Bytes of the length prefix.
pub const FRAME_HEADER: usize = 4;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The frame (announced or built) is larger than the limit.
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// Announced or built body length.
        len: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The stream ended inside a frame.
    #[error("frame cut short: expected {expected} bytes, got {got}")]
    Truncated {
        /// Bytes expected.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// The body is for a protocol version this build does not speak.
    #[error(
        "unsupported protocol version {0} (supported {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION})"
    )]
    UnsupportedVersion(u16),
    /// The body is not valid postcard for the message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// Bytes are left over after the message.
    #[error("{0} unexpected bytes after the message")]
    TrailingBytes(usize),
    /// The message decoded but breaks a protocol rule (range, length, NaN …).
    #[error("invalid message: {0}")]
    Invalid(#[from] DomainError),
    /// Reading or writing the stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl CodecError {
    /// A short stable name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            CodecError::FrameTooLarge { .. } => "frame_too_large",
            CodecError::Truncated { .. } => "truncated",
            CodecError::UnsupportedVersion(_) => "unsupported_version",
            CodecError::Malformed(_) => "malformed",
            CodecError::TrailingBytes(_) => "trailing_bytes",
            CodecError::Invalid(_) => "invalid",
            CodecError::Io(_) => "io",
        }
    }
}

/// Wraps a body in a frame, refusing bodies over `limit`.
pub fn frame(body: Vec<u8>, limit: usize) -> Result<Vec<u8>, CodecError> {
    if body.len() > limit {
        return Err(CodecError::FrameTooLarge {
            len: body.len(),
            limit,
        });
    }
    let mut out = Vec::with_capacity(FRAME_HEADER + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Splits one complete frame off the front of `bytes`: `(body, rest)`.
pub fn unframe(bytes: &[u8], limit: usize) -> Result<(&[u8], &[u8]), CodecError> {
    if bytes.len() < FRAME_HEADER {
        return Err(CodecError::Truncated {
            expected: FRAME_HEADER,
            got: bytes.len(),
        });
    }
    let len = body_len([bytes[0], bytes[1], bytes[2], bytes[3]], limit)?;
    let rest = &bytes[FRAME_HEADER..];
    if rest.len() < len {
        return Err(CodecError::Truncated {
            expected: len,
            got: rest.len(),
        });
    }
    Ok(rest.split_at(len))
}

fn body_len(header: [u8; FRAME_HEADER], limit: usize) -> Result<usize, CodecError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > limit {
        return Err(CodecError::FrameTooLarge { len, limit });
    }
    Ok(len)
}

fn check_version(body: &[u8]) -> Result<(), CodecError> {
    let (version, _) = postcard::take_from_bytes::<u16>(body)
        .map_err(|e| CodecError::Malformed(format!("version: {e}")))?;
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
        return Err(CodecError::UnsupportedVersion(version));
    }
    Ok(())
}

fn decode_body<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, CodecError> {
    check_version(body)?;
    let (value, rest) =
        postcard::take_from_bytes::<T>(body).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

fn encode_body<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    postcard::to_stdvec(value).map_err(|e| CodecError::Malformed(e.to_string()))
}

/// Encodes a request as a complete frame.
pub fn encode_request(r: &SyncRequest) -> Result<Vec<u8>, CodecError> {
    encode_wire_request(&WireRequest::try_from_domain(r)?)
}

/// Encodes a request already in wire form (its embeddings quantized) as a
/// complete frame: what [`encode_request`] sends, for a sender that keeps
/// wire forms and changes only their versions.
pub fn encode_wire_request(w: &WireRequest) -> Result<Vec<u8>, CodecError> {
    frame(encode_body(w)?, MAX_REQUEST_FRAME)
}

/// Decodes a request frame body to its wire form (exact, no validation beyond
/// structure and limits).
pub fn decode_wire_request(body: &[u8]) -> Result<WireRequest, CodecError> {
    if body.len() > MAX_REQUEST_FRAME {
        return Err(CodecError::FrameTooLarge {
            len: body.len(),
            limit: MAX_REQUEST_FRAME,
        });
    }
    decode_body(body)
}

/// Decodes and validates a request frame body.
pub fn decode_request(body: &[u8]) -> Result<SyncRequest, CodecError> {
    Ok(SyncRequest::try_from(decode_wire_request(body)?)?)
}

/// Encodes a response as a complete frame.
pub fn encode_response(r: &SyncResponse) -> Result<Vec<u8>, CodecError> {
    frame(
        encode_body(&WireResponse::try_from_domain(r)?)?,
        MAX_RESPONSE_FRAME,
    )
}

/// Decodes a response frame body to its wire form.
pub fn decode_wire_response(body: &[u8]) -> Result<WireResponse, CodecError> {
    if body.len() > MAX_RESPONSE_FRAME {
        return Err(CodecError::FrameTooLarge {
            len: body.len(),
            limit: MAX_RESPONSE_FRAME,
        });
    }
    decode_body(body)
}

/// Decodes and validates a request frame body, keeping the patterns'
/// embeddings in their wire form (the node's entry point: nothing is
/// dequantized).
pub fn decode_packed_request(body: &[u8]) -> Result<PackedSyncRequest, CodecError> {
    Ok(PackedSyncRequest::try_from(decode_wire_request(body)?)?)
}

/// Encodes a response whose embeddings are already in wire form (the node's
/// exit point: the stored bytes are copied, nothing is quantized).
pub fn encode_packed_response(r: &PackedSyncResponse) -> Result<Vec<u8>, CodecError> {
    frame(
        encode_body(&WireResponse::try_from_domain(r)?)?,
        MAX_RESPONSE_FRAME,
    )
}

/// Decodes and validates a response frame body.
pub fn decode_response(body: &[u8]) -> Result<SyncResponse, CodecError> {
    Ok(SyncResponse::try_from(decode_wire_response(body)?)?)
}
