//! Async frame IO: one `len:u32be | body` frame (the format of
//! [`omega_protocol::codec`]) read from a stream.
//!
//! [`FrameDecoder`] checks the announced length against the limit as soon as
//! the header is in and keeps the protocol's typed errors: an oversized frame
//! is [`CodecError::FrameTooLarge`] with the announced length, a stream ending
//! inside a frame is [`CodecError::Truncated`]. It never reserves the body's
//! announced length up front: the buffer grows only as bytes arrive, so a
//! peer that announces a large frame and stalls holds no more memory than it
//! sent (requests may be 512 KiB, and a node holds thousands of streams).

use bytes::{Buf, BytesMut};
use futures_core::Stream;
use tokio::io::AsyncRead;
use tokio_util::codec::{Decoder, FramedRead};

use omega_protocol::codec::FRAME_HEADER;
use omega_protocol::CodecError;

/// Decodes `len:u32be | body` frames of at most `limit` body bytes into their
/// bodies.
#[derive(Debug)]
pub struct FrameDecoder {
    limit: usize,
    /// The body length of the frame being read, once its header is in.
    announced: Option<usize>,
}

impl FrameDecoder {
    /// A decoder refusing bodies over `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            announced: None,
        }
    }
}

fn header(src: &BytesMut) -> Option<[u8; FRAME_HEADER]> {
    src.first_chunk::<FRAME_HEADER>().copied()
}

impl Decoder for FrameDecoder {
    type Item = BytesMut;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        let len = match self.announced {
            Some(len) => len,
            None => {
                let Some(h) = header(src) else {
                    return Ok(None);
                };
                let len = u32::from_be_bytes(h) as usize;
                if len > self.limit {
                    return Err(CodecError::FrameTooLarge {
                        len,
                        limit: self.limit,
                    });
                }
                self.announced = Some(len);
                len
            }
        };
        if src.len() < FRAME_HEADER + len {
            return Ok(None);
        }
        src.advance(FRAME_HEADER);
        self.announced = None;
        Ok(Some(src.split_to(len)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        match self.decode(src)? {
            Some(body) => Ok(Some(body)),
            None if src.is_empty() && self.announced.is_none() => Ok(None),
            None => Err(match self.announced {
                // The header stays in the buffer until the body is whole.
                Some(expected) => CodecError::Truncated {
                    expected,
                    got: src.len().saturating_sub(FRAME_HEADER),
                },
                None => CodecError::Truncated {
                    expected: FRAME_HEADER,
                    got: src.len(),
                },
            }),
        }
    }
}

/// Reads one frame body from a stream. The length is checked against `limit`
/// before any buffer is reserved for the body; a stream ending early
/// (including before the first byte) is [`CodecError::Truncated`].
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> Result<Vec<u8>, CodecError> {
    // Start with room for the header only (FramedRead's default would
    // allocate 8 KiB per stream first); the buffer grows as bytes arrive.
    let mut frames = FramedRead::with_capacity(r, FrameDecoder::new(limit), FRAME_HEADER);
    match std::future::poll_fn(|cx| std::pin::Pin::new(&mut frames).poll_next(cx)).await {
        Some(body) => Ok(Vec::from(body?)),
        None => Err(CodecError::Truncated {
            expected: FRAME_HEADER,
            got: 0,
        }),
    }
}
