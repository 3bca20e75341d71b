//! Starting up: a server without `--dev` needs a token secret, and a bad
//! configuration stops the process with a non-zero status and a message
//! that names the problem, before it listens.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod support;

use support::http::get;
use support::{Exited, Options};

/// A secret of the minimum length (32 bytes).
const SECRET: &str = "startup tests secret of 32 bytes";

fn assert_refused(exited: &Exited, message: &str) {
    assert!(!exited.status.success(), "{exited:?}");
    assert!(
        exited.log.contains(message),
        "expected {message:?} in the log:\n{}",
        exited.log
    );
    assert!(
        !exited.log.contains(" listening "),
        "it listened first:\n{}",
        exited.log
    );
}

#[test]
fn production_mode_without_a_token_secret_refuses_to_start() {
    let exited = Options::new().production().start_and_expect_exit();
    assert_refused(&exited, "token_secret is required");
}

#[test]
fn production_mode_refuses_a_short_token_secret() {
    let exited = Options::new()
        .production()
        .env("SWITCHBOARD_TOKEN_SECRET", &SECRET[1..])
        .start_and_expect_exit();
    assert_refused(&exited, "invalid token secret");
}

#[test]
fn production_mode_starts_with_a_token_secret_from_the_environment() {
    let server = Options::new()
        .production()
        .env("SWITCHBOARD_TOKEN_SECRET", SECRET)
        .start();
    assert_eq!(get(server.addr(), "/healthz").status, 200);
    assert!(server.log().contains("dev=false"), "{}", server.log());
}

#[test]
fn an_unknown_config_field_is_refused() {
    let exited = Options::new()
        .config("listn = \"127.0.0.1:1\"\n")
        .start_and_expect_exit();
    assert_refused(&exited, "invalid config file");
    assert!(exited.log.contains("switchboard.toml"), "{}", exited.log);
}

#[test]
fn a_config_that_is_not_toml_is_refused() {
    let exited = Options::new()
        .config("handshake_timeout = [\n")
        .start_and_expect_exit();
    assert_refused(&exited, "invalid config file");
}

#[test]
fn a_missing_config_file_is_refused() {
    let exited = Options::new()
        .arg("--config")
        .arg("/nonexistent/switchboard.toml")
        .start_and_expect_exit();
    assert_refused(
        &exited,
        "cannot read config file /nonexistent/switchboard.toml",
    );
}

#[test]
fn an_idle_timeout_not_longer_than_the_heartbeat_is_refused() {
    let exited = Options::new()
        .config("heartbeat_interval = \"5s\"\nidle_timeout = \"5s\"\n")
        .start_and_expect_exit();
    assert_refused(&exited, "idle_timeout must be longer");
}
