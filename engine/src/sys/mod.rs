//! The engine's only `unsafe`: thin wrappers over syscalls that monoio does
//! not expose. Each block states why it is sound.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use rustix::net::RecvFlags;

/// Reads what the socket has without waiting: `Ok(0)` is end of stream,
/// `ErrorKind::WouldBlock` means nothing is there (wait for readiness).
///
/// This lets a connection wait for readiness with no buffer of its own and
/// then read into its shard's shared buffer.
pub fn recv_now(stream: &impl AsRawFd, buf: &mut [u8]) -> io::Result<usize> {
    #[expect(unsafe_code, reason = "borrowing the stream's fd for one recv call")]
    // SAFETY: `stream` is borrowed for the whole call and owns its fd, so the
    // fd is open and not reused until the borrow ends.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    match rustix::net::recv(fd, buf, RecvFlags::DONTWAIT) {
        Ok((n, _)) => Ok(n),
        Err(e) => Err(e.into()),
    }
}

/// A second descriptor for the stream's socket, as a std stream that can be
/// sent to another shard's thread (see `handoff`). The socket stays open
/// until both descriptors are closed, so the caller simply drops `stream`.
/// `dup` rather than monoio's `into_raw_fd`, which panics while any
/// operation still holds the descriptor.
pub fn dup_stream(stream: &impl AsRawFd) -> io::Result<std::net::TcpStream> {
    #[expect(unsafe_code, reason = "borrowing the stream's fd for one dup call")]
    // SAFETY: as in `recv_now`: the borrowed stream owns an open fd for the
    // whole call.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    // `dup` sets close-on-exec on the new descriptor.
    let owned = rustix::io::fcntl_dupfd_cloexec(fd, 0)?;
    Ok(std::net::TcpStream::from(owned))
}
