//! APNs, `POST /3/device/{token}`: provider-token (ES256 JWT) auth, the
//! `apns-*` headers, the payload and the device token, answered with Apple's
//! status codes and `{"reason": ...}` bodies.
//!
//! Apple has no reason for a body that is not JSON or lacks the `aps`
//! dictionary; the mock answers 400 `PayloadEmpty` for both, the closest.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context as _;
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use p256::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _, LineEnding};
use serde_json::{Value, json};

use super::control::{Fault, lock_ignoring_poison};
use super::{Answer, BodyError, MAX_BODY, Mock, Seen, now_ms, now_s, read_body, uuid_v4};

/// Largest payload APNs accepts (bytes; the 5120 of `voip` is not modelled).
const MAX_PAYLOAD: usize = 4096;
/// Provider tokens older than this are expired (APNs: one hour).
const TOKEN_MAX_AGE_S: i64 = 3600;
/// How far in the future an `iat` may be (clock skew) before it is refused.
const CLOCK_SKEW_S: i64 = 60;
/// Longest `apns-collapse-id`, in bytes.
const MAX_COLLAPSE_ID: usize = 64;
/// Device tokens are hex strings this long (64 today, longer allowed).
const TOKEN_HEX_LEN: std::ops::RangeInclusive<usize> = 64..=200;
/// Verified provider tokens remembered (a client reuses one for up to an
/// hour, so this saves an ECDSA verification per request).
const VERIFIED_CACHE_MAX: usize = 1024;
/// Accepted `apns-push-type` values.
const PUSH_TYPES: [&str; 9] = [
    "alert",
    "background",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
    "pushtotalk",
    "location",
];
/// Suffixes APNs appends to the bundle id for some push types.
const TOPIC_SUFFIXES: [&str; 6] = [
    ".voip",
    ".complication",
    ".pushkit.fileprovider",
    ".push-type.liveactivity",
    ".voip-ptt",
    ".location-query",
];

/// The provider key whose tokens are accepted.
#[derive(Debug)]
pub(super) struct ApnsAuth {
    key: DecodingKey,
    key_id: Option<String>,
    team_id: Option<String>,
    /// Verified token → its `iat`.
    verified: Mutex<HashMap<String, i64>>,
}

#[derive(serde::Deserialize)]
struct Claims {
    iss: String,
    iat: i64,
}

impl ApnsAuth {
    /// Loads a `.p8` key and derives the public key that checks tokens.
    pub(super) fn load(
        path: &Path,
        key_id: Option<String>,
        team_id: Option<String>,
    ) -> anyhow::Result<Self> {
        let pem =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let secret = p256::SecretKey::from_pkcs8_pem(&pem)
            .map_err(|e| anyhow::anyhow!("{}: not a PKCS#8 P-256 key: {e}", path.display()))?;
        let public = secret
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("encoding the APNs public key: {e}"))?;
        let key =
            DecodingKey::from_ec_pem(public.as_bytes()).context("loading the APNs public key")?;
        let key_id = key_id.or_else(|| key_id_from_file_name(path));
        Ok(Self {
            key,
            key_id,
            team_id,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Checks a provider token; `Err` is the 403 reason.
    fn check(&self, jwt: &str, now: i64) -> Result<(), &'static str> {
        let cached = lock_ignoring_poison(&self.verified).get(jwt).copied();
        let iat = if let Some(iat) = cached {
            iat
        } else {
            let iat = self.verify(jwt)?;
            let mut verified = lock_ignoring_poison(&self.verified);
            if verified.len() >= VERIFIED_CACHE_MAX {
                verified.clear();
            }
            verified.insert(jwt.to_owned(), iat);
            iat
        };
        if now.saturating_sub(iat) > TOKEN_MAX_AGE_S {
            return Err("ExpiredProviderToken");
        }
        if iat.saturating_sub(now) > CLOCK_SKEW_S {
            return Err("InvalidProviderToken");
        }
        Ok(())
    }

    /// Verifies the signature, `alg`, `kid` and `iss`; returns `iat`.
    fn verify(&self, jwt: &str) -> Result<i64, &'static str> {
        const INVALID: &str = "InvalidProviderToken";
        let header = jsonwebtoken::decode_header(jwt).map_err(|_| INVALID)?;
        if header.alg != Algorithm::ES256 {
            return Err(INVALID);
        }
        if let Some(kid) = &self.key_id
            && header.kid.as_deref() != Some(kid.as_str())
        {
            return Err(INVALID);
        }
        // APNs tokens carry no `exp` and no `aud`; age is checked on `iat`.
        let mut validation = Validation::new(Algorithm::ES256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let data =
            jsonwebtoken::decode::<Claims>(jwt, &self.key, &validation).map_err(|_| INVALID)?;
        if let Some(team) = &self.team_id
            && data.claims.iss != *team
        {
            return Err(INVALID);
        }
        Ok(data.claims.iat)
    }
}

/// `KID` from a file named `AuthKey_KID.p8`, as Apple names them.
fn key_id_from_file_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let kid = name.strip_prefix("AuthKey_")?.strip_suffix(".p8")?;
    (!kid.is_empty()).then(|| kid.to_owned())
}

/// An APNs error answer: `{"reason": reason}`.
fn reject(status: StatusCode, reason: &'static str) -> Answer {
    Answer::json(status, &json!({ "reason": reason })).reason(reason)
}

/// The answer to an injected status fault.
pub(super) fn fault(fault: &Fault) -> Answer {
    let reason = match fault.status.as_u16() {
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        _ => "InternalServerError",
    };
    reject(fault.status, reason).retry_after(fault.retry_after_s)
}

/// Serves a routed `POST /3/device/{token}` (method and faults checked).
pub(super) async fn handle(mock: &Mock, req: Request<Incoming>, seen: &mut Seen) -> Answer {
    let (parts, body) = req.into_parts();
    let token = parts
        .uri
        .path()
        .strip_prefix("/3/device/")
        .unwrap_or_default()
        .to_owned();
    seen.token = Some(token.clone());
    for (name, value) in &parts.headers {
        if name.as_str().starts_with("apns-") {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            seen.headers.insert(name.as_str().to_owned(), value);
        }
    }
    let body = match read_body(body, MAX_BODY).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return reject(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge");
        }
        Err(BodyError::Broken) => return reject(StatusCode::BAD_REQUEST, "PayloadEmpty"),
    };
    seen.body = serde_json::from_slice(&body).ok();
    match validate(mock, &parts.headers, &token, &body, seen.body.as_ref()) {
        Ok(()) => accept(&parts.headers),
        Err(answer) => answer,
    }
}

/// Apple's checks, in Apple's order.
fn validate(
    mock: &Mock,
    headers: &HeaderMap,
    token: &str,
    body: &Bytes,
    json: Option<&Value>,
) -> Result<(), Answer> {
    let forbidden = |reason| reject(StatusCode::FORBIDDEN, reason);
    let bad = |reason| reject(StatusCode::BAD_REQUEST, reason);
    let jwt = match headers.get(AUTHORIZATION) {
        None => return Err(forbidden("MissingProviderToken")),
        Some(value) => bearer(value).ok_or_else(|| forbidden("InvalidProviderToken"))?,
    };
    let auth = mock
        .apns
        .as_ref()
        .ok_or_else(|| forbidden("InvalidProviderToken"))?;
    auth.check(jwt, now_s()).map_err(forbidden)?;
    check_headers(mock.apns_topic.as_deref(), headers).map_err(bad)?;
    if body.is_empty() {
        return Err(bad("PayloadEmpty"));
    }
    if body.len() > MAX_PAYLOAD {
        return Err(reject(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge"));
    }
    if !json
        .and_then(|v| v.get("aps"))
        .is_some_and(Value::is_object)
    {
        return Err(bad("PayloadEmpty"));
    }
    if !TOKEN_HEX_LEN.contains(&token.len()) || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("BadDeviceToken"));
    }
    if mock.control.is_invalid(token) {
        let answer = Answer::json(
            StatusCode::GONE,
            &json!({"reason": "Unregistered", "timestamp": now_ms()}),
        );
        return Err(answer.reason("Unregistered"));
    }
    Ok(())
}

/// The JWT of an `authorization: bearer <JWT>` header.
fn bearer(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Checks the `apns-*` headers; `Err` is the 400 reason.
fn check_headers(allowed_topic: Option<&str>, headers: &HeaderMap) -> Result<(), &'static str> {
    let text = |name: &str| headers.get(name).map(|v| v.to_str().ok());
    match text("apns-topic") {
        None => return Err("MissingTopic"),
        Some(topic) => {
            let topic = topic.ok_or("TopicDisallowed")?;
            if topic.is_empty()
                || allowed_topic.is_some_and(|allowed| !topic_matches(allowed, topic))
            {
                return Err("TopicDisallowed");
            }
        }
    }
    if let Some(push_type) = text("apns-push-type")
        && !push_type.is_some_and(|t| PUSH_TYPES.contains(&t))
    {
        return Err("InvalidPushType");
    }
    if let Some(priority) = text("apns-priority")
        && !matches!(priority, Some("10" | "5" | "1"))
    {
        return Err("BadPriority");
    }
    if headers
        .get("apns-collapse-id")
        .is_some_and(|v| v.len() > MAX_COLLAPSE_ID)
    {
        return Err("BadCollapseId");
    }
    if let Some(expiration) = text("apns-expiration")
        && expiration.is_none_or(|e| e.parse::<u64>().is_err())
    {
        return Err("BadExpirationDate");
    }
    if let Some(id) = text("apns-id")
        && !id.is_some_and(is_uuid)
    {
        return Err("BadMessageId");
    }
    Ok(())
}

/// Whether `topic` is `allowed`, bare or with a push-type suffix.
fn topic_matches(allowed: &str, topic: &str) -> bool {
    topic == allowed
        || topic
            .strip_prefix(allowed)
            .is_some_and(|suffix| TOPIC_SUFFIXES.contains(&suffix))
}

/// Whether `s` is a hyphenated UUID (8-4-4-4-12 hex digits).
pub(super) fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// 200 with the request's `apns-id`, or a new one.
fn accept(headers: &HeaderMap) -> Answer {
    let id = headers
        .get("apns-id")
        .cloned()
        .or_else(|| HeaderValue::from_str(&uuid_v4()).ok());
    let answer = Answer::empty(StatusCode::OK);
    match id {
        Some(id) => answer.header(HeaderName::from_static("apns-id"), id),
        None => answer,
    }
}
