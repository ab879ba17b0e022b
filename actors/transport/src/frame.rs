//! Async frame IO: one `len:u32be | body` frame (the format of
//! [`omega_protocol::codec`]) read from a stream.

use tokio::io::{AsyncRead, AsyncReadExt};

use omega_protocol::codec::{body_len, FRAME_HEADER};
use omega_protocol::CodecError;

/// Reads one frame body from a stream. The length is checked against `limit`
/// before any buffer is allocated; a stream ending early is
/// [`CodecError::Truncated`].
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> Result<Vec<u8>, CodecError> {
    let mut header = [0u8; FRAME_HEADER];
    read_full(r, &mut header).await?;
    let len = body_len(header, limit)?;
    let mut body = vec![0u8; len];
    read_full(r, &mut body).await?;
    Ok(body)
}

async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), CodecError> {
    let mut got = 0;
    while got < buf.len() {
        let n = r.read(&mut buf[got..]).await?;
        if n == 0 {
            return Err(CodecError::Truncated {
                expected: buf.len(),
                got,
            });
        }
        got += n;
    }
    Ok(())
}
