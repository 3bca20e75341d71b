//! End-to-end tests of the mock over real loopback connections: HTTP/2 with
//! prior knowledge for the provider paths, HTTP/1.1 for the control API.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::header::HeaderMap;
use hyper::{Request, StatusCode, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::{MockArgs, MockServer, Service, fcm, spawn};

const TEAM: &str = "TEAM123456";
const KEY_ID: &str = "TESTKEY123";
const TOPIC: &str = "com.example.switchboard";
const PROJECT: &str = "switchboard-test";
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const DEVICE: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn full_args() -> MockArgs {
    MockArgs {
        apns_key: Some(fixture("AuthKey_TESTKEY123.p8")),
        apns_team_id: Some(TEAM.to_owned()),
        apns_topic: Some(TOPIC.to_owned()),
        fcm_service_account: Some(fixture("service-account.json")),
        ..MockArgs::default()
    }
}

fn now() -> i64 {
    super::now_s()
}

/// An APNs provider token signed with the fixture key.
fn apns_jwt(kid: &str, iat: i64) -> String {
    let pem = std::fs::read(fixture("AuthKey_TESTKEY123.p8")).unwrap();
    let key = EncodingKey::from_ec_pem(&pem).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &json!({"iss": TEAM, "iat": iat}), &key).unwrap()
}

/// An OAuth 2 assertion signed with the fixture service account.
fn assertion(claims: &Value) -> String {
    let account: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("service-account.json")).unwrap())
            .unwrap();
    let key =
        EncodingKey::from_rsa_pem(account["private_key"].as_str().unwrap().as_bytes()).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = account["private_key_id"].as_str().map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn good_claims(aud: &str) -> Value {
    let iat = now();
    json!({
        "iss": "pushd@switchboard-test.iam.gserviceaccount.com",
        "scope": SCOPE,
        "aud": aud,
        "iat": iat,
        "exp": iat + 3600,
    })
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
}

struct Harness {
    server: MockServer,
    h2: Client<HttpConnector, Full<Bytes>>,
    h1: Client<HttpConnector, Full<Bytes>>,
}

impl Harness {
    async fn start(args: MockArgs) -> Self {
        let server = spawn(args).await.unwrap();
        let h2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        let h1 = Client::builder(TokioExecutor::new()).build_http();
        Self { server, h2, h1 }
    }

    async fn send(&self, http2: bool, req: Request<Full<Bytes>>) -> Answer {
        let client = if http2 { &self.h2 } else { &self.h1 };
        let response = client.request(req).await.unwrap();
        assert_eq!(
            response.version(),
            if http2 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            }
        );
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            json,
        }
    }

    async fn apns(
        &self,
        device: &str,
        jwt: Option<&str>,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let mut req = Request::post(format!("{}/3/device/{device}", self.server.url()));
        for (name, value) in [("apns-topic", TOPIC), ("apns-push-type", "alert")] {
            if !headers.iter().any(|(given, _)| *given == name) {
                req = req.header(name, value);
            }
        }
        if let Some(jwt) = jwt {
            req = req.header("authorization", format!("bearer {jwt}"));
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        self.send(
            true,
            req.body(Full::new(Bytes::from(body.to_owned()))).unwrap(),
        )
        .await
    }

    async fn control(&self, method: &str, path: &str, body: &str) -> Answer {
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.server.url()))
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        self.send(false, req).await
    }

    async fn fault(&self, state: &Value) {
        let answer = self
            .control("POST", "/control/fault", &state.to_string())
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.json);
        assert_eq!(answer.json, json!({"ok": true}));
    }

    async fn token_request(&self, form: &str) -> Answer {
        let req = Request::post(format!("{}/token", self.server.url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form.to_owned())))
            .unwrap();
        self.send(true, req).await
    }

    async fn exchange(&self, claims: &Value) -> Answer {
        let form = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}",
            assertion(claims)
        );
        self.token_request(&form).await
    }

    async fn access_token(&self) -> String {
        let answer = self
            .exchange(&good_claims(&format!("{}/token", self.server.url())))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.json);
        answer.json["access_token"].as_str().unwrap().to_owned()
    }

    async fn fcm(&self, access: &str, project: &str, body: &Value) -> Answer {
        let req = Request::post(format!(
            "{}/v1/projects/{project}/messages:send",
            self.server.url()
        ))
        .header("authorization", format!("Bearer {access}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
        self.send(true, req).await
    }
}

fn alert() -> &'static str {
    r#"{"aps":{"alert":{"title":"Hi","body":"there"}}}"#
}

fn fcm_message(token: &str) -> Value {
    json!({"message": {"token": token, "notification": {"title": "Hi", "body": "there"}, "data": {"conv": "42"}}})
}

#[tokio::test]
async fn apns_accepts_a_signed_token() {
    let h = Harness::start(full_args()).await;
    let jwt = apns_jwt(KEY_ID, now());
    let answer = h
        .apns(DEVICE, Some(&jwt), &[("apns-priority", "10")], alert())
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let id = answer.headers["apns-id"].to_str().unwrap();
    assert!(super::apns::is_uuid(id), "{id}");
    assert!(answer.json.is_null());

    let given = "123e4567-e89b-12d3-a456-426614174000";
    let answer = h
        .apns(DEVICE, Some(&jwt), &[("apns-id", given)], alert())
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["apns-id"], given);

    let voip = [
        ("apns-topic", "com.example.switchboard.voip"),
        ("apns-push-type", "voip"),
    ];
    assert_eq!(
        h.apns(DEVICE, Some(&jwt), &voip, alert()).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn apns_refuses_bad_provider_tokens() {
    let h = Harness::start(full_args()).await;
    let cases = [
        (None, "MissingProviderToken"),
        (Some(apns_jwt("OTHERKEY99", now())), "InvalidProviderToken"),
        (Some(apns_jwt(KEY_ID, now() - 4000)), "ExpiredProviderToken"),
        (Some(apns_jwt(KEY_ID, now() + 600)), "InvalidProviderToken"),
        (Some("not.a.jwt".to_owned()), "InvalidProviderToken"),
    ];
    for (jwt, reason) in cases {
        let answer = h.apns(DEVICE, jwt.as_deref(), &[], alert()).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{reason}");
        assert_eq!(answer.json, json!({"reason": reason}));
    }
    // A valid token with its signature tampered with.
    let mut tampered = apns_jwt(KEY_ID, now());
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let answer = h.apns(DEVICE, Some(&tampered), &[], alert()).await;
    assert_eq!(answer.json, json!({"reason": "InvalidProviderToken"}));

    // Without a key, nothing is accepted.
    let bare = Harness::start(MockArgs::default()).await;
    let answer = bare
        .apns(DEVICE, Some(&apns_jwt(KEY_ID, now())), &[], alert())
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.json, json!({"reason": "InvalidProviderToken"}));
}

/// Device token, extra headers, body, expected status and reason.
type ShapeCase<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, u16, &'a str);

#[tokio::test]
async fn apns_checks_the_request_shape() {
    let h = Harness::start(full_args()).await;
    let jwt = apns_jwt(KEY_ID, now());
    let big = format!(r#"{{"aps":{{"alert":"{}"}}}}"#, "x".repeat(5000));
    let huge = "x".repeat(100 * 1024);
    let long_collapse = "c".repeat(65);
    let cases: [ShapeCase<'_>; 12] = [
        ("xyz", &[], alert(), 400, "BadDeviceToken"),
        (&DEVICE[1..], &[], alert(), 400, "BadDeviceToken"),
        (
            DEVICE,
            &[("apns-push-type", "shout")],
            alert(),
            400,
            "InvalidPushType",
        ),
        (
            DEVICE,
            &[("apns-priority", "7")],
            alert(),
            400,
            "BadPriority",
        ),
        (
            DEVICE,
            &[("apns-collapse-id", &long_collapse)],
            alert(),
            400,
            "BadCollapseId",
        ),
        (
            DEVICE,
            &[("apns-expiration", "soon")],
            alert(),
            400,
            "BadExpirationDate",
        ),
        (DEVICE, &[("apns-id", "nope")], alert(), 400, "BadMessageId"),
        (DEVICE, &[], "", 400, "PayloadEmpty"),
        (DEVICE, &[], "{not json", 400, "PayloadEmpty"),
        (DEVICE, &[], r#"{"alert":"no aps"}"#, 400, "PayloadEmpty"),
        (DEVICE, &[], &big, 413, "PayloadTooLarge"),
        (DEVICE, &[], &huge, 413, "PayloadTooLarge"),
    ];
    for (device, headers, body, status, reason) in cases {
        let answer = h.apns(device, Some(&jwt), headers, body).await;
        assert_eq!(answer.status.as_u16(), status, "{reason}");
        assert_eq!(answer.json, json!({"reason": reason}));
    }
}

#[tokio::test]
async fn apns_checks_topic_method_and_path() {
    let h = Harness::start(full_args()).await;
    let jwt = apns_jwt(KEY_ID, now());
    // Topic checks, without the harness's default topic.
    let topics = [
        (None, "MissingTopic"),
        (Some("com.other.app"), "TopicDisallowed"),
        (Some("com.example.switchboard.other"), "TopicDisallowed"),
    ];
    for (topic, reason) in topics {
        let mut req = Request::post(format!("{}/3/device/{DEVICE}", h.server.url()))
            .header("authorization", format!("bearer {jwt}"));
        if let Some(topic) = topic {
            req = req.header("apns-topic", topic);
        }
        let answer = h
            .send(true, req.body(Full::new(Bytes::from(alert()))).unwrap())
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.json, json!({"reason": reason}));
    }
    let get = Request::get(format!("{}/3/device/{DEVICE}", h.server.url()))
        .body(Full::default())
        .unwrap();
    let answer = h.send(true, get).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.json, json!({"reason": "MethodNotAllowed"}));
    let answer = h
        .send(
            true,
            Request::post(format!("{}/3/nope", h.server.url()))
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.json, json!({"reason": "BadPath"}));
}

#[tokio::test]
async fn apns_reports_unregistered_tokens() {
    let h = Harness::start(full_args()).await;
    h.fault(&json!({"invalid_tokens": [DEVICE]})).await;
    let before = super::now_ms();
    let answer = h
        .apns(DEVICE, Some(&apns_jwt(KEY_ID, now())), &[], alert())
        .await;
    assert_eq!(answer.status, StatusCode::GONE);
    assert_eq!(answer.json["reason"], "Unregistered");
    assert!(answer.json["timestamp"].as_u64().unwrap() >= before);
}

#[tokio::test]
async fn injected_429_clears_by_itself() {
    let h = Harness::start(full_args()).await;
    h.fault(&json!({"status": 429, "retry_after_s": 2, "remaining": 2, "provider": "apns"}))
        .await;
    let jwt = apns_jwt(KEY_ID, now());
    // FCM is not affected by an APNs fault.
    let access = h.access_token().await;
    assert_eq!(
        h.fcm(&access, PROJECT, &fcm_message("tok")).await.status,
        StatusCode::OK
    );
    for _ in 0..2 {
        let answer = h.apns(DEVICE, Some(&jwt), &[], alert()).await;
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(answer.json, json!({"reason": "TooManyRequests"}));
        assert_eq!(answer.headers["retry-after"], "2");
    }
    let answer = h.apns(DEVICE, Some(&jwt), &[], alert()).await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn startup_flags_set_faults_before_auth() {
    let args = MockArgs {
        fault_status: Some(503),
        fault_provider: Some(Service::Apns),
        latency_ms: 150,
        ..full_args()
    };
    let h = Harness::start(args).await;
    let started = Instant::now();
    let answer = h.apns(DEVICE, None, &[], "").await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.json, json!({"reason": "ServiceUnavailable"}));
    assert!(!answer.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn fcm_exchanges_tokens_and_sends() {
    let h = Harness::start(full_args()).await;
    let answer = h
        .exchange(&good_claims("https://oauth2.googleapis.com/token"))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.json);
    assert_eq!(answer.json["expires_in"], 3600);
    assert_eq!(answer.json["token_type"], "Bearer");
    let access = answer.json["access_token"].as_str().unwrap().to_owned();
    assert!(access.starts_with("ya29.mock-"));

    let answer = h.fcm(&access, PROJECT, &fcm_message("fcm-token-1")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.json);
    let name = answer.json["name"].as_str().unwrap();
    assert!(
        name.starts_with("projects/switchboard-test/messages/"),
        "{name}"
    );

    let dry = json!({"message": {"topic": "news"}, "validate_only": true});
    let answer = h.fcm(&access, PROJECT, &dry).await;
    assert_eq!(
        answer.json["name"],
        "projects/switchboard-test/messages/fake_message_id"
    );

    let answer = h
        .fcm("ya29.bogus", PROJECT, &fcm_message("fcm-token-1"))
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.json["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(answer.json["error"]["code"], 401);
    assert!(
        answer.json["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Request had invalid")
    );

    let answer = h
        .fcm(&access, "other-project", &fcm_message("fcm-token-1"))
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(
        answer.json,
        json!({"error": {"code": 403, "message": "Permission denied on resource project other-project.", "status": "PERMISSION_DENIED"}})
    );

    h.fault(&json!({"invalid_tokens": ["gone-token"]})).await;
    let answer = h.fcm(&access, PROJECT, &fcm_message("gone-token")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.json["error"]["status"], "NOT_FOUND");
    assert_eq!(
        answer.json["error"]["message"],
        "Requested entity was not found."
    );
    assert_eq!(
        answer.json["error"]["details"][0]["errorCode"],
        "UNREGISTERED"
    );
    assert_eq!(
        answer.json["error"]["details"][0]["@type"],
        "type.googleapis.com/google.firebase.fcm.v1.FcmError"
    );
}

#[tokio::test]
async fn fcm_checks_the_message() {
    let h = Harness::start(full_args()).await;
    let access = h.access_token().await;
    let big = json!({"message": {"token": "t", "data": {"blob": "x".repeat(5000)}}});
    let cases = [
        (
            json!({"message": {"token": "t", "data": {"n": 1}}}),
            "values must be strings",
        ),
        (
            json!({"message": {"token": "t", "topic": "news"}}),
            "Exactly one of",
        ),
        (json!({"message": {"notification": {}}}), "Exactly one of"),
        (
            json!({"message": {"token": ""}}),
            "not a valid FCM registration token",
        ),
        (
            json!({"message": {"token": "has space"}}),
            "not a valid FCM registration token",
        ),
        (
            json!({"message": {"token": "t", "bogus": 1}}),
            "Unknown name \"bogus\"",
        ),
        (json!({"msg": {}}), "Unknown name \"msg\""),
        (json!([1, 2]), "Invalid JSON payload"),
        (big, "Message is too big"),
    ];
    for (body, message) in cases {
        let answer = h.fcm(&access, PROJECT, &body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        let error = &answer.json["error"];
        assert_eq!(error["status"], "INVALID_ARGUMENT");
        assert_eq!(error["details"][0]["errorCode"], "INVALID_ARGUMENT");
        assert!(
            error["message"].as_str().unwrap().contains(message),
            "{error}"
        );
    }
}

#[tokio::test]
async fn oauth_refuses_bad_assertions() {
    let h = Harness::start(full_args()).await;
    let aud = format!("{}/token", h.server.url());
    let answer = h
        .token_request("grant_type=client_credentials&assertion=x")
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json["error"], "unsupported_grant_type");
    assert_eq!(
        answer.json["error_description"],
        "Invalid grant_type: client_credentials"
    );

    let mut expired = good_claims(&aud);
    expired["iat"] = json!(now() - 7200);
    expired["exp"] = json!(now() - 3600);
    let mut too_long = good_claims(&aud);
    too_long["exp"] = json!(now() + 7200);
    let mut wrong_scope = good_claims(&aud);
    wrong_scope["scope"] = json!("https://www.googleapis.com/auth/cloud-platform.read-only");
    let mut wrong_iss = good_claims(&aud);
    wrong_iss["iss"] = json!("someone@else.iam.gserviceaccount.com");
    let cases = [
        (
            good_claims("https://example.com/elsewhere"),
            "invalid_grant",
        ),
        (expired, "invalid_grant"),
        (too_long, "invalid_grant"),
        (wrong_scope, "invalid_scope"),
        (wrong_iss, "invalid_grant"),
    ];
    for (claims, error) in cases {
        let answer = h.exchange(&claims).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{claims}");
        assert_eq!(answer.json["error"], error, "{claims}");
    }
    let mut tampered = assertion(&good_claims(&aud));
    tampered.truncate(tampered.len() - 4);
    tampered.push_str("AAAA");
    let form = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={tampered}"
    );
    let answer = h.token_request(&form).await;
    assert_eq!(
        answer.json,
        json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
    );
}

#[tokio::test]
async fn access_tokens_expire() {
    let h = Harness::start(MockArgs {
        fcm_token_ttl: 1,
        ..full_args()
    })
    .await;
    let answer = h
        .exchange(&good_claims("https://oauth2.googleapis.com/token"))
        .await;
    assert_eq!(answer.json["expires_in"], 1);
    let access = answer.json["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        h.fcm(&access, PROJECT, &fcm_message("t")).await.status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        h.fcm(&access, PROJECT, &fcm_message("t")).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn fcm_injected_503_and_oauth_untouched() {
    let h = Harness::start(full_args()).await;
    h.fault(&json!({"status": 503, "retry_after_s": 7, "provider": null}))
        .await;
    // The token endpoint is faulted only when named.
    let access = h.access_token().await;
    let answer = h.fcm(&access, PROJECT, &fcm_message("t")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.json["error"]["status"], "UNAVAILABLE");
    assert_eq!(
        answer.json["error"]["details"][0]["errorCode"],
        "UNAVAILABLE"
    );
    assert_eq!(answer.headers["retry-after"], "7");

    h.fault(&json!({"status": 429, "provider": "fcm"})).await;
    let answer = h.fcm(&access, PROJECT, &fcm_message("t")).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.json["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(
        answer.json["error"]["details"][0]["errorCode"],
        "QUOTA_EXCEEDED"
    );

    h.fault(&json!({"status": 500, "provider": "oauth"})).await;
    let answer = h
        .exchange(&good_claims("https://oauth2.googleapis.com/token"))
        .await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        h.fcm(&access, PROJECT, &fcm_message("t")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn records_what_was_received_without_credentials() {
    let h = Harness::start(full_args()).await;
    let jwt = apns_jwt(KEY_ID, now());
    let headers = [
        ("apns-collapse-id", "conv-1"),
        ("apns-expiration", "0"),
        ("apns-priority", "5"),
    ];
    assert_eq!(
        h.apns(DEVICE, Some(&jwt), &headers, alert()).await.status,
        StatusCode::OK
    );
    assert_eq!(
        h.apns("xyz", Some(&jwt), &[], alert()).await.status,
        StatusCode::BAD_REQUEST
    );
    let access = h.access_token().await;
    assert_eq!(
        h.fcm(&access, PROJECT, &fcm_message("fcm-1")).await.status,
        StatusCode::OK
    );

    let received = h.control("GET", "/control/received", "").await;
    assert_eq!(received.status, StatusCode::OK);
    let dump = received.json.to_string();
    assert!(
        !dump.to_ascii_lowercase().contains("authorization"),
        "{dump}"
    );
    assert!(
        !dump.contains(&jwt) && !dump.contains(&access),
        "credentials recorded"
    );
    assert!(!dump.contains("assertion"), "{dump}");
    let records = received.json.as_array().unwrap();
    assert_eq!(records.len(), 4);
    let apns = &records[0];
    assert_eq!(apns["provider"], "apns");
    assert_eq!(apns["path"], format!("/3/device/{DEVICE}"));
    assert_eq!(apns["token"], DEVICE);
    assert_eq!(apns["status"], 200);
    assert_eq!(apns["reason"], Value::Null);
    assert_eq!(apns["headers"]["apns-topic"], TOPIC);
    assert_eq!(apns["headers"]["apns-push-type"], "alert");
    assert_eq!(apns["headers"]["apns-collapse-id"], "conv-1");
    assert_eq!(apns["headers"]["apns-priority"], "5");
    assert_eq!(apns["body"]["aps"]["alert"]["title"], "Hi");
    assert!(apns["at_ms"].as_u64().unwrap() > 0);
    assert_eq!(records[1]["reason"], "BadDeviceToken");
    assert_eq!(records[1]["token"], "xyz");
    assert_eq!(records[2]["provider"], "oauth");
    assert_eq!(records[2]["body"]["claims"]["scope"], SCOPE);
    assert_eq!(records[3]["provider"], "fcm");
    assert_eq!(records[3]["token"], "fcm-1");
    assert_eq!(records[3]["body"]["message"]["data"]["conv"], "42");

    let stats = h.control("GET", "/control/stats", "").await;
    assert_eq!(
        stats.json,
        json!({"requests": 4, "accepted": 3, "by_status": {"200": 3, "400": 1}, "dropped_records": 0})
    );
    assert_eq!(
        h.control("POST", "/control/reset", "").await.status,
        StatusCode::OK
    );
    assert_eq!(
        h.control("GET", "/control/received", "").await.json,
        json!([])
    );
    assert_eq!(
        h.control("GET", "/control/stats", "").await.json["requests"],
        0
    );
}

#[tokio::test]
async fn control_api_validates_and_routes() {
    let h = Harness::start(full_args()).await;
    let cases = [
        ("POST", "/control/fault", "{not json", 400),
        ("POST", "/control/fault", r#"{"stauts": 503}"#, 400),
        ("POST", "/control/fault", r#"{"status": 404}"#, 400),
        ("POST", "/control/fault", r#"{"provider": "mqtt"}"#, 400),
        ("GET", "/control/fault", "", 405),
        ("GET", "/control/nothing", "", 404),
        ("GET", "/elsewhere", "", 404),
        ("POST", "/control/fault", "{}", 200),
    ];
    for (method, path, body, status) in cases {
        let answer = h.control(method, path, body).await;
        assert_eq!(answer.status.as_u16(), status, "{method} {path} {body}");
    }
    let health = Request::get(format!("{}/healthz", h.server.url()))
        .body(Full::default())
        .unwrap();
    let response = h.h1.request(health).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        &response.into_body().collect().await.unwrap().to_bytes()[..],
        b"ok"
    );
}

#[test]
fn announce_writes_the_address_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("addr");
    let addr = "127.0.0.1:4321".parse().unwrap();
    super::announce(addr, Some(&path)).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "http://127.0.0.1:4321"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn helpers() {
    let form = fcm::form_decode(b"a=b%2Bc+d&empty=&x").unwrap();
    let expected =
        [("a", "b+c d"), ("empty", ""), ("x", "")].map(|(k, v)| (k.to_owned(), v.to_owned()));
    assert_eq!(form, expected);
    assert!(fcm::form_decode(b"a=%zz").is_none());
    assert!(fcm::form_decode(b"a=%f").is_none());
    assert!(fcm::form_decode(b"a=%ff").is_none());
    assert_eq!(
        fcm::project_of("/v1/projects/p-1/messages:send"),
        Some("p-1")
    );
    assert_eq!(fcm::project_of("/v1/projects//messages:send"), None);
    assert_eq!(fcm::project_of("/v1/projects/a/b/messages:send"), None);
    let id = super::uuid_v4();
    assert!(
        super::apns::is_uuid(&id) && id.as_bytes()[14] == b'4',
        "{id}"
    );
    assert_ne!(super::uuid_v4(), id);
    assert!(super::parse_fault_status("503").is_ok());
    assert!(super::parse_fault_status("404").is_err());
}
