//! The fault state, the recording and the control API:
//!
//! - `POST /control/fault` `{"status", "retry_after_s", "remaining",
//!   "latency_ms", "invalid_tokens", "provider"}` replaces the fault state
//!   (absent or null fields: none, 0, both services);
//! - `POST /control/reset` clears the faults, the recording and the stats;
//! - `GET /control/received` lists the provider requests in arrival order;
//! - `GET /control/stats` counts them.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    Answer, BodyError, MAX_CONTROL_BODY, Mock, MockArgs, Seen, Service, is_fault_status, read_body,
};

/// Requests kept for `/control/received`; later ones are only counted.
const MAX_RECORDS: usize = 1_000_000;

/// An injected status, as taken for one request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fault {
    pub(super) status: StatusCode,
    pub(super) retry_after_s: Option<u64>,
}

/// What to do wrong, and to which service.
#[derive(Debug, Default)]
pub(super) struct Faults {
    status: Option<StatusCode>,
    retry_after_s: Option<u64>,
    /// Requests left to fault before `status` clears; `None`: until changed.
    remaining: Option<u64>,
    latency: Duration,
    invalid_tokens: HashSet<String>,
    /// `None`: APNs and FCM (not the token endpoint).
    service: Option<Service>,
}

impl Faults {
    /// The startup fault state from the `--fault-*` flags.
    pub(super) fn from_args(args: &MockArgs) -> anyhow::Result<Self> {
        let update = FaultUpdate {
            status: args.fault_status,
            retry_after_s: args.retry_after,
            remaining: args.fault_remaining,
            latency_ms: Some(args.latency_ms),
            invalid_tokens: Some(args.invalid_tokens.clone()),
            provider: args.fault_provider,
        };
        update.into_faults().map_err(|e| anyhow::anyhow!(e))
    }

    fn applies_to(&self, service: Service) -> bool {
        match self.service {
            Some(only) => only == service,
            None => service != Service::Oauth,
        }
    }
}

/// The body of `POST /control/fault`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultUpdate {
    status: Option<u16>,
    retry_after_s: Option<u64>,
    remaining: Option<u64>,
    latency_ms: Option<u64>,
    invalid_tokens: Option<Vec<String>>,
    provider: Option<Service>,
}

impl FaultUpdate {
    fn into_faults(self) -> Result<Faults, String> {
        let status = match self.status {
            None => None,
            Some(code) if is_fault_status(code) => {
                Some(StatusCode::from_u16(code).map_err(|e| format!("status {code}: {e}"))?)
            }
            Some(code) => return Err(format!("only 429 and 5xx can be injected, not {code}")),
        };
        Ok(Faults {
            status,
            retry_after_s: self.retry_after_s,
            remaining: self.remaining,
            latency: Duration::from_millis(self.latency_ms.unwrap_or(0)),
            invalid_tokens: self
                .invalid_tokens
                .unwrap_or_default()
                .into_iter()
                .collect(),
            service: self.provider,
        })
    }
}

/// One recorded provider request, as `/control/received` lists it.
#[derive(Debug, Serialize)]
struct Record {
    provider: &'static str,
    path: String,
    token: Option<String>,
    status: u16,
    reason: Option<String>,
    headers: BTreeMap<String, String>,
    body: Option<Value>,
    at_ms: u64,
}

/// The recording and its counters.
#[derive(Debug, Default)]
struct Log {
    records: Vec<Record>,
    requests: u64,
    accepted: u64,
    by_status: BTreeMap<u16, u64>,
    dropped_records: u64,
}

/// Faults and recording, shared by all connections.
#[derive(Debug)]
pub(super) struct Control {
    faults: Mutex<Faults>,
    log: Mutex<Log>,
}

/// Locks `mutex`, ignoring poisoning: every critical section here leaves the
/// state consistent at each step, so a panic elsewhere cannot corrupt it.
pub(super) fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Control {
    pub(super) fn new(faults: Faults) -> Self {
        Self {
            faults: Mutex::new(faults),
            log: Mutex::new(Log::default()),
        }
    }

    /// The injected latency for a request to `service`.
    pub(super) fn latency(&self, service: Service) -> Duration {
        let faults = lock_ignoring_poison(&self.faults);
        if faults.applies_to(service) {
            faults.latency
        } else {
            Duration::ZERO
        }
    }

    /// The injected status for this request to `service`, if any; counts it
    /// against `remaining`.
    pub(super) fn take_fault(&self, service: Service) -> Option<Fault> {
        let mut faults = lock_ignoring_poison(&self.faults);
        if !faults.applies_to(service) {
            return None;
        }
        let status = faults.status?;
        match faults.remaining {
            Some(0) => {
                faults.status = None;
                return None;
            }
            Some(n) => {
                faults.remaining = Some(n - 1);
                if n == 1 {
                    faults.status = None;
                }
            }
            None => {}
        }
        Some(Fault {
            status,
            retry_after_s: faults.retry_after_s,
        })
    }

    /// Whether `token` is to be reported as unregistered.
    pub(super) fn is_invalid(&self, token: &str) -> bool {
        lock_ignoring_poison(&self.faults)
            .invalid_tokens
            .contains(token)
    }

    /// Records a provider request and its answer.
    pub(super) fn record(&self, seen: Seen, answer: &Answer) {
        let status = answer.status.as_u16();
        let mut log = lock_ignoring_poison(&self.log);
        log.requests += 1;
        if answer.status == StatusCode::OK {
            log.accepted += 1;
        }
        *log.by_status.entry(status).or_insert(0) += 1;
        if log.records.len() >= MAX_RECORDS {
            log.dropped_records += 1;
            return;
        }
        log.records.push(Record {
            provider: seen.service.name(),
            path: seen.path,
            token: seen.token,
            status,
            reason: answer.reason.clone(),
            headers: seen.headers,
            body: seen.body,
            at_ms: seen.at_ms,
        });
    }

    fn replace_faults(&self, faults: Faults) {
        *lock_ignoring_poison(&self.faults) = faults;
    }

    fn reset(&self) {
        *lock_ignoring_poison(&self.faults) = Faults::default();
        *lock_ignoring_poison(&self.log) = Log::default();
    }

    fn received(&self) -> Answer {
        let log = lock_ignoring_poison(&self.log);
        match serde_json::to_vec(&log.records) {
            Ok(body) => Answer {
                content_type: Some("application/json"),
                body: body.into(),
                ..Answer::empty(StatusCode::OK)
            },
            Err(e) => Answer::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "serialising the recording failed",
            )
            .reason(e.to_string()),
        }
    }

    fn stats(&self) -> Answer {
        let log = lock_ignoring_poison(&self.log);
        let by_status: BTreeMap<String, u64> = log
            .by_status
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        Answer::json(
            StatusCode::OK,
            &json!({
                "requests": log.requests,
                "accepted": log.accepted,
                "by_status": by_status,
                "dropped_records": log.dropped_records,
            }),
        )
    }
}

/// Serves `/control/*`.
pub(super) async fn handle(mock: &Mock, req: Request<Incoming>) -> Answer {
    let control = &mock.control;
    let is_post = req.method() == Method::POST;
    let is_get = req.method() == Method::GET;
    match req.uri().path() {
        "/control/fault" if is_post => set_faults(control, req).await,
        "/control/reset" if is_post => {
            control.reset();
            Answer::json(StatusCode::OK, &json!({"ok": true}))
        }
        "/control/received" if is_get => control.received(),
        "/control/stats" if is_get => control.stats(),
        "/control/fault" | "/control/reset" | "/control/received" | "/control/stats" => {
            Answer::json(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "method not allowed"}),
            )
        }
        _ => Answer::json(
            StatusCode::NOT_FOUND,
            &json!({"error": "no such control endpoint"}),
        ),
    }
}

async fn set_faults(control: &Control, req: Request<Incoming>) -> Answer {
    let body = match read_body(req.into_body(), MAX_CONTROL_BODY).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return bad(StatusCode::PAYLOAD_TOO_LARGE, "fault state too large");
        }
        Err(BodyError::Broken) => return bad(StatusCode::BAD_REQUEST, "body could not be read"),
    };
    let update: FaultUpdate = match serde_json::from_slice(&body) {
        Ok(update) => update,
        Err(e) => return bad(StatusCode::BAD_REQUEST, &format!("bad fault state: {e}")),
    };
    match update.into_faults() {
        Ok(faults) => {
            control.replace_faults(faults);
            Answer::json(StatusCode::OK, &json!({"ok": true}))
        }
        Err(e) => bad(StatusCode::BAD_REQUEST, &e),
    }
}

fn bad(status: StatusCode, error: &str) -> Answer {
    Answer::json(status, &json!({"ok": false, "error": error}))
}
