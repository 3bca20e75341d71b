//! Provider credentials: APNs provider tokens (ES256 JWTs) and FCM OAuth 2.0
//! access tokens, each cached and refreshed.
//!
//! Key material, JWTs and access tokens never appear in `Debug` output, logs
//! or error messages; errors name the file, never its content.

use std::fmt::{self, Write as _};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::config::{ApnsConfig, FcmConfig};

/// A cached APNs provider token is replaced once it is this old (Apple
/// accepts a token for an hour and refuses refreshes more often than every
/// 20 minutes).
pub const APNS_TOKEN_REFRESH: Duration = Duration::from_secs(50 * 60);

/// The OAuth 2.0 scope FCM's HTTP v1 API needs.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// Lifetime asked for in the FCM assertion (Google's maximum).
const FCM_ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);

/// A cached FCM access token is refreshed this long before it expires.
const FCM_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// An access token's lifetime is taken as at most this, whatever the
/// endpoint says.
const TOKEN_LIFETIME_MAX: Duration = Duration::from_secs(24 * 3600);

/// The largest token-endpoint answer read.
const TOKEN_ANSWER_MAX: usize = 64 * 1024;

/// Why a credential could not be had.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token endpoint could not be reached or failed (connection error,
    /// timeout, 5xx, an unreadable answer). `reason` is a short label.
    #[error("token endpoint unavailable: {reason}")]
    Unavailable { reason: String },
    /// The token endpoint throttled us (429).
    #[error("token endpoint throttled the request")]
    Throttled { retry_after: Option<Duration> },
    /// The token endpoint refused the grant; `error` is its OAuth 2.0 `error`
    /// (`invalid_grant`, `invalid_client`, …) or `http_<status>`.
    #[error("token endpoint refused the grant ({status}): {error}")]
    Refused { status: u16, error: String },
    /// The JWT could not be signed (a key the signer does not accept).
    #[error("cannot sign the token")]
    Signing,
}

/// Seconds since the Unix epoch, wall clock.
fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Locks `m`, recovering from poisoning: the guarded caches stay consistent
/// whatever a panicking holder did (each write is one assignment).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Serialize, Deserialize)]
struct ApnsClaims {
    iss: String,
    iat: u64,
}

/// APNs token-based authentication: a `.p8` key that signs provider tokens.
pub struct ApnsAuth {
    key: EncodingKey,
    key_id: String,
    team_id: String,
    /// The current provider token and when it was made.
    cache: Mutex<Option<(String, Instant)>>,
}

impl fmt::Debug for ApnsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApnsAuth")
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .finish_non_exhaustive()
    }
}

impl ApnsAuth {
    /// Loads the key named by `cfg.key_file` (PKCS#8 PEM, P-256) and checks
    /// that it signs.
    pub fn new(cfg: &ApnsConfig) -> anyhow::Result<ApnsAuth> {
        ApnsAuth::from_file(&cfg.key_file, &cfg.key_id, &cfg.team_id)
    }

    /// As [`ApnsAuth::new`], from the parts.
    pub fn from_file(path: &Path, key_id: &str, team_id: &str) -> anyhow::Result<ApnsAuth> {
        use p256::pkcs8::DecodePrivateKey;
        let bad = || anyhow::anyhow!("{}: not a PKCS#8 PEM P-256 private key", path.display());
        let pem = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read APNs key {}: {e}", path.display()))?;
        p256::SecretKey::from_pkcs8_pem(&pem).map_err(|_| bad())?;
        let key = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|_| bad())?;
        let auth = ApnsAuth {
            key,
            key_id: key_id.to_owned(),
            team_id: team_id.to_owned(),
            cache: Mutex::new(None),
        };
        auth.sign()
            .map_err(|_| anyhow::anyhow!("{}: the key does not sign ES256", path.display()))?;
        Ok(auth)
    }

    /// The key id (`kid`).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The current provider token (an ES256 JWT), made anew when the cached
    /// one is older than [`APNS_TOKEN_REFRESH`] or was invalidated.
    pub fn bearer(&self) -> Result<String, AuthError> {
        self.bearer_at(Instant::now())
    }

    fn bearer_at(&self, now: Instant) -> Result<String, AuthError> {
        let mut cache = lock(&self.cache);
        if let Some((token, made)) = cache.as_ref()
            && now.saturating_duration_since(*made) < APNS_TOKEN_REFRESH
        {
            return Ok(token.clone());
        }
        let token = self.sign()?;
        *cache = Some((token.clone(), now));
        Ok(token)
    }

    fn sign(&self) -> Result<String, AuthError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let claims = ApnsClaims {
            iss: self.team_id.clone(),
            iat: unix_secs(),
        };
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|_| AuthError::Signing)
    }

    /// Drops the cached token (APNs refused it); the next
    /// [`bearer`](ApnsAuth::bearer) makes a new one.
    pub fn invalidate(&self) {
        *lock(&self.cache) = None;
    }

    /// Drops the cached token only if it is still `token`, so that many
    /// refusals of one token cause one refresh, not one each.
    pub fn invalidate_if_current(&self, token: &str) {
        let mut cache = lock(&self.cache);
        if cache.as_ref().is_some_and(|(t, _)| t == token) {
            *cache = None;
        }
    }
}

/// The fields of a Google service-account key file pushd uses.
#[derive(Deserialize)]
struct ServiceAccount {
    client_email: String,
    private_key: String,
    private_key_id: String,
    project_id: String,
    token_uri: String,
}

#[derive(Serialize, Deserialize)]
struct FcmClaims {
    iss: String,
    scope: String,
    aud: String,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct TokenRefusal {
    error: Option<String>,
}

struct CachedToken {
    token: String,
    /// When to fetch a new one (some minutes before it expires).
    refresh_at: Instant,
}

/// FCM service-account authentication: signs OAuth 2.0 assertions and trades
/// them for access tokens at the token endpoint.
pub struct FcmAuth {
    key: EncodingKey,
    client_email: String,
    key_id: String,
    project_id: String,
    token_uri: String,
    cache: Mutex<Option<CachedToken>>,
    /// Held while fetching, so that one fetch runs at a time.
    refresh: tokio::sync::Mutex<()>,
}

impl fmt::Debug for FcmAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FcmAuth")
            .field("client_email", &self.client_email)
            .field("project_id", &self.project_id)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl FcmAuth {
    /// Loads `cfg.service_account_file`, applying the `project_id` and
    /// `token_uri` overrides, and checks that its key signs.
    pub fn new(cfg: &FcmConfig) -> anyhow::Result<FcmAuth> {
        let path = &cfg.service_account_file;
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("cannot read FCM service account {}: {e}", path.display())
        })?;
        // serde_json's message names the field and position, never a value.
        let sa: ServiceAccount = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not a service-account key: {e}", path.display()))?;
        let bad = || anyhow::anyhow!("{}: private_key is not an RSA PEM key", path.display());
        {
            use rsa::pkcs8::DecodePrivateKey;
            rsa::PrivateKey::from_pkcs8_pem(&sa.private_key).map_err(|_| bad())?;
        }
        let key = EncodingKey::from_rsa_pem(sa.private_key.as_bytes()).map_err(|_| bad())?;
        let auth = FcmAuth {
            key,
            client_email: sa.client_email,
            key_id: sa.private_key_id,
            project_id: cfg.project_id.clone().unwrap_or(sa.project_id),
            token_uri: cfg.token_uri.clone().unwrap_or(sa.token_uri),
            cache: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
        };
        auth.assertion()
            .map_err(|_| anyhow::anyhow!("{}: the key does not sign RS256", path.display()))?;
        Ok(auth)
    }

    /// The Firebase project messages are sent for.
    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// Where access tokens come from.
    pub fn token_uri(&self) -> &str {
        &self.token_uri
    }

    /// The signed OAuth 2.0 JWT-bearer assertion (RS256).
    fn assertion(&self) -> Result<String, AuthError> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.key_id.clone());
        let iat = unix_secs();
        let claims = FcmClaims {
            iss: self.client_email.clone(),
            scope: FCM_SCOPE.to_owned(),
            aud: self.token_uri.clone(),
            iat,
            exp: iat + FCM_ASSERTION_LIFETIME.as_secs(),
        };
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|_| AuthError::Signing)
    }

    /// A cached access token, fetched from the token endpoint when there is
    /// none or it expires within five minutes. One fetch runs at a time;
    /// concurrent callers wait for it.
    pub async fn access_token(&self, client: &reqwest::Client) -> Result<String, AuthError> {
        if let Some(token) = self.cached(Instant::now()) {
            return Ok(token);
        }
        let _fetching = self.refresh.lock().await;
        // Another caller may have fetched while this one waited.
        if let Some(token) = self.cached(Instant::now()) {
            return Ok(token);
        }
        let (token, lifetime) = self.fetch(client).await?;
        let margin = FCM_REFRESH_MARGIN.min(lifetime / 2);
        *lock(&self.cache) = Some(CachedToken {
            token: token.clone(),
            refresh_at: Instant::now() + lifetime.saturating_sub(margin),
        });
        Ok(token)
    }

    fn cached(&self, now: Instant) -> Option<String> {
        lock(&self.cache)
            .as_ref()
            .filter(|c| now < c.refresh_at)
            .map(|c| c.token.clone())
    }

    /// One exchange of a fresh assertion for an access token and its lifetime.
    async fn fetch(&self, client: &reqwest::Client) -> Result<(String, Duration), AuthError> {
        let body = format!(
            "grant_type={}&assertion={}",
            form_encode("urn:ietf:params:oauth:grant-type:jwt-bearer"),
            form_encode(&self.assertion()?)
        );
        let resp = client
            .post(&self.token_uri)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| AuthError::Unavailable {
                reason: format!("token_{}", transport_reason(&e)),
            })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body =
            read_capped(resp, TOKEN_ANSWER_MAX)
                .await
                .map_err(|e| AuthError::Unavailable {
                    reason: format!("token_{}", transport_reason(&e)),
                })?;
        token_answer(status, retry_after, &body)
    }

    /// Drops the cached access token (FCM refused it).
    pub fn invalidate(&self) {
        *lock(&self.cache) = None;
    }

    /// Drops the cached access token only if it is still `token`.
    pub fn invalidate_if_current(&self, token: &str) {
        let mut cache = lock(&self.cache);
        if cache.as_ref().is_some_and(|c| c.token == token) {
            *cache = None;
        }
    }
}

/// Interprets the token endpoint's answer.
fn token_answer(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<(String, Duration), AuthError> {
    match status {
        200..=299 => {
            let answer: TokenAnswer =
                serde_json::from_slice(body).map_err(|_| AuthError::Unavailable {
                    reason: "token_bad_answer".into(),
                })?;
            if answer.access_token.is_empty() || answer.expires_in == 0 {
                return Err(AuthError::Unavailable {
                    reason: "token_bad_answer".into(),
                });
            }
            let lifetime = Duration::from_secs(answer.expires_in).min(TOKEN_LIFETIME_MAX);
            Ok((answer.access_token, lifetime))
        }
        429 => Err(AuthError::Throttled { retry_after }),
        400..=499 => {
            let error = serde_json::from_slice::<TokenRefusal>(body)
                .ok()
                .and_then(|r| r.error)
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| format!("http_{status}"));
            Err(AuthError::Refused { status, error })
        }
        _ => Err(AuthError::Unavailable {
            reason: format!("token_http_{status}"),
        }),
    }
}

/// `s` percent-encoded for an `application/x-www-form-urlencoded` value:
/// everything but RFC 3986's unreserved characters is escaped.
pub(crate) fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A short label for a failed request: `timeout`, `connect` or `transport`.
pub(crate) fn transport_reason(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    }
}

/// A `Retry-After` value as delta-seconds; anything else (an HTTP-date,
/// garbage) is ignored.
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Reads at most `max` bytes of the response body (the rest is dropped).
pub(crate) async fn read_capped(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = max - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= max {
            break;
        }
    }
    Ok(body)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use jsonwebtoken::{DecodingKey, Validation};

    pub(crate) fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    fn apns() -> ApnsAuth {
        ApnsAuth::from_file(
            &fixture("AuthKey_TESTKEY123.p8"),
            "TESTKEY123",
            "TEAM123456",
        )
        .expect("fixture key loads")
    }

    #[test]
    fn apns_token_verifies_with_the_public_key() {
        use p256::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
        let pem = std::fs::read_to_string(fixture("AuthKey_TESTKEY123.p8")).unwrap();
        let public = p256::SecretKey::from_pkcs8_pem(&pem)
            .unwrap()
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let token = apns().bearer().unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.validate_exp = false;
        v.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<ApnsClaims>(
            &token,
            &DecodingKey::from_ec_pem(public.as_bytes()).unwrap(),
            &v,
        )
        .expect("verifies");
        assert_eq!(data.header.kid.as_deref(), Some("TESTKEY123"));
        assert_eq!(data.header.alg, Algorithm::ES256);
        assert_eq!(data.claims.iss, "TEAM123456");
        assert!(data.claims.iat.abs_diff(unix_secs()) < 5);
    }

    #[test]
    fn apns_token_is_reused_then_regenerated() {
        let auth = apns();
        let t0 = Instant::now();
        let a = auth.bearer_at(t0).unwrap();
        // iat has one-second resolution: wait so a new token differs.
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(
            auth.bearer_at(t0 + Duration::from_secs(49 * 60)).unwrap(),
            a
        );
        let b = auth.bearer_at(t0 + APNS_TOKEN_REFRESH).unwrap();
        assert_ne!(b, a, "regenerated after 50 minutes");
        assert_eq!(auth.bearer_at(t0 + APNS_TOKEN_REFRESH).unwrap(), b);
        auth.invalidate_if_current(&a); // stale: keeps b
        assert_eq!(auth.bearer_at(t0 + APNS_TOKEN_REFRESH).unwrap(), b);
        std::thread::sleep(Duration::from_millis(1100));
        auth.invalidate();
        assert_ne!(auth.bearer_at(t0 + APNS_TOKEN_REFRESH).unwrap(), b);
    }

    #[test]
    fn bad_key_files_name_the_file_not_the_content() {
        let missing = ApnsAuth::from_file(Path::new("/nonexistent/k.p8"), "K", "T").unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/k.p8"),
            "{missing}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.p8");
        std::fs::write(&path, "-----BEGIN PRIVATE KEY-----\nSECRETSTUFF\n").unwrap();
        let e = ApnsAuth::from_file(&path, "K", "T")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.p8") && !e.contains("SECRETSTUFF"), "{e}");
        // An RSA key is not an APNs key.
        let e = ApnsAuth::from_file(&fixture("service-account.json"), "K", "T").unwrap_err();
        assert!(e.to_string().contains("service-account.json"), "{e}");
        let debug = format!("{:?}", apns());
        assert_eq!(
            debug,
            r#"ApnsAuth { key_id: "TESTKEY123", team_id: "TEAM123456", .. }"#
        );
    }

    pub(crate) fn fcm_config(token_uri: Option<String>) -> FcmConfig {
        FcmConfig {
            service_account_file: fixture("service-account.json"),
            project_id: None,
            token_uri,
            primary: "http://127.0.0.1:1".into(),
            secondary: None,
            concurrency: 4,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn fcm_assertion_verifies_and_has_the_claims() {
        use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
        let text = std::fs::read_to_string(fixture("service-account.json")).unwrap();
        let sa: ServiceAccount = serde_json::from_str(&text).unwrap();
        let private = rsa::PrivateKey::from_pkcs8_pem(&sa.private_key).unwrap();
        let public = rsa::PublicKey::from(&private)
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let auth = FcmAuth::new(&fcm_config(Some("http://t.example/token".into()))).unwrap();
        assert_eq!(auth.project_id(), "switchboard-test");
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&["http://t.example/token"]);
        let data = jsonwebtoken::decode::<FcmClaims>(
            auth.assertion().unwrap(),
            &DecodingKey::from_rsa_pem(public.as_bytes()).unwrap(),
            &v,
        )
        .expect("verifies");
        assert_eq!(data.header.kid.as_deref(), Some(sa.private_key_id.as_str()));
        assert_eq!(data.claims.iss, sa.client_email);
        assert_eq!(data.claims.scope, FCM_SCOPE);
        assert_eq!(data.claims.aud, "http://t.example/token");
        assert_eq!(data.claims.exp, data.claims.iat + 3600);
        let debug = format!("{auth:?}");
        assert!(
            !debug.contains("PRIVATE") && debug.ends_with(".. }"),
            "{debug}"
        );
    }

    #[test]
    fn fcm_overrides_apply() {
        let mut cfg = fcm_config(None);
        cfg.project_id = Some("other".into());
        let auth = FcmAuth::new(&cfg).unwrap();
        assert_eq!(auth.project_id(), "other");
        assert_eq!(auth.token_uri(), "http://127.0.0.1:1/token");
    }

    #[test]
    fn form_encoding_escapes_reserved_characters() {
        assert_eq!(
            form_encode("urn:ietf:params:oauth:grant-type:jwt-bearer"),
            "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
        );
        assert_eq!(form_encode("a.b_c-d~e"), "a.b_c-d~e");
        assert_eq!(form_encode("a b&c=d+/é"), "a%20b%26c%3Dd%2B%2F%C3%A9");
    }

    #[test]
    fn token_answers_are_classified() {
        let ok = br#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#;
        let (t, life) = token_answer(200, None, ok).unwrap();
        assert_eq!((t.as_str(), life), ("ya29.x", Duration::from_secs(3599)));
        assert!(matches!(
            token_answer(200, None, b"nope"),
            Err(AuthError::Unavailable { .. })
        ));
        let refused = br#"{"error":"invalid_grant","error_description":"Invalid JWT"}"#;
        match token_answer(400, None, refused) {
            Err(AuthError::Refused { status: 400, error }) => assert_eq!(error, "invalid_grant"),
            other => panic!("{other:?}"),
        }
        match token_answer(401, None, b"") {
            Err(AuthError::Refused { error, .. }) => assert_eq!(error, "http_401"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            token_answer(429, Some(Duration::from_secs(3)), b""),
            Err(AuthError::Throttled { retry_after: Some(d) }) if d == Duration::from_secs(3)
        ));
        match token_answer(503, None, b"") {
            Err(AuthError::Unavailable { reason }) => assert_eq!(reason, "token_http_503"),
            other => panic!("{other:?}"),
        }
    }

    /// A cleartext HTTP/2 (and HTTP/1.1) token endpoint on loopback that
    /// counts requests and hands out `tok-<n>`; `refuse` makes it answer 400.
    pub(crate) async fn token_server(refuse: bool) -> (String, Arc<AtomicUsize>) {
        use http_body_util::{BodyExt, Full};
        use hyper::body::Bytes;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let counter = counter.clone();
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let counter = counter.clone();
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let body = String::from_utf8(body.to_vec()).unwrap();
                            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                            let good = body.starts_with(
                            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=ey",
                        );
                            let (status, answer) = if refuse || !good {
                                (400, r#"{"error":"invalid_grant"}"#.to_owned())
                            } else {
                                (
                                    200,
                                    format!(
                                        r#"{{"access_token":"tok-{n}","expires_in":3600,"token_type":"Bearer"}}"#
                                    ),
                                )
                            };
                            let resp = hyper::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(answer)))
                                .unwrap();
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
        (format!("http://{addr}/token"), hits)
    }

    #[tokio::test]
    async fn fcm_access_token_is_cached_and_refetched_after_invalidate() {
        let (uri, hits) = token_server(false).await;
        let auth = Arc::new(FcmAuth::new(&fcm_config(Some(uri))).unwrap());
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (auth, client) = (auth.clone(), client.clone());
            tasks.push(tokio::spawn(async move {
                auth.access_token(&client).await.unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), "tok-1");
        }
        assert_eq!(hits.load(Ordering::SeqCst), 1, "one fetch for many callers");
        auth.invalidate_if_current("tok-0");
        assert_eq!(auth.access_token(&client).await.unwrap(), "tok-1");
        auth.invalidate();
        assert_eq!(auth.access_token(&client).await.unwrap(), "tok-2");
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        // Close to expiry: refetched.
        lock(&auth.cache).as_mut().unwrap().refresh_at = Instant::now();
        assert_eq!(auth.access_token(&client).await.unwrap(), "tok-3");
    }

    #[tokio::test]
    async fn fcm_refusals_and_unreachable_endpoints_are_told_apart() {
        let (uri, _) = token_server(true).await;
        let auth = FcmAuth::new(&fcm_config(Some(uri))).unwrap();
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        match auth.access_token(&client).await {
            Err(AuthError::Refused { status: 400, error }) => assert_eq!(error, "invalid_grant"),
            other => panic!("{other:?}"),
        }
        let closed = FcmAuth::new(&fcm_config(None)).unwrap(); // 127.0.0.1:1
        match closed.access_token(&client).await {
            Err(AuthError::Unavailable { reason }) => assert_eq!(reason, "token_connect"),
            other => panic!("{other:?}"),
        }
    }
}
