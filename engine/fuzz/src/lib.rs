//! The properties the engine's fuzz targets check, one module per target, and the
//! helpers they share. Every check drives the engine's real entry points
//! (`engine::http::Request::parse`, `engine::http::Handshake::validate`,
//! `engine::ws::Decoder`, the `engine::ws` encoder) with the limits the server uses, and
//! panics when a property fails: that is the finding.
#![forbid(unsafe_code)]

pub mod http_head;
pub mod ws_frames;
pub mod ws_reference;
pub mod ws_roundtrip;

/// Where to cut an input of `len` bytes into pieces, as the reads of a socket might:
/// ascending offsets strictly inside `0..len`, chosen by `seed`.
///
/// `seed & 3 == 0`: pieces of `(seed >> 2) + 1` bytes, so 1 (byte by byte) to 64.
/// Otherwise 1–16 cuts from a small PRNG, either anywhere (1, 2) or a few bytes apart
/// (3), which puts cuts inside frame headers and multi-byte characters.
pub fn cuts(seed: u8, len: usize) -> Vec<usize> {
    if len < 2 {
        return Vec::new();
    }
    if seed & 3 == 0 {
        let step = usize::from(seed >> 2) + 1;
        return (step..len).step_by(step).collect();
    }
    let mut state = (u64::from(seed) << 32 | len as u64) ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let count = usize::from(seed >> 2) % 16 + 1;
    let mut out = Vec::with_capacity(count);
    let mut at = 0usize;
    for _ in 0..count {
        let point = if seed & 3 == 3 {
            at + 1 + (next() % 8) as usize
        } else {
            1 + (next() % (len as u64 - 1)) as usize
        };
        if point >= len {
            if seed & 3 == 3 {
                break;
            }
            continue;
        }
        at = point;
        out.push(point);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// `data` cut at `cuts` (as returned by [`cuts`]).
pub fn pieces<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for &cut in cuts {
        out.push(&data[start..cut]);
        start = cut;
    }
    out.push(&data[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_are_inside_and_ascending() {
        for seed in 0..=255u8 {
            for len in 0..300 {
                let c = cuts(seed, len);
                assert!(c.windows(2).all(|w| w[0] < w[1]), "{seed} {len}");
                assert!(c.iter().all(|&p| p > 0 && p < len), "{seed} {len}");
                let joined: usize = pieces(&vec![0; len], &c).iter().map(|p| p.len()).sum();
                assert_eq!(joined, len);
            }
        }
        assert_eq!(cuts(0, 4), [1, 2, 3]);
    }
}
