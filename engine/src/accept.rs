//! The accept loop of one shard.

use std::rc::Rc;
use std::time::Duration;

use monoio::net::TcpListener;

use crate::conn;
use crate::shard::Shard;

/// Pause after an accept error such as EMFILE, so a full fd table does not
/// spin the shard.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(20);

/// Accepts connections until shutdown is requested.
pub(crate) async fn accept_loop(shard: &Rc<Shard>, listener: &TcpListener) {
    let index = usize::from(shard.id);
    loop {
        monoio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let shard = shard.clone();
                    monoio::spawn(async move { conn::serve(stream, peer, shard).await });
                }
                Err(e) => {
                    tracing::warn!(shard = shard.id, cause = %e, "accept failed");
                    monoio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            () = shard.shutdown.requested(index) => break,
        }
    }
    tracing::info!(shard = shard.id, "stopped accepting");
}
