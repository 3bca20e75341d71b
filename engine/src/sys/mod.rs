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
