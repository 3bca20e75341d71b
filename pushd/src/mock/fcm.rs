//! FCM HTTP v1 (`POST /v1/projects/{project}/messages:send`) and Google's
//! OAuth 2 token endpoint (`POST /token`, the JWT-bearer grant), answered
//! with Google's status codes and error bodies.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context as _;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, StatusCode};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rsa::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _, LineEnding};
use serde_json::{Map, Value, json};

use super::control::{Fault, lock_ignoring_poison};
use super::{Answer, BodyError, MAX_BODY, Mock, Seen, now_ms, now_s, random_hex, read_body};

/// Largest FCM request body accepted (FCM's limit is 4096 bytes of message).
const MAX_MESSAGE: usize = 4096;
/// Access tokens remembered; past it, expired ones go, then the oldest.
const MAX_ACCESS_TOKENS: usize = 65_536;
/// Longest assertion lifetime Google accepts (`exp - iat`).
const MAX_ASSERTION_LIFETIME_S: i64 = 3600;
/// How far in the future an assertion's `iat` may be.
const CLOCK_SKEW_S: i64 = 60;
/// The only grant type the token endpoint knows.
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The scope FCM sends need.
const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const BAD_SIGNATURE: &str = "Invalid JWT Signature.";
const BAD_TIMEFRAME: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a \
     reasonable timeframe. Check your iat and exp values in the JWT claim.";
const UNAUTHENTICATED: &str = "Request had invalid authentication credentials. Expected OAuth 2 access \
     token, login cookie or other valid authentication credential.";
const BAD_TOKEN: &str = "The registration token is not a valid FCM registration token";
/// Keys FCM knows in `message`.
const MESSAGE_FIELDS: [&str; 11] = [
    "name",
    "data",
    "notification",
    "android",
    "webpush",
    "apns",
    "fcm_options",
    "fcmOptions",
    "token",
    "topic",
    "condition",
];

/// The service account whose assertions are accepted.
#[derive(Debug)]
pub(super) struct FcmAuth {
    key: DecodingKey,
    client_email: String,
    project_id: String,
    key_id: Option<String>,
}

#[derive(serde::Deserialize)]
struct ServiceAccount {
    private_key: String,
    client_email: String,
    project_id: String,
    private_key_id: Option<String>,
}

/// An OAuth 2 assertion's claims.
#[derive(serde::Deserialize)]
struct Assertion {
    iss: String,
    scope: String,
    aud: String,
    iat: i64,
    exp: i64,
}

impl FcmAuth {
    /// Loads a service-account JSON and derives its RSA public key.
    pub(super) fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let account: ServiceAccount = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a service account", path.display()))?;
        let private = rsa::PrivateKey::from_pkcs8_pem(&account.private_key).map_err(|e| {
            anyhow::anyhow!("{}: private_key is not PKCS#8 RSA: {e}", path.display())
        })?;
        let public = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("encoding the service account's public key: {e}"))?;
        let key =
            DecodingKey::from_rsa_pem(public.as_bytes()).context("loading the RSA public key")?;
        Ok(Self {
            key,
            client_email: account.client_email,
            project_id: account.project_id,
            key_id: account.private_key_id,
        })
    }

    /// Checks an assertion; `Err` is the OAuth 2 `(error, error_description)`.
    fn check(&self, jwt: &str, now: i64) -> Result<(), (&'static str, &'static str)> {
        let grant = |description| ("invalid_grant", description);
        let header = jsonwebtoken::decode_header(jwt).map_err(|_| grant(BAD_SIGNATURE))?;
        if header.alg != Algorithm::RS256 {
            return Err(grant(BAD_SIGNATURE));
        }
        if let (Some(kid), Some(expected)) = (&header.kid, &self.key_id)
            && kid != expected
        {
            return Err(grant(BAD_SIGNATURE));
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let claims = match jsonwebtoken::decode::<Assertion>(jwt, &self.key, &validation) {
            Ok(data) => data.claims,
            Err(e) if matches!(e.kind(), ErrorKind::Json(_)) => {
                return Err(grant(
                    "Invalid JWT: iss, scope, aud, iat and exp are required.",
                ));
            }
            Err(_) => return Err(grant(BAD_SIGNATURE)),
        };
        if claims.iss != self.client_email {
            return Err(grant("Invalid email or User ID"));
        }
        if !claims.aud.ends_with("/token") {
            return Err(grant("Invalid JWT: Failed audience check."));
        }
        if claims.exp <= now
            || claims.exp <= claims.iat
            || claims.exp - claims.iat > MAX_ASSERTION_LIFETIME_S
            || claims.iat - now > CLOCK_SKEW_S
        {
            return Err(grant(BAD_TIMEFRAME));
        }
        if !claims.scope.split_whitespace().any(|s| s == FCM_SCOPE) {
            return Err((
                "invalid_scope",
                "Invalid OAuth scope or ID token audience provided.",
            ));
        }
        Ok(())
    }
}

/// Issued access tokens and their expiry (unix ms).
#[derive(Debug, Default)]
pub(super) struct AccessTokens {
    tokens: Mutex<HashMap<String, u64>>,
}

impl AccessTokens {
    /// Issues a token valid for `ttl_s` seconds.
    fn issue(&self, ttl_s: u64) -> String {
        let token = format!("ya29.mock-{}", random_hex::<24>());
        let now = now_ms();
        let expiry = now.saturating_add(ttl_s.saturating_mul(1000));
        let mut tokens = lock_ignoring_poison(&self.tokens);
        if tokens.len() >= MAX_ACCESS_TOKENS {
            tokens.retain(|_, &mut expiry| expiry > now);
        }
        if tokens.len() >= MAX_ACCESS_TOKENS
            && let Some(oldest) = tokens
                .iter()
                .min_by_key(|(_, e)| **e)
                .map(|(t, _)| t.clone())
        {
            tokens.remove(&oldest);
        }
        tokens.insert(token.clone(), expiry);
        token
    }

    /// Whether `token` was issued and has not expired (forgets it if so).
    fn is_valid(&self, token: &str) -> bool {
        let mut tokens = lock_ignoring_poison(&self.tokens);
        match tokens.get(token) {
            Some(&expiry) if expiry > now_ms() => true,
            Some(_) => {
                tokens.remove(token);
                false
            }
            None => false,
        }
    }
}

/// The project of a `/v1/projects/{project}/messages:send` path.
pub(super) fn project_of(path: &str) -> Option<&str> {
    let project = path
        .strip_prefix("/v1/projects/")?
        .strip_suffix("/messages:send")?;
    (!project.is_empty() && !project.contains('/')).then_some(project)
}

/// A Google API error body; `error_code` adds the `FcmError` detail.
pub(super) fn error(
    status: StatusCode,
    grpc: &str,
    message: &str,
    error_code: Option<&str>,
) -> Answer {
    let mut error = json!({"code": status.as_u16(), "message": message, "status": grpc});
    if let Some(code) = error_code {
        error["details"] = json!([{
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": code,
        }]);
    }
    Answer::json(status, &json!({ "error": error })).reason(error_code.unwrap_or(grpc))
}

fn invalid_argument(message: &str) -> Answer {
    error(
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        message,
        Some("INVALID_ARGUMENT"),
    )
}

/// An OAuth 2 error body.
pub(super) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Answer {
    Answer::json(
        status,
        &json!({"error": error, "error_description": description}),
    )
    .reason(error)
}

/// The answer of FCM sends to an injected status fault.
pub(super) fn send_fault(fault: &Fault) -> Answer {
    let (grpc, code, message) = match fault.status.as_u16() {
        429 => (
            "RESOURCE_EXHAUSTED",
            "QUOTA_EXCEEDED",
            "Quota exceeded for quota metric 'Send requests'.",
        ),
        503 => (
            "UNAVAILABLE",
            "UNAVAILABLE",
            "The service is currently unavailable.",
        ),
        _ => ("INTERNAL", "INTERNAL", "Internal error encountered."),
    };
    error(fault.status, grpc, message, Some(code)).retry_after(fault.retry_after_s)
}

/// The answer of the token endpoint to an injected status fault.
pub(super) fn token_fault(fault: &Fault) -> Answer {
    let error = match fault.status.as_u16() {
        429 => "rate_limit_exceeded",
        503 => "temporarily_unavailable",
        _ => "internal_failure",
    };
    oauth_error(fault.status, error, "Injected fault.").retry_after(fault.retry_after_s)
}

/// Serves a routed `POST /token` (method and faults checked).
pub(super) async fn handle_token(mock: &Mock, req: Request<Incoming>, seen: &mut Seen) -> Answer {
    let bad_request = |error, description| oauth_error(StatusCode::BAD_REQUEST, error, description);
    let is_form = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .starts_with("application/x-www-form-urlencoded")
        });
    let body = match read_body(req.into_body(), MAX_BODY).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => return bad_request("invalid_request", "Request too large."),
        Err(BodyError::Broken) => {
            return bad_request("invalid_request", "Request body could not be read.");
        }
    };
    let Some(form) = form_decode(&body) else {
        return bad_request("invalid_request", "Malformed form body.");
    };
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let grant_type = field("grant_type").unwrap_or_default();
    let assertion = field("assertion");
    // Record the claims, never the signed assertion itself (a credential).
    let claims = assertion
        .and_then(|jwt| jsonwebtoken::dangerous::insecure_decode_claims::<Value>(jwt).ok());
    seen.body = Some(json!({"grant_type": grant_type, "claims": claims}));
    if !is_form {
        return bad_request(
            "invalid_request",
            "Content-Type must be application/x-www-form-urlencoded.",
        );
    }
    if grant_type != JWT_BEARER {
        let description = format!("Invalid grant_type: {grant_type}");
        return bad_request("unsupported_grant_type", &description);
    }
    let Some(assertion) = assertion else {
        return bad_request("invalid_request", "Missing required parameter: assertion");
    };
    let Some(auth) = &mock.fcm else {
        return bad_request("invalid_grant", BAD_SIGNATURE);
    };
    if let Err((error, description)) = auth.check(assertion, now_s()) {
        return bad_request(error, description);
    }
    let token = mock.access_tokens.issue(mock.token_ttl_s);
    let body =
        json!({"access_token": token, "expires_in": mock.token_ttl_s, "token_type": "Bearer"});
    Answer::json(StatusCode::OK, &body)
}

/// Serves a routed `POST /v1/projects/{project}/messages:send`.
pub(super) async fn handle_send(mock: &Mock, req: Request<Incoming>, seen: &mut Seen) -> Answer {
    let (parts, body) = req.into_parts();
    let project = project_of(parts.uri.path()).unwrap_or_default();
    let body = match read_body(body, MAX_BODY).await {
        Ok(body) if body.len() <= MAX_MESSAGE => body,
        Ok(_) | Err(BodyError::TooLarge) => return invalid_argument("Message is too big"),
        Err(BodyError::Broken) => return invalid_argument("Request body could not be read."),
    };
    seen.body = serde_json::from_slice(&body).ok();
    let message = seen.body.as_ref().and_then(|b| b.get("message"));
    seen.token = message
        .and_then(|m| m.get("token"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let access_token = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    if !access_token.is_some_and(|t| mock.access_tokens.is_valid(t)) {
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            UNAUTHENTICATED,
            None,
        );
    }
    if mock
        .fcm
        .as_ref()
        .is_none_or(|auth| auth.project_id != project)
    {
        let message = format!("Permission denied on resource project {project}.");
        return error(StatusCode::FORBIDDEN, "PERMISSION_DENIED", &message, None);
    }
    let validate_only = match check_request(seen.body.as_ref()) {
        Ok(validate_only) => validate_only,
        Err(answer) => return answer,
    };
    if let Some(token) = &seen.token {
        if token.is_empty() || token.chars().any(char::is_whitespace) {
            return invalid_argument(BAD_TOKEN);
        }
        if mock.control.is_invalid(token) {
            let message = "Requested entity was not found.";
            return error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                message,
                Some("UNREGISTERED"),
            );
        }
    }
    let id = if validate_only {
        "fake_message_id".to_owned()
    } else {
        format!("0:{}%{}", now_ms(), random_hex::<8>())
    };
    Answer::json(
        StatusCode::OK,
        &json!({"name": format!("projects/{project}/messages/{id}")}),
    )
}

/// Checks a send request's shape; `Ok` is `validate_only`.
fn check_request(body: Option<&Value>) -> Result<bool, Answer> {
    let Some(Value::Object(root)) = body else {
        return Err(invalid_argument("Invalid JSON payload received."));
    };
    if let Some(unknown) = root
        .keys()
        .find(|k| !matches!(k.as_str(), "message" | "validate_only" | "validateOnly"))
    {
        return Err(invalid_argument(&format!(
            "Invalid JSON payload received. Unknown name \"{unknown}\": Cannot find field."
        )));
    }
    let validate_only = match root
        .get("validate_only")
        .or_else(|| root.get("validateOnly"))
    {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(invalid_argument(
                "Invalid value at 'validate_only' (TYPE_BOOL).",
            ));
        }
    };
    let Some(Value::Object(message)) = root.get("message") else {
        return Err(invalid_argument(
            "Request is missing required field: message.",
        ));
    };
    check_message(message)?;
    Ok(validate_only)
}

/// Checks `message`: known fields, one target, string data.
fn check_message(message: &Map<String, Value>) -> Result<(), Answer> {
    if let Some(unknown) = message
        .keys()
        .find(|k| !MESSAGE_FIELDS.contains(&k.as_str()))
    {
        return Err(invalid_argument(&format!(
            "Invalid JSON payload received. Unknown name \"{unknown}\" at 'message': Cannot find field."
        )));
    }
    let mut targets = 0;
    for target in ["token", "topic", "condition"] {
        match message.get(target) {
            None | Some(Value::Null) => {}
            Some(Value::String(_)) => targets += 1,
            Some(_) => {
                return Err(invalid_argument(&format!(
                    "Invalid value at 'message.{target}' (TYPE_STRING)."
                )));
            }
        }
    }
    if targets != 1 {
        return Err(invalid_argument(
            "Exactly one of message.token, message.topic or message.condition must be set.",
        ));
    }
    match message.get("data") {
        None | Some(Value::Null) => {}
        Some(Value::Object(data)) if data.values().all(Value::is_string) => {}
        Some(_) => {
            return Err(invalid_argument(
                "Invalid value at 'message.data': values must be strings (TYPE_STRING).",
            ));
        }
    }
    for object in ["notification", "android", "webpush", "apns"] {
        if message
            .get(object)
            .is_some_and(|v| !v.is_object() && !v.is_null())
        {
            return Err(invalid_argument(&format!(
                "Invalid value at 'message.{object}': not an object."
            )));
        }
    }
    Ok(())
}

/// Decodes an `application/x-www-form-urlencoded` body; `None` if malformed.
pub(super) fn form_decode(body: &[u8]) -> Option<Vec<(String, String)>> {
    body.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let mut halves = pair.splitn(2, |&b| b == b'=');
            let key = percent_decode(halves.next().unwrap_or_default())?;
            let value = percent_decode(halves.next().unwrap_or_default())?;
            Some((key, value))
        })
        .collect()
}

/// Decodes `+` and `%XX`; `None` on a bad escape or invalid UTF-8.
fn percent_decode(input: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(input.len());
    let mut bytes = input.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = char::from(*bytes.next()?).to_digit(16)?;
                let lo = char::from(*bytes.next()?).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}
