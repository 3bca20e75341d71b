//! pushd's admin listener: `/metrics` (Prometheus text), `/healthz`, `/readyz`.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::daemon::Ctx;

/// Admin connections served at once; more wait in the accept backlog.
const ADMIN_CONNS_MAX: usize = 64;

/// Serves the admin endpoints on `listener` for as long as the daemon runs.
pub async fn serve(ctx: Arc<Ctx>, listener: TcpListener) {
    let slots = Arc::new(tokio::sync::Semaphore::new(ADMIN_CONNS_MAX));
    loop {
        let permit = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("never closed");
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(cause = %e, "admin accept failed");
                continue;
            }
        };
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                std::future::ready(Ok::<_, Infallible>(answer(&ctx, &req)))
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            let _ = conn.await;
            drop(permit);
        });
    }
}

fn answer(ctx: &Ctx, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            ctx.metrics.render(),
        ),
        ("GET", "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        ("GET", "/readyz") => {
            let linked = ctx
                .link
                .lock()
                .expect("link lock is never poisoned")
                .is_some();
            if linked {
                (StatusCode::OK, "text/plain", "ready\n".to_owned())
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "no engine link\n".to_owned(),
                )
            }
        }
        (_, "/metrics" | "/healthz" | "/readyz") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ctype),
    );
    resp
}
