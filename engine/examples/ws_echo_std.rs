//! A blocking WebSocket echo server over the engine's codec, one thread per connection,
//! for the Autobahn|Testsuite (`tools/autobahn/run.sh`). It echoes text and binary
//! messages, answers pings, and completes the closing handshake. Not the engine's server:
//! that one runs on monoio and holds no buffer per idle connection.
//!
//!     cargo run --release -p engine --example ws_echo_std -- [127.0.0.1:9001]
//!
//! It binds loopback addresses only.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use engine::http::{Handshake, Request};
use engine::ws::{self, Decoder, Event, Limits};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Autobahn sends messages of up to 16 MiB (cases 9.1.6, 9.2.6), in up to 65,536
/// fragments (9.3.1, 4 MiB in 64-byte frames); the engine's limits are much lower.
const LIMITS: Limits = Limits::new(16 << 20, 16 << 20, 1 << 20);

/// Bytes read at a time; shared by nothing here, but sized like a shard's scratch buffer.
const READ_BYTES: usize = 64 * 1024;

/// How long to wait for the client to close its side after our close frame.
const LINGER: Duration = Duration::from_secs(2);

fn main() -> io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:9001")
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    if !addr.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "ws_echo_std binds loopback addresses only",
        ));
    }
    let listener = TcpListener::bind(addr)?;
    eprintln!("ws_echo_std listening on ws://{addr}");
    for stream in listener.incoming() {
        let stream = stream?;
        std::thread::spawn(move || {
            if let Err(e) = serve(stream) {
                eprintln!("connection failed: {e}");
            }
        });
    }
    Ok(())
}

fn serve(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut scratch = vec![0; READ_BYTES];
    let Some(leftover) = handshake(&mut stream, &mut scratch)? else {
        return Ok(());
    };
    echo(stream, &mut scratch, &leftover)
}

/// Reads and answers the upgrade request; returns the bytes read after its head (the
/// first frames), or `None` if the request was refused.
fn handshake(stream: &mut TcpStream, scratch: &mut [u8]) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    let mut out = Vec::new();
    loop {
        let n = stream.read(scratch)?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&scratch[..n]);
        let request = match Request::parse(&head) {
            Ok(Some(request)) => request,
            Ok(None) => continue,
            Err(e) => {
                e.write_response(&mut out);
                stream.write_all(&out)?;
                return Ok(None);
            }
        };
        match Handshake::validate(&request) {
            Ok(handshake) => {
                handshake.write_response(&mut out, None);
                stream.write_all(&out)?;
                return Ok(Some(head[request.head_len()..].to_vec()));
            }
            Err(e) => {
                e.write_response(&mut out);
                stream.write_all(&out)?;
                return Ok(None);
            }
        }
    }
}

fn echo(mut stream: TcpStream, scratch: &mut [u8], leftover: &[u8]) -> io::Result<()> {
    let mut decoder = Decoder::new();
    let mut out = Vec::new();
    // The decoder consumes all of each read: nothing is kept between reads but its state.
    let mut input = leftover;
    loop {
        let mut closing = false;
        for event in decoder.events(input, &LIMITS) {
            match event {
                Ok(Event::Text(text)) => ws::write_text(&mut out, &text),
                Ok(Event::Binary(data)) => ws::write_binary(&mut out, &data),
                Ok(Event::Ping(payload)) => ws::write_pong(&mut out, &payload),
                Ok(Event::Pong(_)) => {}
                Ok(Event::Close { code, .. }) => {
                    // Echo the client's code (RFC 6455 §5.5.1); the decoder validated it.
                    match code {
                        Some(code) => ws::write_close(&mut out, code, ""),
                        None => ws::write_close_empty(&mut out),
                    }
                    closing = true;
                }
                Err(e) => {
                    ws::write_close(&mut out, e.close_code(), &e.to_string());
                    closing = true;
                }
            }
        }
        stream.write_all(&out)?;
        out.clear();
        out.shrink_to(READ_BYTES);
        if closing {
            return linger(stream, scratch);
        }
        let n = stream.read(scratch)?;
        if n == 0 {
            return Ok(());
        }
        input = &scratch[..n];
    }
}

/// After our close frame: stop writing, wait briefly for the client to close, then drop
/// the socket. Closing with unread bytes would send a reset that can overtake the close
/// frame.
fn linger(mut stream: TcpStream, scratch: &mut [u8]) -> io::Result<()> {
    stream.shutdown(Shutdown::Write)?;
    stream.set_read_timeout(Some(LINGER))?;
    while matches!(stream.read(scratch), Ok(n) if n > 0) {}
    Ok(())
}
