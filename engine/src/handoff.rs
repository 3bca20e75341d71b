//! Handing an accepted connection to another shard.
//!
//! Every shard accepts on the shared port, but all devices of a user live on
//! the user's home shard. After the upgrade and authentication, the
//! accepting shard [`detach`]es the connection (a std stream plus the bytes
//! already read after the request head), sends it through the router, and
//! the home shard [`Detached::attach`]es it to its own runtime.

use monoio::net::TcpStream;

use crate::sys;

/// A connection in transit between shards; `Send`.
#[derive(Debug)]
pub struct Detached {
    stream: std::net::TcpStream,
    /// Bytes that arrived after the request head (the first frames).
    pub leftover: Vec<u8>,
}

/// Detaches `stream` from the calling shard's runtime. No operation may be
/// in flight on it; the caller drops `stream` afterwards (the socket stays
/// open through the detached descriptor).
pub fn detach(stream: &TcpStream, leftover: Vec<u8>) -> std::io::Result<Detached> {
    Ok(Detached {
        stream: sys::dup_stream(stream)?,
        leftover,
    })
}

impl Detached {
    /// Attaches the connection to the calling shard's runtime.
    pub fn attach(self) -> std::io::Result<(TcpStream, Vec<u8>)> {
        self.stream.set_nonblocking(true)?;
        Ok((TcpStream::from_std(self.stream)?, self.leftover))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Duration;

    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};

    use super::*;

    fn runtime() -> monoio::FusionRuntime<
        monoio::time::TimeDriver<monoio::IoUringDriver>,
        monoio::time::TimeDriver<monoio::LegacyDriver>,
    > {
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
    }

    /// A connection accepted and read on one runtime thread carries on,
    /// with its leftover bytes, on another.
    #[test]
    fn a_connection_moves_between_runtimes() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<Detached>();
        let accepting = std::thread::spawn(move || {
            runtime().block_on(async move {
                let listener = monoio::net::TcpListener::from_std(listener).unwrap();
                let (mut stream, _) = listener.accept().await.unwrap();
                let (n, buf) = stream.read(Vec::with_capacity(64)).await;
                assert_eq!(n.unwrap(), 10);
                assert_eq!(&buf[..5], b"hello");
                tx.send(detach(&stream, buf[5..].to_vec()).unwrap())
                    .unwrap();
                drop(stream);
            });
        });
        let home = std::thread::spawn(move || {
            let detached = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            runtime().block_on(async move {
                let (mut stream, leftover) = detached.attach().unwrap();
                assert_eq!(leftover, b"world");
                let (res, _) = stream.write_all(b"moved".to_vec()).await;
                res.unwrap();
                let (n, buf) = stream.read(Vec::with_capacity(64)).await;
                assert_eq!(&buf[..n.unwrap()], b"again");
                let (res, _) = stream.write_all(b"bye".to_vec()).await;
                res.unwrap();
            });
        });
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        client.write_all(b"helloworld").unwrap();
        accepting.join().unwrap();
        let mut buf = [0u8; 5];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(
            &buf, b"moved",
            "the home shard answers after the accepting one let go"
        );
        client.write_all(b"again").unwrap();
        let mut buf = [0u8; 3];
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"bye");
        home.join().unwrap();
    }
}
