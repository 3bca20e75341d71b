//! The APNs client: token-based authentication over HTTP/2.

use std::fmt;
use std::time::Duration;

use protocol::UnixMillis;
use protocol::push::Job;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::json;

use super::auth::{ApnsAuth, parse_retry_after, read_capped, transport_reason};
use super::{Endpoint, Outcome};
use crate::config::ApnsConfig;

/// The largest payload APNs accepts for an alert.
pub const PAYLOAD_MAX: usize = 4096;

/// The largest error answer read.
const ANSWER_MAX: usize = 64 * 1024;

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(600);

/// HTTP/2 PING interval on open connections.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// One endpoint: its base URL (no trailing `/`) and its connection pool.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
}

impl Target {
    pub(crate) fn new(base: &str, timeout: Duration) -> anyhow::Result<Target> {
        Ok(Target {
            base: base.trim_end_matches('/').to_owned(),
            client: http_client(base, timeout)?,
        })
    }
}

/// A provider's endpoints: the primary and an optional secondary.
pub(crate) struct Targets {
    primary: Target,
    secondary: Option<Target>,
}

impl fmt::Debug for Targets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Targets")
            .field("primary", &self.primary.base)
            .field("secondary", &self.secondary.as_ref().map(|t| &t.base))
            .finish()
    }
}

impl Targets {
    pub(crate) fn new(
        primary: &str,
        secondary: Option<&str>,
        timeout: Duration,
    ) -> anyhow::Result<Targets> {
        Ok(Targets {
            primary: Target::new(primary, timeout)?,
            secondary: secondary.map(|s| Target::new(s, timeout)).transpose()?,
        })
    }

    pub(crate) fn has_secondary(&self) -> bool {
        self.secondary.is_some()
    }

    /// The endpoint's target, or the outcome of sending to a secondary that
    /// is not configured (a `Retry` with reason `no_secondary`).
    pub(crate) fn get(&self, endpoint: Endpoint) -> Result<&Target, Outcome> {
        match endpoint {
            Endpoint::Primary => Ok(&self.primary),
            Endpoint::Secondary => self.secondary.as_ref().ok_or_else(no_secondary),
        }
    }
}

/// A client for `base`: cleartext HTTP/2 with prior knowledge for
/// `http://` (the mock provider), TLS with ALPN for `https://`.
pub(crate) fn http_client(base: &str, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .timeout(timeout)
        .pool_idle_timeout(POOL_IDLE)
        .http2_keep_alive_interval(KEEP_ALIVE)
        .http2_keep_alive_timeout(timeout)
        .http2_keep_alive_while_idle(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("switchboard-pushd/", env!("CARGO_PKG_VERSION")));
    let builder = if base.starts_with("http://") {
        builder.http2_prior_knowledge()
    } else if base.starts_with("https://") {
        builder
    } else {
        anyhow::bail!("endpoint {base:?} is neither http:// nor https://");
    };
    builder
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build an HTTP client for {base}: {e}"))
}

/// A provider's reason string made safe as a metrics label: at most 64 of
/// `[A-Za-z0-9_.-]`; `None` if nothing is left.
pub(crate) fn reason_label(s: &str) -> Option<String> {
    let label: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .take(64)
        .collect();
    (!label.is_empty()).then_some(label)
}

/// The outcome of a request that got no answer.
pub(crate) fn transport_outcome(e: &reqwest::Error) -> Outcome {
    Outcome::Retry {
        reason: transport_reason(e).to_owned(),
        retry_after: None,
        endpoint_fault: true,
    }
}

/// The outcome of a send to a secondary endpoint that is not configured.
pub(crate) fn no_secondary() -> Outcome {
    Outcome::Retry {
        reason: "no_secondary".to_owned(),
        retry_after: None,
        endpoint_fault: true,
    }
}

/// An APNs client: the provider key and a connection pool per endpoint.
pub struct Apns {
    auth: ApnsAuth,
    topic: HeaderValue,
    targets: Targets,
}

impl fmt::Debug for Apns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Apns")
            .field("auth", &self.auth)
            .field("topic", &self.topic)
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

impl Apns {
    /// Loads the key and builds a client per endpoint.
    pub fn new(cfg: &ApnsConfig) -> anyhow::Result<Apns> {
        let topic = HeaderValue::from_str(&cfg.topic)
            .ok()
            .filter(|_| !cfg.topic.is_empty())
            .ok_or_else(|| anyhow::anyhow!("apns.topic {:?} is not a bundle id", cfg.topic))?;
        Ok(Apns {
            auth: ApnsAuth::new(cfg)?,
            topic,
            targets: Targets::new(&cfg.primary, cfg.secondary.as_deref(), cfg.timeout)?,
        })
    }

    /// Whether a secondary endpoint is configured.
    pub fn has_secondary(&self) -> bool {
        self.targets.has_secondary()
    }

    /// The provider-token source (for tests and diagnostics).
    pub fn auth(&self) -> &ApnsAuth {
        &self.auth
    }

    /// Sends `job` once to `endpoint`; the notification expires at
    /// `expires`. A send to an unconfigured secondary is a `Retry` with
    /// reason `no_secondary`.
    pub async fn send(&self, endpoint: Endpoint, job: &Job, expires: UnixMillis) -> Outcome {
        let target = match self.targets.get(endpoint) {
            Ok(t) => t,
            Err(outcome) => return outcome,
        };
        if !token_is_sendable(&job.token) {
            return Outcome::InvalidToken {
                reason: "BadDeviceToken".to_owned(),
            };
        }
        let Ok(jwt) = self.auth.bearer() else {
            return Outcome::AuthRejected {
                reason: "signing".to_owned(),
            };
        };
        let sent = target
            .client
            .post(format!("{}/3/device/{}", target.base, job.token))
            .headers(request_headers(&self.topic, &jwt, job, expires))
            .body(payload(job))
            .send()
            .await;
        let outcome = match sent {
            Ok(resp) => answer(resp).await,
            Err(e) => transport_outcome(&e),
        };
        if let Outcome::Retry { reason, .. } = &outcome {
            tracing::debug!(job = job.id, %reason, ?endpoint, "apns send failed");
        }
        if matches!(outcome, Outcome::AuthRejected { .. }) {
            self.auth.invalidate_if_current(&jwt);
        }
        outcome
    }
}

/// Reads and classifies an answer.
async fn answer(resp: reqwest::Response) -> Outcome {
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let apns_id = header("apns-id");
    let retry_after = header("retry-after");
    match read_capped(resp, ANSWER_MAX).await {
        Ok(body) => classify(status, apns_id.as_deref(), retry_after.as_deref(), &body),
        Err(e) => transport_outcome(&e),
    }
}

/// Whether `token` can go in the request path as it is: non-empty, only
/// URL-unreserved characters, not a dot segment. APNs tokens are hex.
fn token_is_sendable(token: &str) -> bool {
    !token.is_empty()
        && token.bytes().any(|b| b != b'.')
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The notification's title: "New message" or "N new messages".
pub(crate) fn title(job: &Job) -> String {
    if job.count > 1 {
        format!("{} new messages", job.count)
    } else {
        "New message".to_owned()
    }
}

/// The notification's text: the preview, or a generic line without one.
pub(crate) fn text(preview: Option<&str>) -> &str {
    preview.unwrap_or("You have a new message")
}

/// The request headers (the `authorization` value is marked sensitive).
fn request_headers(topic: &HeaderValue, jwt: &str, job: &Job, expires: UnixMillis) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut auth = HeaderValue::from_str(&format!("bearer {jwt}"))
        .expect("a JWT is base64url and dots, valid in a header");
    auth.set_sensitive(true);
    h.insert(AUTHORIZATION, auth);
    h.insert(HeaderName::from_static("apns-topic"), topic.clone());
    let fixed = [("apns-push-type", "alert"), ("apns-priority", "10")];
    for (name, value) in fixed {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    // Decimal u64s: at most 20 bytes, well under the 64 allowed.
    h.insert(
        HeaderName::from_static("apns-collapse-id"),
        HeaderValue::from(job.conv.0),
    );
    h.insert(
        HeaderName::from_static("apns-expiration"),
        HeaderValue::from(expires.0 / 1000),
    );
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h
}

/// The JSON payload.
fn request_body(job: &Job, preview: Option<&str>) -> serde_json::Value {
    let conv = job.conv.0.to_string();
    json!({
        "aps": {
            "alert": { "title": title(job), "body": text(preview) },
            "badge": job.unread,
            "sound": "default",
            "thread-id": conv,
            "mutable-content": 1,
        },
        "conv": conv,
        "seq": job.seq.0.to_string(),
        "sender": job.sender.0.to_string(),
    })
}

/// The payload bytes, within [`PAYLOAD_MAX`] (without the preview if it
/// would not fit, which a preview of at most 160 bytes never causes).
fn payload(job: &Job) -> Vec<u8> {
    let full = request_body(job, job.preview.as_deref()).to_string();
    if full.len() <= PAYLOAD_MAX {
        full.into_bytes()
    } else {
        request_body(job, None).to_string().into_bytes()
    }
}

#[derive(Deserialize)]
struct ErrorAnswer {
    reason: Option<String>,
}

/// What an APNs answer means.
fn classify(status: u16, apns_id: Option<&str>, retry_after: Option<&str>, body: &[u8]) -> Outcome {
    if (200..300).contains(&status) {
        return Outcome::Sent {
            id: apns_id.map(str::to_owned),
        };
    }
    let reason = serde_json::from_slice::<ErrorAnswer>(body)
        .ok()
        .and_then(|a| a.reason)
        .and_then(|r| reason_label(&r))
        .unwrap_or_else(|| format!("http_{status}"));
    let retry_after = retry_after.and_then(parse_retry_after);
    let retry = |reason, endpoint_fault| Outcome::Retry {
        reason,
        retry_after,
        endpoint_fault,
    };
    match (status, reason.as_str()) {
        (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => {
            Outcome::InvalidToken { reason }
        }
        (403, "ExpiredProviderToken" | "InvalidProviderToken" | "MissingProviderToken") => {
            Outcome::AuthRejected { reason }
        }
        // IdleTimeout: APNs closed an idle connection under us.
        (429, _) | (400, "IdleTimeout") => retry(reason, false),
        (400..=499, _) => Outcome::Rejected { reason },
        // 5xx, and anything unexpected (1xx, 3xx).
        _ => retry(reason, true),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use protocol::{ConvId, DeviceId, Platform, Seq, UserId};

    pub(crate) fn job() -> Job {
        Job {
            id: 1,
            user: UserId(2),
            device: DeviceId(3),
            platform: Platform::Apns,
            token: "a1b2c3d4".repeat(8),
            conv: ConvId(18_446_744_073_709_551_615),
            seq: Seq(42),
            sender: UserId(7),
            preview: Some("hello there".into()),
            unread: 5,
            count: 1,
            created: UnixMillis(1_700_000_000_000),
        }
    }

    #[test]
    fn the_body_has_the_alert_and_the_ids_as_strings() {
        let mut j = job();
        let body = request_body(&j, j.preview.as_deref());
        assert_eq!(
            body,
            json!({
                "aps": {
                    "alert": {"title": "New message", "body": "hello there"},
                    "badge": 5, "sound": "default",
                    "thread-id": "18446744073709551615", "mutable-content": 1,
                },
                "conv": "18446744073709551615", "seq": "42", "sender": "7",
            })
        );
        j.count = 3;
        j.preview = None;
        let v: serde_json::Value = serde_json::from_slice(&payload(&j)).unwrap();
        assert_eq!(v["aps"]["alert"]["title"], "3 new messages");
        assert_eq!(v["aps"]["alert"]["body"], "You have a new message");
        j.preview = Some("é".repeat(protocol::push::PREVIEW_MAX / 2));
        j.unread = u32::MAX;
        assert!(payload(&j).len() <= PAYLOAD_MAX);
    }

    #[test]
    fn the_headers_are_apples() {
        let topic = HeaderValue::from_static("com.example.app");
        let h = request_headers(&topic, "eyJ.x.y", &job(), UnixMillis(1_700_000_123_999));
        let get = |n: &str| h.get(n).unwrap().to_str().unwrap().to_owned();
        assert_eq!(get("authorization"), "bearer eyJ.x.y");
        assert!(h.get("authorization").unwrap().is_sensitive());
        assert_eq!(get("apns-topic"), "com.example.app");
        assert_eq!(get("apns-push-type"), "alert");
        assert_eq!(get("apns-priority"), "10");
        assert_eq!(get("apns-collapse-id"), "18446744073709551615");
        assert_eq!(get("apns-expiration"), "1700000123");
        assert!(!format!("{h:?}").contains("eyJ"));
    }

    #[test]
    fn odd_tokens_are_refused_before_sending() {
        assert!(token_is_sendable(&job().token));
        for bad in ["", ".", "..", "a/b", "a?b", "a b", "a%2e"] {
            assert!(!token_is_sendable(bad), "{bad:?}");
        }
    }

    fn retry(reason: &str, secs: Option<u64>, fault: bool) -> Outcome {
        Outcome::Retry {
            reason: reason.into(),
            retry_after: secs.map(Duration::from_secs),
            endpoint_fault: fault,
        }
    }

    fn r(reason: &str) -> Vec<u8> {
        format!(r#"{{"reason":"{reason}"}}"#).into_bytes()
    }

    #[test]
    fn successes_carry_the_apns_id() {
        let sent = classify(200, Some("abc-123"), None, b"");
        assert_eq!(
            sent,
            Outcome::Sent {
                id: Some("abc-123".into())
            }
        );
        assert_eq!(classify(200, None, None, b""), Outcome::Sent { id: None });
    }

    #[test]
    fn dead_tokens_and_refused_credentials_are_classified() {
        let inv = |s: &str| Outcome::InvalidToken { reason: s.into() };
        let gone = br#"{"reason":"Unregistered","timestamp":1700000000000}"#;
        assert_eq!(classify(410, None, None, gone), inv("Unregistered"));
        assert_eq!(
            classify(410, None, None, &r("ExpiredToken")),
            inv("ExpiredToken")
        );
        assert_eq!(classify(410, None, None, b""), inv("http_410"));
        for reason in ["BadDeviceToken", "DeviceTokenNotForTopic"] {
            assert_eq!(classify(400, None, None, &r(reason)), inv(reason));
        }
        for reason in [
            "ExpiredProviderToken",
            "InvalidProviderToken",
            "MissingProviderToken",
        ] {
            let auth = Outcome::AuthRejected {
                reason: reason.into(),
            };
            assert_eq!(classify(403, None, None, &r(reason)), auth);
        }
    }

    #[test]
    fn bad_requests_are_rejected() {
        let rej = |s: &str| Outcome::Rejected { reason: s.into() };
        let cases = [
            (400, "PayloadEmpty"),
            (400, "MissingTopic"),
            (400, "TopicDisallowed"),
            (400, "BadCollapseId"),
            (413, "PayloadTooLarge"),
            (403, "BadCertificate"),
            (404, "BadPath"),
        ];
        for (status, reason) in cases {
            assert_eq!(classify(status, None, None, &r(reason)), rej(reason));
        }
        assert_eq!(classify(405, None, None, b"not json"), rej("http_405"));
        let odd = classify(400, None, None, br#"{"reason":"a b\"c{}"}"#);
        assert_eq!(odd, rej("abc"), "reasons are made label-safe");
    }

    #[test]
    fn throttling_and_failures_are_retried() {
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        let cases = [
            (
                429,
                Some("7"),
                r("TooManyRequests"),
                retry("TooManyRequests", Some(7), false),
            ),
            (
                400,
                None,
                r("IdleTimeout"),
                retry("IdleTimeout", None, false),
            ),
            (
                500,
                None,
                r("InternalServerError"),
                retry("InternalServerError", None, true),
            ),
            (
                503,
                Some("30"),
                r("ServiceUnavailable"),
                retry("ServiceUnavailable", Some(30), true),
            ),
            (
                503,
                Some(date),
                r("Shutdown"),
                retry("Shutdown", None, true),
            ),
            (502, None, b"<html>".to_vec(), retry("http_502", None, true)),
            (302, None, Vec::new(), retry("http_302", None, true)),
        ];
        for (status, retry_after, body, expected) in cases {
            assert_eq!(
                classify(status, None, retry_after, &body),
                expected,
                "{status}"
            );
        }
    }

    pub(crate) fn apns_config(primary: &str, secondary: Option<&str>) -> ApnsConfig {
        ApnsConfig {
            key_file: super::super::auth::tests::fixture("AuthKey_TESTKEY123.p8"),
            key_id: "TESTKEY123".into(),
            team_id: "TEAM123456".into(),
            topic: "com.example.switchboard".into(),
            primary: primary.into(),
            secondary: secondary.map(str::to_owned),
            concurrency: 4,
            timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn construction_checks_endpoints_and_topic() {
        let a = Apns::new(&apns_config("http://127.0.0.1:1/", None)).unwrap();
        assert!(!a.has_secondary());
        assert_eq!(
            a.targets.get(Endpoint::Primary).expect("configured").base,
            "http://127.0.0.1:1"
        );
        let d = format!("{a:?}");
        assert!(d.contains("TESTKEY123") && !d.contains("PRIVATE"), "{d}");
        let b = Apns::new(&apns_config(
            "https://a.example",
            Some("https://b.example:2197"),
        ));
        assert!(b.unwrap().has_secondary());
        assert!(Apns::new(&apns_config("ftp://x", None)).is_err());
        let mut bad = apns_config("http://x", None);
        bad.topic = "a\nb".into();
        assert!(Apns::new(&bad).is_err());
    }

    #[tokio::test]
    async fn sends_over_cleartext_http2_and_classifies() {
        use super::super::fcm::tests::{Seen, provider_server};
        let (base, seen) = provider_server(|req: &Seen| {
            if req.path.ends_with("/gone") {
                (410, vec![], r#"{"reason":"Unregistered"}"#.into())
            } else if req.repeat {
                (403, vec![], r#"{"reason":"ExpiredProviderToken"}"#.into())
            } else {
                (200, vec![("apns-id", "id-1")], String::new())
            }
        })
        .await;
        let apns = Apns::new(&apns_config(&base, None)).unwrap();
        let j = job();
        let sent = apns
            .send(Endpoint::Primary, &j, UnixMillis(1_700_000_060_000))
            .await;
        assert_eq!(
            sent,
            Outcome::Sent {
                id: Some("id-1".into())
            }
        );
        {
            let seen = seen.lock().unwrap();
            let r = &seen[0];
            assert_eq!(r.path, format!("/3/device/{}", j.token));
            assert_eq!(r.version, "HTTP/2.0");
            assert_eq!(r.header("apns-topic"), "com.example.switchboard");
            assert_eq!(r.header("apns-expiration"), "1700000060");
            assert!(r.header("authorization").starts_with("bearer ey"));
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(body["aps"]["badge"], 5);
        }
        let mut gone = job();
        gone.token = "gone".into();
        let inv = apns.send(Endpoint::Primary, &gone, UnixMillis(0)).await;
        assert_eq!(
            inv,
            Outcome::InvalidToken {
                reason: "Unregistered".into()
            }
        );
        // The same token again: refused; the client drops it.
        tokio::time::sleep(Duration::from_millis(1100)).await; // a new iat second
        let first_jwt = apns.auth().bearer().unwrap();
        let refused = apns.send(Endpoint::Primary, &j, UnixMillis(0)).await;
        assert!(
            matches!(refused, Outcome::AuthRejected { .. }),
            "{refused:?}"
        );
        assert_ne!(apns.auth().bearer().unwrap(), first_jwt);
        assert_eq!(
            apns.send(Endpoint::Secondary, &j, UnixMillis(0)).await,
            no_secondary()
        );
    }

    #[tokio::test]
    async fn transport_errors_are_endpoint_faults() {
        let apns = Apns::new(&apns_config("http://127.0.0.1:1", None)).unwrap();
        let got = apns.send(Endpoint::Primary, &job(), UnixMillis(0)).await;
        assert_eq!(got, retry("connect", None, true));
        // A server that accepts and never answers: timeout.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                held.push(listener.accept().await.unwrap());
            }
        });
        let mut cfg = apns_config(&format!("http://{addr}"), None);
        cfg.timeout = Duration::from_millis(300);
        let apns = Apns::new(&cfg).unwrap();
        let got = apns.send(Endpoint::Primary, &job(), UnixMillis(0)).await;
        assert_eq!(got, retry("timeout", None, true));
        hold.abort();
    }
}
