#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::Encoding;

fuzz_target!(|data: &[u8]| protocol_fuzz::check_server(Encoding::Binary, data));
