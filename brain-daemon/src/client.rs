//! A minimal client: one request line out, one response line back.

use std::path::Path;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, writing or reading failed.
    #[error("socket {path}: {source}")]
    Io {
        /// The socket.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The daemon closed the connection without answering.
    #[error("the daemon closed the connection without answering")]
    NoAnswer,
    /// The answer is not JSON.
    #[error("bad answer from the daemon: {0}")]
    BadAnswer(String),
}

/// Sends `request` (a JSON object) and returns the parsed response object.
pub async fn call(socket: &Path, request: &Value) -> Result<Value, ClientError> {
    let io = |source| ClientError::Io {
        path: socket.display().to_string(),
        source,
    };
    let stream = UnixStream::connect(socket).await.map_err(io)?;
    let (rd, mut wr) = stream.into_split();
    let mut line = request.to_string();
    line.push('\n');
    wr.write_all(line.as_bytes()).await.map_err(io)?;
    let mut reader = BufReader::new(rd);
    let mut answer = String::new();
    let n = reader.read_line(&mut answer).await.map_err(io)?;
    if n == 0 {
        return Err(ClientError::NoAnswer);
    }
    serde_json::from_str(&answer).map_err(|e| ClientError::BadAnswer(format!("{e}: {answer}")))
}
