//! One connection's HTTP phase: read the request head (bounded in size and
//! time), answer plain requests, and hand upgrades to their WebSocket loop.

use std::net::SocketAddr;
use std::rc::Rc;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use protocol::limits::HANDSHAKE_BYTES_MAX;

use protocol::token::Claims;
use protocol::{Encoding, close};

use crate::chat::{self, ShardMsg};
use crate::handoff;
use crate::http::{self, Handshake, Request, RequestError, Status};
use crate::metrics::ShardStats;
use crate::shard::{ConnGuard, Shard};
use crate::websocket::{self, Echo};

/// Bytes read at a time during the HTTP phase.
const HEAD_READ_BYTES: usize = 4096;

/// Where a request goes once its head (and body) is read.
enum Route {
    /// Write these bytes and close.
    Respond(Vec<u8>),
    /// Write this head, then an embedded file's bytes (no copy), and close.
    File { head: Vec<u8>, body: &'static [u8] },
    /// Upgrade to the dev echo endpoint; `response` is the 101.
    Echo {
        response: Vec<u8>,
        leftover: Vec<u8>,
    },
    /// Upgrade to a chat session of the authenticated device.
    Chat {
        response: Vec<u8>,
        leftover: Vec<u8>,
        claims: Claims,
        encoding: Encoding,
    },
}

/// Serves one accepted connection to the end.
pub(crate) async fn serve(mut stream: TcpStream, peer: SocketAddr, shard: Rc<Shard>) {
    let _ = stream.set_nodelay(true);
    let Some(mut guard) = shard.admit() else {
        let mut out = Vec::new();
        http::write_text(
            &mut out,
            Status::ServiceUnavailable,
            "connection limit reached\n",
        );
        let _ = stream.write_all(out).await;
        return;
    };
    let Some(slot) = shard.ips.admit(peer.ip()) else {
        ShardStats::bump(&shard.chat.stats().ip_limit_refusals);
        let mut out = Vec::new();
        http::write_text(
            &mut out,
            Status::TooManyRequests,
            "too many connections from this address\n",
        );
        let _ = stream.write_all(out).await;
        return;
    };
    guard.ip = Some(slot);
    let timeout = shard.config.handshake_timeout;
    // Boxed: the request-head phase (with its timer, ~1 KB of future) is
    // freed before the connection settles into its idle WebSocket loop.
    let route = match Box::pin(monoio::time::timeout(
        timeout,
        read_route(&mut stream, &shard),
    ))
    .await
    {
        Ok(Ok(route)) => route,
        Ok(Err(e)) => {
            tracing::debug!(%peer, cause = %e, "connection failed before a complete request");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "handshake timeout");
            let mut out = Vec::new();
            http::write_text(&mut out, Status::RequestTimeout, "request head timeout\n");
            let _ = Box::pin(stream.write_all(out)).await;
            return;
        }
    };
    match route {
        Route::Respond(out) => Box::pin(write_plain(&mut stream, out, &[])).await,
        Route::File { head, body } => Box::pin(write_plain(&mut stream, head, body)).await,
        Route::Echo { response, leftover } => {
            let (res, _) = Box::pin(stream.write_all(response)).await;
            if res.is_ok() {
                websocket::run(stream, leftover, &shard, &guard.handle, &Echo::LIMITS, Echo).await;
            }
        }
        Route::Chat {
            response,
            leftover,
            claims,
            encoding,
        } => {
            let (res, _) = Box::pin(stream.write_all(response)).await;
            if res.is_ok() {
                Box::pin(start_chat(shard, stream, leftover, guard, claims, encoding)).await;
            }
        }
    }
}

/// Writes a plain response: `head` (or the whole response), then `body`, if any. The
/// connection closes when the caller drops it; a failed write just closes it sooner.
async fn write_plain(stream: &mut TcpStream, head: Vec<u8>, body: &'static [u8]) {
    let (res, _) = stream.write_all(head).await;
    if res.is_ok() && !body.is_empty() {
        let _ = stream.write_all(body).await;
    }
}

/// Runs the session here if this is the user's home shard, else hands the
/// connection to the home shard.
async fn start_chat(
    shard: Rc<Shard>,
    mut stream: TcpStream,
    leftover: Vec<u8>,
    mut guard: ConnGuard,
    claims: Claims,
    encoding: Encoding,
) {
    let home = shard.chat.home_of(claims.user);
    if home == shard.id {
        chat::run_session(shard, stream, leftover, guard, claims, encoding).await;
        return;
    }
    let handoff = match handoff::detach(&stream, leftover) {
        Ok(conn) => chat::Handoff {
            conn,
            claims,
            encoding,
            ip: guard.ip.take(),
        },
        Err(e) => {
            tracing::warn!(cause = %e, "cannot detach a connection for handoff");
            return;
        }
    };
    let sent = shard.chat.route(home, ShardMsg::Handoff(Box::new(handoff)));
    if let Err(msg) = sent {
        // The detached copy closes with `msg`; answer on this one.
        drop(msg);
        let mut out = Vec::new();
        crate::ws::write_close(&mut out, close::TRY_AGAIN_LATER, "server busy");
        let _ = stream.write_all(out).await;
        return;
    }
    shard.chat.flush();
    tracing::debug!(
        user = claims.user.0,
        device = claims.device.0,
        to_shard = home,
        "handed off to the home shard"
    );
    drop(guard);
}

/// Reads until a whole request (head plus body) is buffered, then routes it.
async fn read_route(stream: &mut TcpStream, shard: &Shard) -> std::io::Result<Route> {
    let mut buf: Vec<u8> = Vec::with_capacity(HEAD_READ_BYTES);
    loop {
        match Request::parse(&buf) {
            Ok(Some(req)) if buf.len() >= req.message_len() => return Ok(route(&req, &buf, shard)),
            Ok(_) => {}
            Err(e) => return Ok(Route::Respond(error_response(e))),
        }
        // Checked only while the request is incomplete: a complete one whose
        // last read also carried early bytes is still answered. A read adds
        // at most `HEAD_READ_BYTES`, so the buffer stays bounded.
        if buf.len() > HANDSHAKE_BYTES_MAX + http::BODY_BYTES_MAX {
            return Ok(Route::Respond(error_response(RequestError::HeadTooLarge)));
        }
        let chunk = Vec::with_capacity(HEAD_READ_BYTES);
        let (res, chunk) = stream.read(chunk).await;
        if res? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk);
    }
}

fn error_response(e: RequestError) -> Vec<u8> {
    let mut out = Vec::new();
    e.write_response(&mut out);
    out
}

fn respond(status: Status, text: &str) -> Route {
    let mut out = Vec::new();
    http::write_text(&mut out, status, text);
    Route::Respond(out)
}

fn route(req: &Request<'_>, buf: &[u8], shard: &Shard) -> Route {
    let dev = shard.config.dev;
    match (req.method(), req.path()) {
        ("GET", "/healthz") => respond(Status::Ok, "ok\n"),
        ("GET", "/readyz") if shard.shutdown.is_requested() => {
            respond(Status::ServiceUnavailable, "shutting down\n")
        }
        ("GET", "/readyz") => respond(Status::Ok, "ready\n"),
        ("POST", "/v1/dev/token") if dev => {
            let mut out = Vec::new();
            let body = req.body(buf).unwrap_or_default();
            crate::dev::token_endpoint(&shard.tokens, body, unix_now(), &mut out);
            Route::Respond(out)
        }
        ("GET", "/v1/dev/echo") if dev => match Handshake::validate(req) {
            Ok(hs) => {
                let mut response = Vec::new();
                hs.write_response(&mut response, None);
                Route::Echo {
                    response,
                    leftover: buf[req.head_len()..].to_vec(),
                }
            }
            Err(e) => Route::Respond(error_response(e)),
        },
        ("GET", "/ws") => match upgrade_chat(req, buf, shard) {
            Ok(route) => {
                ShardStats::bump(&shard.chat.stats().handshakes);
                route
            }
            Err(e) => {
                if e == RequestError::Unauthorized {
                    ShardStats::bump(&shard.chat.stats().auth_failures);
                } else {
                    ShardStats::bump(&shard.chat.stats().handshake_failures);
                }
                Route::Respond(error_response(e))
            }
        },
        ("GET", "/v1/info") => info(dev),
        (_, "/healthz" | "/readyz" | "/ws" | "/v1/info") => {
            let mut out = Vec::new();
            http::write_method_not_allowed(&mut out, "GET");
            Route::Respond(out)
        }
        (_, path) => match crate::web::find(path).filter(|_| shard.config.web) {
            Some(file) => {
                let (head, body) = crate::web::respond(req, file);
                Route::File { head, body }
            }
            None => respond(Status::NotFound, "not found\n"),
        },
    }
}

/// `GET /v1/info`: what a client needs before it connects (the web client picks dev
/// sign-in or a pasted token by `dev`).
fn info(dev: bool) -> Route {
    let body = format!(
        r#"{{"server":"switchboard","protocol":{},"dev":{dev}}}"#,
        protocol::VERSION
    );
    let mut out = Vec::new();
    http::write_json(&mut out, Status::Ok, body.as_bytes());
    Route::Respond(out)
}

/// Validates a chat upgrade: the WebSocket handshake, the `encoding`
/// parameter and the token (bad, expired or for the reserved device 0: 401).
fn upgrade_chat(req: &Request<'_>, buf: &[u8], shard: &Shard) -> Result<Route, RequestError> {
    let hs = Handshake::validate(req)?;
    let encoding = match req.query("encoding")?.as_deref() {
        None | Some("json") => Encoding::Json,
        Some("binary") => Encoding::Binary,
        Some(_) => return Err(RequestError::BadQuery),
    };
    let token = req.auth_token()?.ok_or(RequestError::Unauthorized)?;
    let claims = shard.tokens.verify(&token, unix_now()).map_err(|e| {
        tracing::debug!(cause = %e, "token refused");
        RequestError::Unauthorized
    })?;
    if claims.device.0 == 0 {
        return Err(RequestError::Unauthorized);
    }
    let mut response = Vec::new();
    hs.write_response(&mut response, None);
    Ok(Route::Chat {
        response,
        leftover: buf[req.head_len()..].to_vec(),
        claims,
        encoding,
    })
}

/// Seconds since the Unix epoch, for token issue and expiry.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
