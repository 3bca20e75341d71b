//! The properties the fuzz targets check. A decoder may refuse any input, but
//! must not panic, and whatever it accepts must survive a round trip.
#![forbid(unsafe_code)]

use protocol::{ClientMsg, Encoding, ServerMsg};

const ENCODINGS: [Encoding; 2] = [Encoding::Json, Encoding::Binary];

fn encode<T: serde::Serialize>(encoding: Encoding, msg: &T) -> Vec<u8> {
    let mut bytes = Vec::new();
    encoding.encode(msg, &mut bytes);
    bytes
}

/// Decodes `data` as a client message. An accepted message is within every
/// limit, and re-encoded in either encoding it decodes to itself: so it
/// also fits in one client message as JSON, whatever it arrived as.
///
/// # Panics
/// When a property fails: that is the finding.
pub fn check_client(encoding: Encoding, data: &[u8]) {
    let msg: ClientMsg = match encoding.decode_client(data) {
        Ok(msg) => msg,
        Err(e) => {
            // Formatting and mapping the error must not panic either.
            let _ = (e.to_string(), e.error_code());
            return;
        }
    };
    assert_eq!(
        msg.validate(),
        Ok(()),
        "decode_client returned an invalid message"
    );
    for again in ENCODINGS {
        let bytes = encode(again, &msg);
        assert_eq!(
            again.decode_client(&bytes).as_ref(),
            Ok(&msg),
            "{again:?} round trip"
        );
    }
}

/// Decodes `data` as a server message; an accepted message re-encoded in
/// either encoding decodes to itself.
///
/// # Panics
/// When a property fails: that is the finding.
pub fn check_server(encoding: Encoding, data: &[u8]) {
    let msg: ServerMsg = match encoding.decode_server(data) {
        Ok(msg) => msg,
        Err(e) => {
            let _ = (e.to_string(), e.error_code());
            return;
        }
    };
    for again in ENCODINGS {
        let bytes = encode(again, &msg);
        assert_eq!(
            again.decode_server(&bytes).as_ref(),
            Ok(&msg),
            "{again:?} round trip"
        );
    }
}
