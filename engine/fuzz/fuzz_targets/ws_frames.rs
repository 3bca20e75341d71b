#![no_main]
//! `engine::ws::Decoder` on any client bytes in any reads, against a reference
//! decoder; see `engine_fuzz::ws_frames`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| engine_fuzz::ws_frames::check(data));
