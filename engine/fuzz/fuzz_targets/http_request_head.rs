#![no_main]
//! `engine::http::Request::parse` on any bytes, whole and read by read, then
//! `Handshake::validate` and the responses; see `engine_fuzz::http_head`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| engine_fuzz::http_head::check(data));
