//! The Unix socket that both clients, QMP's and the guest agent's, connect over.

use std::path::Path;

use tokio::net::UnixStream;

use crate::error::Error;

/// Opens the Unix socket at `path` (QMP's or the guest agent's).
pub(crate) async fn connect_socket(path: &Path) -> Result<UnixStream, Error> {
    UnixStream::connect(path)
        .await
        .map_err(|source| Error::Connect {
            path: path.to_owned(),
            source,
        })
}
