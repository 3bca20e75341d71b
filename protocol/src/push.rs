//! The link between the engine and pushd: push jobs one way, acknowledgements
//! and invalid-token feedback the other.
//!
//! One stream (a Unix domain socket by default) carries frames of a 4-byte
//! big-endian length followed by a postcard-encoded [`ToPushd`] or
//! [`ToEngine`]. Both sides start with `Hello` and drop the link on a version
//! they do not speak. The rules the two sides keep:
//!
//! - The engine deletes a job from its outbox only after `Stored` names it:
//!   pushd answers `Stored` once the job is durable in its own queue. A job
//!   pushd cannot take now (its queue is full) comes back in `Busy`, and the
//!   engine offers it again later. Resending a job pushd already has is
//!   harmless: its queue is keyed by the job id.
//! - `Cancel` drops the device's jobs created before `before` that pushd has
//!   not sent yet (the device came back online).
//! - `InvalidToken` is repeated (on every new link) until the engine answers
//!   `FeedbackDone` with its id, after removing the token if it is still the
//!   device's.

use serde::{Deserialize, Serialize};

use crate::client::Platform;
use crate::error::DecodeError;
use crate::ids::{ConvId, DeviceId, Seq, UnixMillis, UserId};

/// The link's version; `Hello` carries it.
pub const LINK_VERSION: u16 = 1;

/// The largest frame either side sends or accepts (a batch of jobs).
pub const FRAME_MAX: usize = 1 << 20;

/// Jobs per `Jobs` frame at most (a full batch of maximal jobs stays under
/// [`FRAME_MAX`]).
pub const JOBS_PER_FRAME_MAX: usize = 256;

/// The longest preview a job carries, in bytes (cut at a char boundary).
pub const PREVIEW_MAX: usize = 160;

/// One notification to send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The engine's outbox id; unique per engine data directory.
    pub id: u64,
    pub user: UserId,
    pub device: DeviceId,
    pub platform: Platform,
    pub token: String,
    pub conv: ConvId,
    /// The newest message the notification covers.
    pub seq: Seq,
    pub sender: UserId,
    /// A short preview; absent for private conversations.
    pub preview: Option<String>,
    /// Unread messages in the conversation for the user.
    pub unread: u32,
    /// Messages coalesced into this notification.
    pub count: u32,
    /// When the engine created the job (the first message it covers).
    pub created: UnixMillis,
}

/// Engine → pushd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToPushd {
    Hello {
        version: u16,
    },
    Jobs(Vec<Job>),
    Cancel {
        user: UserId,
        device: DeviceId,
        before: UnixMillis,
    },
    FeedbackDone {
        ids: Vec<u64>,
    },
}

/// pushd → engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToEngine {
    Hello {
        version: u16,
    },
    /// These jobs are durable in pushd's queue.
    Stored {
        ids: Vec<u64>,
    },
    /// These jobs were not taken (pushd's queue is full); offer them later.
    Busy {
        ids: Vec<u64>,
    },
    /// The provider rejected `token` for good; remove it from the device.
    InvalidToken {
        id: u64,
        user: UserId,
        device: DeviceId,
        token: String,
    },
}

/// Appends `msg` as one frame to `out`.
pub fn encode_frame<T: Serialize>(msg: &T, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let taken = std::mem::take(out);
    *out = postcard::to_extend(msg, taken).expect("link types always serialize to postcard");
    let len = u32::try_from(out.len() - start - 4).expect("frames stay under 4 GiB");
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Decodes the first frame of `buf`: `Ok(None)` while it is incomplete, else
/// the message and the bytes it took.
pub fn decode_frame<'a, T: Deserialize<'a>>(
    buf: &'a [u8],
) -> Result<Option<(T, usize)>, DecodeError> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > FRAME_MAX {
        return Err(DecodeError::TooLarge {
            len,
            max: FRAME_MAX,
        });
    }
    let Some(body) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    let (msg, rest) =
        postcard::take_from_bytes(body).map_err(|e| DecodeError::Binary(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(Some((msg, 4 + len)))
}

/// `text` cut to at most [`PREVIEW_MAX`] bytes at a char boundary, with an
/// ellipsis when cut.
pub fn preview_of(text: &str) -> String {
    if text.len() <= PREVIEW_MAX {
        return text.to_owned();
    }
    let mut end = PREVIEW_MAX - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64) -> Job {
        Job {
            id,
            user: UserId(1),
            device: DeviceId(2),
            platform: Platform::Fcm,
            token: "t".repeat(200),
            conv: ConvId(3),
            seq: Seq(4),
            sender: UserId(5),
            preview: Some("p".repeat(PREVIEW_MAX)),
            unread: 6,
            count: 7,
            created: UnixMillis(8),
        }
    }

    #[test]
    fn frames_round_trip_and_split_anywhere() {
        let mut buf = Vec::new();
        encode_frame(&ToPushd::Jobs(vec![job(1), job(2)]), &mut buf);
        encode_frame(&ToPushd::FeedbackDone { ids: vec![9] }, &mut buf);
        for cut in 0..buf.len() {
            let first = decode_frame::<ToPushd>(&buf[..cut]).expect("a prefix is not an error");
            let whole = decode_frame::<ToPushd>(&buf)
                .expect("decodes")
                .expect("complete");
            assert!(first.is_none() || first == Some(whole.clone()));
        }
        let (a, n) = decode_frame::<ToPushd>(&buf)
            .expect("decodes")
            .expect("complete");
        assert_eq!(a, ToPushd::Jobs(vec![job(1), job(2)]));
        let (b, m) = decode_frame::<ToPushd>(&buf[n..])
            .expect("decodes")
            .expect("complete");
        assert_eq!(b, ToPushd::FeedbackDone { ids: vec![9] });
        assert_eq!(n + m, buf.len());
    }

    #[test]
    fn a_full_batch_of_maximal_jobs_fits_a_frame() {
        let mut j = job(u64::MAX);
        j.token = "t".repeat(crate::limits::PUSH_TOKEN_BYTES_MAX);
        j.preview = Some("é".repeat(PREVIEW_MAX));
        let mut buf = Vec::new();
        encode_frame(&ToPushd::Jobs(vec![j; JOBS_PER_FRAME_MAX]), &mut buf);
        assert!(buf.len() - 4 <= FRAME_MAX, "{} bytes", buf.len());
    }

    #[test]
    fn oversized_and_garbage_frames_are_errors() {
        let mut buf = u32::try_from(FRAME_MAX + 1)
            .expect("fits")
            .to_be_bytes()
            .to_vec();
        assert!(matches!(
            decode_frame::<ToEngine>(&buf),
            Err(DecodeError::TooLarge { .. })
        ));
        buf = vec![0, 0, 0, 2, 0xff, 0xff];
        assert!(decode_frame::<ToEngine>(&buf).is_err());
    }

    #[test]
    fn previews_are_cut_at_char_boundaries() {
        assert_eq!(preview_of("hi"), "hi");
        let long = "ä".repeat(PREVIEW_MAX);
        let p = preview_of(&long);
        assert!(p.len() <= PREVIEW_MAX && p.ends_with('…'), "{p}");
    }
}
