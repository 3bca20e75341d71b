//! `pushd mock-provider`: a loopback server imitating Apple APNs (token-based
//! auth), Firebase Cloud Messaging HTTP v1 and Google's OAuth 2 token endpoint.
//!
//! One port speaks HTTP/2 with prior knowledge (what the pushd clients use)
//! and HTTP/1.1 (what the control API's users use). Provider paths check the
//! credentials and the request shape as the real services do and answer with
//! their status codes and reason bodies:
//!
//! - `POST /3/device/{token}`: APNs ([`apns`]);
//! - `POST /token`: the OAuth 2 JWT-bearer grant ([`fcm`]);
//! - `POST /v1/projects/{project}/messages:send`: FCM ([`fcm`]).
//!
//! Faults (a status, `Retry-After`, latency, tokens to report as
//! unregistered) come from the flags at start and from `POST /control/fault`
//! later; every provider request is recorded for `GET /control/received`
//! ([`control`]). `GET /healthz` answers `ok`.
//!
//! Order on a provider path: routing (404), injected latency, method (405),
//! injected status fault, then the provider's own checks. The injected status
//! comes before authentication on purpose: a real overloaded front end
//! answers 503 whatever the request.

mod apns;
mod control;
mod fcm;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

/// Connections served at once; further clients wait in the listen backlog.
const MAX_CONNECTIONS: usize = 1024;
/// Concurrent HTTP/2 streams per connection (APNs allows 1000 too).
const MAX_STREAMS: u32 = 1000;
/// Largest request body read on a provider path; APNs answers 413 above it,
/// FCM 400 "Message is too big" (both limits proper are 4096 bytes).
const MAX_BODY: usize = 64 * 1024;
/// Largest control request body (a fault state may list many tokens).
const MAX_CONTROL_BODY: usize = 16 * 1024 * 1024;
/// Pause after a failed `accept` (out of descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The services the mock imitates; also the value of `--fault-provider`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// APNs, `POST /3/device/{token}`.
    Apns,
    /// FCM HTTP v1, `POST /v1/projects/{project}/messages:send`.
    Fcm,
    /// Google's OAuth 2 token endpoint, `POST /token`. Faults reach it only
    /// when named explicitly (`--fault-provider oauth`).
    Oauth,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Self::Apns => "apns",
            Self::Fcm => "fcm",
            Self::Oauth => "oauth",
        }
    }
}

/// Flags of `pushd mock-provider`.
#[derive(Debug, Clone, clap::Args)]
pub struct MockArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Also write `http://IP:PORT` to this file (atomically) once listening.
    #[arg(long, value_name = "PATH")]
    pub addr_file: Option<PathBuf>,
    /// APNs provider key (`.p8`: PKCS#8 PEM, P-256) whose tokens to accept;
    /// without it every APNs request gets 403 `InvalidProviderToken`.
    #[arg(long, value_name = "FILE")]
    pub apns_key: Option<PathBuf>,
    /// Key id the tokens must name (`kid`); default: from an
    /// `AuthKey_<KID>.p8` file name, else any.
    #[arg(long, value_name = "KID")]
    pub apns_key_id: Option<String>,
    /// Team id the tokens must be issued by (`iss`); default: any.
    #[arg(long, value_name = "TEAM")]
    pub apns_team_id: Option<String>,
    /// The bundle id accepted as `apns-topic` (also with the push-type
    /// suffixes `.voip`, `.complication`, ...); default: any.
    #[arg(long, value_name = "TOPIC")]
    pub apns_topic: Option<String>,
    /// Google service-account JSON whose OAuth 2 assertions to accept.
    #[arg(long, value_name = "FILE")]
    pub fcm_service_account: Option<PathBuf>,
    /// Lifetime of issued access tokens (`expires_in`); refused after it.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub fcm_token_ttl: u64,
    /// Answer provider requests with this status (429 or 5xx).
    #[arg(long, value_name = "CODE", value_parser = parse_fault_status)]
    pub fault_status: Option<u16>,
    /// `Retry-After` seconds sent with the injected status.
    #[arg(long, value_name = "SECS")]
    pub retry_after: Option<u64>,
    /// Fault only this many requests, then clear the status fault.
    #[arg(long, value_name = "N")]
    pub fault_remaining: Option<u64>,
    /// Delay every provider answer by this much.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Device token to report as unregistered (repeatable).
    #[arg(long = "invalid-token", value_name = "TOKEN")]
    pub invalid_tokens: Vec<String>,
    /// Service the status fault and latency apply to; default: APNs and FCM.
    #[arg(long, value_enum, value_name = "SERVICE")]
    pub fault_provider: Option<Service>,
}

impl Default for MockArgs {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            addr_file: None,
            apns_key: None,
            apns_key_id: None,
            apns_team_id: None,
            apns_topic: None,
            fcm_service_account: None,
            fcm_token_ttl: 3600,
            fault_status: None,
            retry_after: None,
            fault_remaining: None,
            latency_ms: 0,
            invalid_tokens: Vec::new(),
            fault_provider: None,
        }
    }
}

/// Whether `code` can be injected: 429 or a 5xx.
fn is_fault_status(code: u16) -> bool {
    code == 429 || (500..=599).contains(&code)
}

fn parse_fault_status(s: &str) -> Result<u16, String> {
    let code: u16 = s.parse().map_err(|_| format!("not a status code: {s}"))?;
    if is_fault_status(code) {
        Ok(code)
    } else {
        Err(format!("only 429 and 5xx can be injected, not {code}"))
    }
}

/// Runs the mock until SIGTERM or SIGINT: binds `--listen`, prints
/// `mock-provider listening on http://IP:PORT`, writes `--addr-file`.
pub fn run(args: MockArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let mock = Arc::new(Mock::from_args(&args)?);
        let addr = listener.local_addr().context("reading the bound address")?;
        announce(addr, args.addr_file.as_deref())?;
        tokio::select! {
            served = accept_loop(mock, listener) => served,
            signal = shutdown_signal() => signal,
        }
    })
}

/// Serves the mock on `listener` until an error; for in-process use.
pub async fn serve(args: MockArgs, listener: TcpListener) -> anyhow::Result<()> {
    let mock = Arc::new(Mock::from_args(&args)?);
    accept_loop(mock, listener).await
}

/// Starts the mock on the current runtime, bound to `args.listen`.
pub async fn spawn(args: MockArgs) -> anyhow::Result<MockServer> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let mock = Arc::new(Mock::from_args(&args)?);
    let task = tokio::spawn(accept_loop(mock, listener));
    Ok(MockServer { addr, task })
}

/// A mock started by [`spawn`]; stops (with its connections) when dropped.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    task: JoinHandle<anyhow::Result<()>>,
}

impl MockServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://IP:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Prints the listening line and writes the address file (temp + rename).
fn announce(addr: SocketAddr, addr_file: Option<&Path>) -> anyhow::Result<()> {
    let url = format!("http://{addr}");
    if let Some(path) = addr_file {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp.{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, &url).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "mock-provider listening on {url}").context("writing to stdout")?;
    out.flush().context("flushing stdout")?;
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        ctrl_c = tokio::signal::ctrl_c() => ctrl_c.context("waiting for SIGINT")?,
    }
    tracing::info!("mock-provider: shutting down");
    Ok(())
}

/// Accepts connections and serves each in its own task. Dropping the future
/// drops the `JoinSet`, which aborts every connection task.
async fn accept_loop(mock: Arc<Mock>, listener: TcpListener) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(MAX_STREAMS);
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let slot = Arc::clone(&slots)
            .acquire_owned()
            .await
            .context("connection semaphore closed")?;
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("mock-provider: accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Latency matters more than packet count on loopback.
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let mock = Arc::clone(&mock);
        connections.spawn(async move {
            let service = service_fn(move |req| handle(Arc::clone(&mock), req));
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("mock-provider: connection ended: {e}");
            }
            drop(slot);
        });
    }
}

/// The mock's configuration and state, shared by all connections.
struct Mock {
    apns: Option<apns::ApnsAuth>,
    apns_topic: Option<String>,
    fcm: Option<fcm::FcmAuth>,
    access_tokens: fcm::AccessTokens,
    token_ttl_s: u64,
    control: control::Control,
}

impl Mock {
    fn from_args(args: &MockArgs) -> anyhow::Result<Self> {
        let apns = match &args.apns_key {
            Some(path) => Some(apns::ApnsAuth::load(
                path,
                args.apns_key_id.clone(),
                args.apns_team_id.clone(),
            )?),
            None => None,
        };
        let fcm = match &args.fcm_service_account {
            Some(path) => Some(fcm::FcmAuth::load(path)?),
            None => None,
        };
        let faults = control::Faults::from_args(args)?;
        Ok(Self {
            apns,
            apns_topic: args.apns_topic.clone(),
            fcm,
            access_tokens: fcm::AccessTokens::default(),
            token_ttl_s: args.fcm_token_ttl,
            control: control::Control::new(faults),
        })
    }
}

async fn handle(
    mock: Arc<Mock>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let answer = if path.starts_with("/control/") {
        control::handle(&mock, req).await
    } else if path == "/healthz" {
        if req.method() == Method::GET || req.method() == Method::HEAD {
            Answer::text(StatusCode::OK, "ok")
        } else {
            Answer::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
    } else if let Some(service) = route(path) {
        provider(&mock, service, req).await
    } else {
        Answer::json(StatusCode::NOT_FOUND, &json!({"reason": "BadPath"})).reason("BadPath")
    };
    Ok(answer.into_response())
}

/// Which provider path `path` is, if any (well-formed ones only).
fn route(path: &str) -> Option<Service> {
    if let Some(token) = path.strip_prefix("/3/device/") {
        return (!token.is_empty() && !token.contains('/')).then_some(Service::Apns);
    }
    if path == "/token" {
        return Some(Service::Oauth);
    }
    fcm::project_of(path).map(|_| Service::Fcm)
}

/// Serves one provider request: latency, method, injected status, then the
/// provider's checks; records it whatever the answer.
async fn provider(mock: &Mock, service: Service, req: Request<Incoming>) -> Answer {
    let mut seen = Seen::new(service, req.uri().path());
    let latency = mock.control.latency(service);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let answer = if req.method() != Method::POST {
        method_not_allowed(service)
    } else if let Some(fault) = mock.control.take_fault(service) {
        match service {
            Service::Apns => apns::fault(&fault),
            Service::Fcm => fcm::send_fault(&fault),
            Service::Oauth => fcm::token_fault(&fault),
        }
    } else {
        match service {
            Service::Apns => apns::handle(mock, req, &mut seen).await,
            Service::Fcm => fcm::handle_send(mock, req, &mut seen).await,
            Service::Oauth => fcm::handle_token(mock, req, &mut seen).await,
        }
    };
    if service == Service::Apns && seen.token.is_none() {
        seen.token = seen.path.strip_prefix("/3/device/").map(str::to_owned);
    }
    mock.control.record(seen, &answer);
    answer
}

fn method_not_allowed(service: Service) -> Answer {
    let status = StatusCode::METHOD_NOT_ALLOWED;
    match service {
        Service::Apns => {
            Answer::json(status, &json!({"reason": "MethodNotAllowed"})).reason("MethodNotAllowed")
        }
        Service::Fcm => fcm::error(status, "INVALID_ARGUMENT", "Method not allowed.", None),
        Service::Oauth => fcm::oauth_error(status, "invalid_request", "Method not allowed."),
    }
}

/// What a provider path received, for the recording.
#[derive(Debug)]
struct Seen {
    service: Service,
    path: String,
    /// The device token (APNs path, FCM `message.token`).
    token: Option<String>,
    /// The `apns-*` request headers; never `authorization`.
    headers: BTreeMap<String, String>,
    /// The body, if it was JSON (for `/token`: the grant type and the
    /// assertion's claims, never the assertion itself).
    body: Option<Value>,
    at_ms: u64,
}

impl Seen {
    fn new(service: Service, path: &str) -> Self {
        Self {
            service,
            path: path.to_owned(),
            token: None,
            headers: BTreeMap::new(),
            body: None,
            at_ms: now_ms(),
        }
    }
}

/// A response under construction, with the reason to record.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    reason: Option<String>,
    content_type: Option<&'static str>,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl Answer {
    fn empty(status: StatusCode) -> Self {
        Self {
            status,
            reason: None,
            content_type: None,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    fn json(status: StatusCode, body: &Value) -> Self {
        Self {
            content_type: Some("application/json; charset=UTF-8"),
            body: Bytes::from(body.to_string()),
            ..Self::empty(status)
        }
    }

    fn text(status: StatusCode, body: &'static str) -> Self {
        Self {
            content_type: Some("text/plain; charset=utf-8"),
            body: Bytes::from_static(body.as_bytes()),
            ..Self::empty(status)
        }
    }

    /// Sets the reason recorded for this answer.
    fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Adds `retry-after` when `secs` is set.
    fn retry_after(self, secs: Option<u64>) -> Self {
        match secs {
            Some(secs) => self.header(hyper::header::RETRY_AFTER, HeaderValue::from(secs)),
            None => self,
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(self.body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        if let Some(content_type) = self.content_type {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        for (name, value) in self.headers {
            headers.append(name, value);
        }
        response
    }
}

/// Why a body could not be read.
#[derive(Debug, PartialEq, Eq)]
enum BodyError {
    TooLarge,
    Broken,
}

/// Reads a request body of at most `limit` bytes.
async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Broken),
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// Seconds since the Unix epoch.
fn now_s() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}

/// Random bytes for ids; unique (not random) should the OS source fail.
fn random_bytes<const N: usize>() -> [u8; N] {
    static FALLBACK: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0u8; N];
    if getrandom::fill(&mut bytes).is_err() {
        let seed = FALLBACK.fetch_add(1, Ordering::Relaxed) ^ now_ms().rotate_left(20);
        for (byte, seed_byte) in bytes.iter_mut().zip(seed.to_le_bytes().iter().cycle()) {
            *byte = *seed_byte;
        }
    }
    bytes
}

/// `N` random bytes as lowercase hex.
fn random_hex<const N: usize>() -> String {
    hex(&random_bytes::<N>())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A random version-4 UUID, lowercase, hyphenated.
fn uuid_v4() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
