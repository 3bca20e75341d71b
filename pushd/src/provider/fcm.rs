//! The FCM client: the HTTP v1 API with service-account OAuth 2.0.

use std::fmt;

use protocol::UnixMillis;
use protocol::push::Job;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use serde_json::json;

use super::apns::{Targets, http_client, reason_label, text, title, transport_outcome};
use super::auth::{AuthError, FcmAuth, form_encode, parse_retry_after, read_capped};
use super::{Endpoint, Outcome};
use crate::config::FcmConfig;

/// The largest answer read.
const ANSWER_MAX: usize = 64 * 1024;

/// An FCM client: the service account, a connection pool per endpoint and
/// one for the token endpoint.
pub struct Fcm {
    auth: FcmAuth,
    token_client: reqwest::Client,
    targets: Targets,
}

impl fmt::Debug for Fcm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fcm")
            .field("auth", &self.auth)
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

impl Fcm {
    /// Loads the service account and builds the clients.
    pub fn new(cfg: &FcmConfig) -> anyhow::Result<Fcm> {
        let auth = FcmAuth::new(cfg)?;
        Ok(Fcm {
            token_client: http_client(auth.token_uri(), cfg.timeout)?,
            auth,
            targets: Targets::new(&cfg.primary, cfg.secondary.as_deref(), cfg.timeout)?,
        })
    }

    /// Whether a secondary endpoint is configured.
    pub fn has_secondary(&self) -> bool {
        self.targets.has_secondary()
    }

    /// The credential source (for tests and diagnostics).
    pub fn auth(&self) -> &FcmAuth {
        &self.auth
    }

    /// Sends `job` once to `endpoint`; the message's TTL runs to `expires`.
    /// A send to an unconfigured secondary is a `Retry` with reason
    /// `no_secondary`; a failure to get an access token is a `Retry`
    /// (token endpoint down or throttling) or `AuthRejected` (grant refused).
    pub async fn send(&self, endpoint: Endpoint, job: &Job, expires: UnixMillis) -> Outcome {
        let target = match self.targets.get(endpoint) {
            Ok(t) => t,
            Err(outcome) => return outcome,
        };
        let token = match self.auth.access_token(&self.token_client).await {
            Ok(t) => t,
            Err(e) => return auth_failure(e),
        };
        let Ok(mut bearer) = HeaderValue::from_str(&format!("Bearer {token}")) else {
            self.auth.invalidate_if_current(&token);
            return Outcome::AuthRejected {
                reason: "bad_access_token".to_owned(),
            };
        };
        bearer.set_sensitive(true);
        let url = format!(
            "{}/v1/projects/{}/messages:send",
            target.base,
            form_encode(self.auth.project_id())
        );
        let sent = target
            .client
            .post(url)
            .header(AUTHORIZATION, bearer)
            .header(CONTENT_TYPE, "application/json")
            .body(request_body(job, expires, UnixMillis::now()).to_string())
            .send()
            .await;
        let outcome = match sent {
            Ok(resp) => answer(resp).await,
            Err(e) => transport_outcome(&e),
        };
        if let Outcome::Retry { reason, .. } = &outcome {
            tracing::debug!(job = job.id, %reason, ?endpoint, "fcm send failed");
        }
        if matches!(outcome, Outcome::AuthRejected { .. }) {
            self.auth.invalidate_if_current(&token);
        }
        outcome
    }
}

/// The outcome of a failure to get an access token.
fn auth_failure(e: AuthError) -> Outcome {
    tracing::debug!(error = %e, "fcm access token unavailable");
    match e {
        AuthError::Unavailable { reason } => Outcome::Retry {
            reason,
            retry_after: None,
            endpoint_fault: true,
        },
        AuthError::Throttled { retry_after } => Outcome::Retry {
            reason: "token_throttled".to_owned(),
            retry_after,
            endpoint_fault: false,
        },
        AuthError::Refused { error, .. } => Outcome::AuthRejected {
            reason: reason_label(&error).unwrap_or_else(|| "token_refused".to_owned()),
        },
        AuthError::Signing => Outcome::AuthRejected {
            reason: "signing".to_owned(),
        },
    }
}

/// Reads and classifies an answer.
async fn answer(resp: reqwest::Response) -> Outcome {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match read_capped(resp, ANSWER_MAX).await {
        Ok(body) => classify(status, retry_after.as_deref(), &body),
        Err(e) => transport_outcome(&e),
    }
}

/// The `messages:send` request body; `now` fixes the TTL.
fn request_body(job: &Job, expires: UnixMillis, now: UnixMillis) -> serde_json::Value {
    let conv = job.conv.0.to_string();
    let ttl = expires.0.saturating_sub(now.0) / 1000;
    let title = title(job);
    let body = text(job.preview.as_deref());
    json!({
        "message": {
            "token": job.token,
            "notification": { "title": title, "body": body },
            "data": {
                "conv": conv,
                "seq": job.seq.0.to_string(),
                "sender": job.sender.0.to_string(),
                "count": job.count.to_string(),
            },
            "android": {
                "collapse_key": conv,
                "priority": "HIGH",
                "ttl": format!("{ttl}s"),
                "notification": { "notification_count": job.unread, "tag": conv },
            },
            "apns": { "headers": { "apns-collapse-id": conv } },
        }
    })
}

#[derive(Deserialize)]
struct SentAnswer {
    name: Option<String>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: ErrorStatus,
}

#[derive(Deserialize)]
struct ErrorStatus {
    #[serde(default)]
    message: String,
    status: Option<String>,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "errorCode")]
    error_code: Option<String>,
}

/// What an FCM answer means.
fn classify(status: u16, retry_after: Option<&str>, body: &[u8]) -> Outcome {
    if (200..300).contains(&status) {
        let id = serde_json::from_slice::<SentAnswer>(body)
            .ok()
            .and_then(|a| a.name);
        return Outcome::Sent { id };
    }
    let error = serde_json::from_slice::<ErrorAnswer>(body)
        .ok()
        .map(|a| a.error);
    let code = error
        .as_ref()
        .and_then(|e| e.details.iter().find_map(|d| d.error_code.as_deref()))
        .and_then(reason_label);
    let reason = code
        .clone()
        .or_else(|| {
            error
                .as_ref()
                .and_then(|e| e.status.as_deref())
                .and_then(reason_label)
        })
        .unwrap_or_else(|| format!("http_{status}"));
    // "The registration token is not a valid FCM registration token".
    let names_token = error.as_ref().is_some_and(|e| {
        e.message
            .to_ascii_lowercase()
            .contains("registration token")
    });
    let retry_after = retry_after.and_then(parse_retry_after);
    let retry = |reason, endpoint_fault| Outcome::Retry {
        reason,
        retry_after,
        endpoint_fault,
    };
    match (status, code.as_deref()) {
        (_, Some("UNREGISTERED" | "SENDER_ID_MISMATCH")) => Outcome::InvalidToken { reason },
        (400, _) if names_token => Outcome::InvalidToken { reason },
        (401, _) => Outcome::AuthRejected { reason },
        (429, _) => retry(reason, false),
        (400..=499, _) => Outcome::Rejected { reason },
        // 5xx, and anything unexpected (1xx, 3xx).
        _ => retry(reason, true),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use protocol::{ConvId, DeviceId, Platform, Seq, UserId};

    fn job() -> Job {
        Job {
            id: 1,
            user: UserId(2),
            device: DeviceId(3),
            platform: Platform::Fcm,
            token: "fcm:tok_en-1".into(),
            conv: ConvId(99),
            seq: Seq(42),
            sender: UserId(7),
            preview: None,
            unread: 12,
            count: 4,
            created: UnixMillis(1_700_000_000_000),
        }
    }

    #[test]
    fn the_body_is_fcm_v1() {
        let body = request_body(
            &job(),
            UnixMillis(1_700_000_090_500),
            UnixMillis(1_700_000_000_000),
        );
        assert_eq!(
            body,
            json!({"message": {
                "token": "fcm:tok_en-1",
                "notification": {"title": "4 new messages", "body": "You have a new message"},
                "data": {"conv": "99", "seq": "42", "sender": "7", "count": "4"},
                "android": {
                    "collapse_key": "99", "priority": "HIGH", "ttl": "90s",
                    "notification": {"notification_count": 12, "tag": "99"},
                },
                "apns": {"headers": {"apns-collapse-id": "99"}},
            }})
        );
        let late = request_body(&job(), UnixMillis(5), UnixMillis(10));
        assert_eq!(late["message"]["android"]["ttl"], "0s");
    }

    fn error(code: u16, status: &str, message: &str, error_code: Option<&str>) -> Vec<u8> {
        let details = error_code.map_or_else(Vec::new, |c| {
            vec![json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": c})]
        });
        json!({"error": {"code": code, "message": message, "status": status, "details": details}})
            .to_string()
            .into_bytes()
    }

    fn retry(reason: &str, secs: Option<u64>, fault: bool) -> Outcome {
        Outcome::Retry {
            reason: reason.into(),
            retry_after: secs.map(Duration::from_secs),
            endpoint_fault: fault,
        }
    }

    #[test]
    fn successes_carry_the_message_name() {
        let ok = br#"{"name":"projects/p/messages/0:123"}"#;
        let name = Some("projects/p/messages/0:123".to_owned());
        assert_eq!(classify(200, None, ok), Outcome::Sent { id: name });
        assert_eq!(classify(200, None, b""), Outcome::Sent { id: None });
    }

    #[test]
    fn dead_tokens_are_invalid() {
        let inv = |s: &str| Outcome::InvalidToken { reason: s.into() };
        let not_valid = "The registration token is not a valid FCM registration token";
        let cases = [
            (
                404,
                "NOT_FOUND",
                "Requested entity was not found.",
                Some("UNREGISTERED"),
            ),
            (400, "INVALID_ARGUMENT", not_valid, Some("INVALID_ARGUMENT")),
            (
                400,
                "INVALID_ARGUMENT",
                "The registration token is not valid",
                None,
            ),
            (
                403,
                "PERMISSION_DENIED",
                "SenderId mismatch",
                Some("SENDER_ID_MISMATCH"),
            ),
        ];
        for (code, status, message, error_code) in cases {
            let body = error(code, status, message, error_code);
            let reason = error_code.unwrap_or(status);
            assert_eq!(classify(code, None, &body), inv(reason), "{message}");
        }
    }

    #[test]
    fn refusals_are_rejected_or_auth_rejected() {
        let rej = |s: &str| Outcome::Rejected { reason: s.into() };
        let payload = "Invalid value at 'message.data[0].value'";
        let bad_payload = error(400, "INVALID_ARGUMENT", payload, Some("INVALID_ARGUMENT"));
        assert_eq!(classify(400, None, &bad_payload), rej("INVALID_ARGUMENT"));
        let denied = error(403, "PERMISSION_DENIED", "Permission denied", None);
        assert_eq!(classify(403, None, &denied), rej("PERMISSION_DENIED"));
        assert_eq!(classify(404, None, b""), rej("http_404"));
        assert_eq!(classify(413, None, b"{}"), rej("http_413"));
        let auth = |s: &str| Outcome::AuthRejected { reason: s.into() };
        let unauth = error(401, "UNAUTHENTICATED", "invalid credentials", None);
        assert_eq!(classify(401, None, &unauth), auth("UNAUTHENTICATED"));
        let third = error(
            401,
            "UNAUTHENTICATED",
            "APNs",
            Some("THIRD_PARTY_AUTH_ERROR"),
        );
        assert_eq!(classify(401, None, &third), auth("THIRD_PARTY_AUTH_ERROR"));
    }

    #[test]
    fn throttling_and_failures_are_retried() {
        let quota = error(429, "RESOURCE_EXHAUSTED", "Quota", Some("QUOTA_EXCEEDED"));
        let exhausted = error(429, "RESOURCE_EXHAUSTED", "x", None);
        let internal = error(500, "INTERNAL", "Internal error", Some("INTERNAL"));
        let unavailable = error(503, "UNAVAILABLE", "unavailable", Some("UNAVAILABLE"));
        let cases = [
            (
                429,
                Some("12"),
                quota,
                retry("QUOTA_EXCEEDED", Some(12), false),
            ),
            (
                429,
                None,
                exhausted,
                retry("RESOURCE_EXHAUSTED", None, false),
            ),
            (500, None, internal, retry("INTERNAL", None, true)),
            (
                503,
                Some("5"),
                unavailable,
                retry("UNAVAILABLE", Some(5), true),
            ),
            (502, None, b"<html>".to_vec(), retry("http_502", None, true)),
        ];
        for (status, retry_after, body, expected) in cases {
            assert_eq!(classify(status, retry_after, &body), expected, "{status}");
        }
    }

    #[test]
    fn token_failures_map_to_outcomes() {
        let down = AuthError::Unavailable {
            reason: "token_http_503".into(),
        };
        assert_eq!(auth_failure(down), retry("token_http_503", None, true));
        let slow = AuthError::Throttled {
            retry_after: Some(Duration::from_secs(2)),
        };
        assert_eq!(auth_failure(slow), retry("token_throttled", Some(2), false));
        let refused = AuthError::Refused {
            status: 400,
            error: "invalid_grant".into(),
        };
        assert_eq!(
            auth_failure(refused),
            Outcome::AuthRejected {
                reason: "invalid_grant".into()
            }
        );
    }

    /// One request as a test provider saw it.
    #[derive(Debug, Clone)]
    pub(crate) struct Seen {
        pub(crate) path: String,
        pub(crate) version: String,
        pub(crate) headers: Vec<(String, String)>,
        pub(crate) body: Vec<u8>,
        /// Whether a request to the same path came before.
        pub(crate) repeat: bool,
    }

    impl Seen {
        pub(crate) fn header(&self, name: &str) -> &str {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map_or_else(|| panic!("no {name} header"), |(_, v)| v.as_str())
        }
    }

    type Answer = (u16, Vec<(&'static str, &'static str)>, String);

    /// A cleartext HTTP/2 (or HTTP/1.1) server on loopback that records
    /// requests and answers with `respond`.
    pub(crate) async fn provider_server<F>(respond: F) -> (String, Arc<Mutex<Vec<Seen>>>)
    where
        F: Fn(&Seen) -> Answer + Send + Sync + 'static,
    {
        use http_body_util::{BodyExt, Full};
        use hyper::body::Bytes;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
        let (log, respond) = (seen.clone(), Arc::new(respond));
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (log, respond) = (log.clone(), respond.clone());
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (log, respond) = (log.clone(), respond.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes().to_vec();
                            let path = parts.uri.path().to_owned();
                            let mut log = log.lock().unwrap();
                            let repeat = log.iter().any(|s| s.path == path);
                            let headers = parts
                                .headers
                                .iter()
                                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
                                .collect();
                            let version = format!("{:?}", parts.version);
                            let s = Seen {
                                path,
                                version,
                                headers,
                                body,
                                repeat,
                            };
                            let (status, headers, answer) = respond(&s);
                            log.push(s);
                            let mut resp = hyper::Response::builder().status(status);
                            for (n, v) in headers {
                                resp = resp.header(n, v);
                            }
                            let resp = resp.body(Full::new(Bytes::from(answer))).unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    },
                );
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
                });
            }
        });
        (format!("http://{addr}"), seen)
    }

    #[tokio::test]
    async fn sends_with_an_access_token_and_refetches_after_401() {
        let (token_uri, hits) = super::super::auth::tests::token_server(false).await;
        let (base, seen) = provider_server(|req: &Seen| {
            if req.header("authorization") == "Bearer tok-1" {
                (
                    200,
                    vec![],
                    r#"{"name":"projects/switchboard-test/messages/1"}"#.into(),
                )
            } else {
                (
                    401,
                    vec![],
                    String::from_utf8(error(401, "UNAUTHENTICATED", "bad", None)).unwrap(),
                )
            }
        })
        .await;
        let mut cfg = super::super::auth::tests::fcm_config(Some(token_uri));
        cfg.primary = base;
        let fcm = Fcm::new(&cfg).unwrap();
        let expires = UnixMillis(UnixMillis::now().0 + 60_000);
        let sent = fcm.send(Endpoint::Primary, &job(), expires).await;
        assert_eq!(
            sent,
            Outcome::Sent {
                id: Some("projects/switchboard-test/messages/1".into())
            }
        );
        {
            let seen = seen.lock().unwrap();
            assert_eq!(seen[0].path, "/v1/projects/switchboard-test/messages:send");
            assert_eq!(seen[0].version, "HTTP/2.0");
            let body: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
            assert_eq!(body["message"]["token"], "fcm:tok_en-1");
        }
        // The cached token is used again; force a refusal by dropping it and
        // having the server hand out tok-2, which the provider refuses.
        fcm.auth().invalidate();
        let refused = fcm.send(Endpoint::Primary, &job(), expires).await;
        assert_eq!(
            refused,
            Outcome::AuthRejected {
                reason: "UNAUTHENTICATED".into()
            }
        );
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
        // The refused token was dropped: the next send fetches tok-3.
        let _ = fcm.send(Endpoint::Primary, &job(), expires).await;
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(
            fcm.send(Endpoint::Secondary, &job(), expires).await,
            super::super::apns::no_secondary()
        );
    }

    #[tokio::test]
    async fn a_refused_grant_is_auth_rejected_and_a_dead_token_endpoint_a_retry() {
        let (token_uri, _) = super::super::auth::tests::token_server(true).await;
        let mut cfg = super::super::auth::tests::fcm_config(Some(token_uri));
        cfg.primary = "http://127.0.0.1:1".into();
        let fcm = Fcm::new(&cfg).unwrap();
        let got = fcm.send(Endpoint::Primary, &job(), UnixMillis(0)).await;
        assert_eq!(
            got,
            Outcome::AuthRejected {
                reason: "invalid_grant".into()
            }
        );
        let dead = Fcm::new(&super::super::auth::tests::fcm_config(None)).unwrap();
        let got = dead.send(Endpoint::Primary, &job(), UnixMillis(0)).await;
        assert_eq!(got, retry("token_connect", None, true));
    }
}
