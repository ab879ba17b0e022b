//! Async frame IO: one `len:u32be | body` frame (the format of
//! [`omega_protocol::codec`]) read from a stream with tokio-util's
//! [`LengthDelimitedCodec`].
//!
//! The codec does the framing, the buffering and the size limit (checked on
//! the header, before the body's buffer is reserved). [`FrameDecoder`] wraps
//! it only to keep the protocol's typed errors: an oversized frame is
//! [`CodecError::FrameTooLarge`] with the announced length, a stream ending
//! inside a frame is [`CodecError::Truncated`].

use bytes::BytesMut;
use futures_core::Stream;
use tokio::io::AsyncRead;
use tokio_util::codec::{Decoder, FramedRead, LengthDelimitedCodec, LengthDelimitedCodecError};

use omega_protocol::codec::FRAME_HEADER;
use omega_protocol::CodecError;

/// Decodes `len:u32be | body` frames of at most `limit` body bytes into their
/// bodies.
#[derive(Debug)]
pub struct FrameDecoder {
    inner: LengthDelimitedCodec,
    limit: usize,
    /// The body length of the frame being read, once its header is in.
    announced: Option<usize>,
}

impl FrameDecoder {
    /// A decoder refusing bodies over `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            inner: LengthDelimitedCodec::builder()
                .length_field_type::<u32>()
                .big_endian()
                .max_frame_length(limit)
                .new_codec(),
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
        if self.announced.is_none() {
            self.announced = header(src).map(|h| u32::from_be_bytes(h) as usize);
        }
        match self.inner.decode(src) {
            Ok(Some(body)) => {
                self.announced = None;
                Ok(Some(body))
            }
            Ok(None) => Ok(None),
            // The codec refused the header (before reserving anything): name
            // the length it announced.
            Err(e)
                if e.get_ref()
                    .is_some_and(|i| i.is::<LengthDelimitedCodecError>()) =>
            {
                Err(match self.announced {
                    Some(len) => CodecError::FrameTooLarge {
                        len,
                        limit: self.limit,
                    },
                    None => e.into(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        match self.decode(src)? {
            Some(body) => Ok(Some(body)),
            None if src.is_empty() && self.announced.is_none() => Ok(None),
            None => Err(match self.announced {
                Some(expected) => CodecError::Truncated {
                    expected,
                    got: src.len(),
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
    // Start with room for the header only: the codec reserves the body's
    // announced length once the header is in (FramedRead's default would
    // allocate 8 KiB per stream first).
    let mut frames = FramedRead::with_capacity(r, FrameDecoder::new(limit), FRAME_HEADER);
    match std::future::poll_fn(|cx| std::pin::Pin::new(&mut frames).poll_next(cx)).await {
        Some(body) => Ok(Vec::from(body?)),
        None => Err(CodecError::Truncated {
            expected: FRAME_HEADER,
            got: 0,
        }),
    }
}
