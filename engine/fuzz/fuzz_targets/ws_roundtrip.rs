#![no_main]
//! Messages through the `engine::ws` encoder, masked as a client would, back through
//! the decoder; see `engine_fuzz::ws_roundtrip`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| engine_fuzz::ws_roundtrip::check(data));
