//! One online member's connection, as a state machine over the bytes its
//! socket delivers (the socket itself is driven by `members.rs`):
//! upgrade response, `welcome`, then `sync` and its catch-up up to
//! `synced`, then the live stream, whose group messages are recorded with
//! their arrival times.

use std::net::{Ipv4Addr, TcpStream};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail, ensure};
use protocol::limits::SERVER_MESSAGE_BYTES_MAX;
use protocol::{ClientMsg, Content, ConvId, Encoding, ServerMsg, UserId};

use super::setup::SYNC_RID;
use crate::handshake::{
    self, HEAD_BYTES_MAX, OPCODE_BINARY, OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG, OPCODE_TEXT,
};

/// What every member of a run shares.
#[derive(Debug)]
pub struct Ctx<'a> {
    pub conv: ConvId,
    /// The group's last seq before its first text message.
    pub base: u64,
    /// How many group messages every member must get, once known.
    pub expected: Option<u64>,
    /// The `sync` every member sends after `welcome`, as a client frame.
    pub sync_frame: &'a [u8],
}

/// The client frame of `sync`, with no positions.
pub fn sync_frame() -> Vec<u8> {
    let mut payload = Vec::new();
    Encoding::Binary.encode(
        &ClientMsg::Sync {
            rid: SYNC_RID,
            since: vec![],
        },
        &mut payload,
    );
    let mut frame = Vec::new();
    handshake::write_frame(&mut frame, OPCODE_BINARY, &payload);
    frame
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not connected yet.
    Waiting,
    Connecting,
    /// The upgrade request is sent; reading the response head.
    Upgrading,
    Welcome,
    /// `sync` is sent; reading the catch-up up to `synced`.
    Syncing,
    Live,
    Failed,
}

impl State {
    /// Between the start of the connect and `synced`.
    pub fn in_flight(self) -> bool {
        matches!(
            self,
            State::Connecting | State::Upgrading | State::Welcome | State::Syncing
        )
    }
}

/// What one member received.
#[derive(Debug)]
pub struct MemberReport {
    pub user: UserId,
    /// The seq of the event that added it to the group.
    pub joined: u64,
    /// Catch-up messages before `synced`, and the first and last seq.
    pub caught_up: u64,
    pub catch_up_seqs: Option<(u64, u64)>,
    /// Live group text messages: (seq, arrival in ns since the epoch).
    pub got: Vec<(u64, u64)>,
    /// Live messages that were not group text messages.
    pub strays: u64,
    pub first_stray: Option<String>,
}

#[derive(Debug)]
pub struct Member {
    pub source: Ipv4Addr,
    pub stream: Option<TcpStream>,
    pub state: State,
    /// When the member must be synced.
    pub deadline: Option<Instant>,
    /// Bytes read and not yet handled.
    pub buf: Vec<u8>,
    /// Bytes to write.
    pub out: Vec<u8>,
    /// Registered for writability (while `out` is not empty).
    pub writing: bool,
    /// Has all `Ctx::expected` group messages.
    pub done: bool,
    pub report: MemberReport,
}

impl Member {
    pub fn new(user: UserId, joined: u64, source: Ipv4Addr) -> Member {
        Member {
            source,
            stream: None,
            state: State::Waiting,
            deadline: None,
            buf: Vec::new(),
            out: Vec::new(),
            writing: false,
            done: false,
            report: MemberReport {
                user,
                joined,
                caught_up: 0,
                catch_up_seqs: None,
                got: Vec::new(),
                strays: 0,
                first_stray: None,
            },
        }
    }

    /// Handles what has arrived in `buf` (read at `arrival_ns`); replies
    /// (`sync`, pongs) go to `out`.
    pub fn on_bytes(&mut self, ctx: &Ctx<'_>, arrival_ns: u64) -> Result<()> {
        if self.state == State::Upgrading {
            let Some(len) = handshake::head_len(&self.buf) else {
                ensure!(
                    self.buf.len() <= HEAD_BYTES_MAX,
                    "an upgrade response head over {HEAD_BYTES_MAX} bytes"
                );
                return Ok(());
            };
            handshake::check_upgrade(&self.buf[..len], &self.buf[len..])?;
            self.buf.drain(..len);
            self.state = State::Welcome;
        }
        let mut at = 0;
        let result = self.on_frames(ctx, arrival_ns, &mut at);
        self.buf.drain(..at);
        result
    }

    /// Handles every complete frame from `buf[*at..]`, advancing `at`.
    fn on_frames(&mut self, ctx: &Ctx<'_>, arrival_ns: u64, at: &mut usize) -> Result<()> {
        while let Some(frame) = handshake::parse_frame(&self.buf[*at..], SERVER_MESSAGE_BYTES_MAX)?
        {
            let payload = *at + frame.header_len..*at + frame.header_len + frame.payload_len;
            *at = payload.end;
            ensure!(
                frame.fin,
                "a fragmented message (opcode {:#x}) from the server",
                frame.opcode
            );
            match frame.opcode {
                OPCODE_BINARY => {
                    let msg = Encoding::Binary
                        .decode_server(&self.buf[payload])
                        .map_err(|e| anyhow!("undecodable message from the server: {e}"))?;
                    self.on_msg(ctx, msg, arrival_ns)?;
                }
                OPCODE_PING => {
                    handshake::write_frame(&mut self.out, OPCODE_PONG, &self.buf[payload]);
                }
                OPCODE_PONG => {}
                OPCODE_CLOSE => bail!("{}", handshake::describe_close(&self.buf[payload])),
                OPCODE_TEXT => bail!("a text frame although we asked for encoding=binary"),
                other => bail!("unexpected frame opcode {other:#x}"),
            }
        }
        Ok(())
    }

    fn on_msg(&mut self, ctx: &Ctx<'_>, msg: ServerMsg, arrival_ns: u64) -> Result<()> {
        match self.state {
            State::Welcome => {
                let ServerMsg::Welcome { user, .. } = msg else {
                    bail!("expected welcome, got {msg:?}");
                };
                ensure!(user == self.report.user, "welcome for user {user}");
                self.out.extend_from_slice(ctx.sync_frame);
                self.state = State::Syncing;
                Ok(())
            }
            State::Syncing => self.on_catch_up(ctx, msg),
            State::Live => self.on_live(ctx, msg, arrival_ns),
            State::Waiting | State::Connecting | State::Upgrading | State::Failed => {
                bail!("a message in state {:?}", self.state)
            }
        }
    }

    fn on_catch_up(&mut self, ctx: &Ctx<'_>, msg: ServerMsg) -> Result<()> {
        match msg {
            ServerMsg::Msg(m) => {
                ensure!(
                    m.conv == ctx.conv && m.seq.0 <= ctx.base,
                    "the catch-up brought conv {} seq {} (the group is conv {} at seq {})",
                    m.conv,
                    m.seq.0,
                    ctx.conv,
                    ctx.base
                );
                self.report.caught_up += 1;
                let seqs = self.report.catch_up_seqs.get_or_insert((m.seq.0, m.seq.0));
                seqs.1 = m.seq.0;
            }
            ServerMsg::Synced { rid, convs } if rid == SYNC_RID => {
                let group = convs
                    .iter()
                    .find(|c| c.conv == ctx.conv)
                    .with_context(|| format!("`synced` does not list the group: {convs:?}"))?;
                ensure!(
                    group.last_seq.0 == ctx.base,
                    "`synced` has the group at seq {}, expected {}",
                    group.last_seq.0,
                    ctx.base
                );
                self.state = State::Live;
                self.deadline = None;
            }
            ServerMsg::Error { .. } => bail!("the server sent {msg:?} while we synced"),
            _ => {}
        }
        Ok(())
    }

    fn on_live(&mut self, ctx: &Ctx<'_>, msg: ServerMsg, arrival_ns: u64) -> Result<()> {
        match msg {
            ServerMsg::Msg(m) if m.conv == ctx.conv && matches!(m.content, Content::Text(_)) => {
                self.report.got.push((m.seq.0, arrival_ns));
                if let Some(expected) = ctx.expected
                    && self.report.got.len() as u64 >= expected
                {
                    self.done = true;
                }
            }
            ServerMsg::Msg(m) => {
                self.report.strays += 1;
                self.report.first_stray.get_or_insert_with(|| {
                    format!("conv {} seq {}: {:?}", m.conv, m.seq.0, m.content)
                });
            }
            ServerMsg::Error { .. } => bail!("the server sent {msg:?}"),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{ConvKind, ConvSummary, DeviceId, Message, MsgId, Seq, UnixMillis};

    /// A server frame (unmasked) holding `msg` in binary.
    fn frame(msg: &ServerMsg) -> Vec<u8> {
        let mut payload = Vec::new();
        Encoding::Binary.encode(msg, &mut payload);
        let mut out = vec![0x80 | OPCODE_BINARY];
        match payload.len() {
            len @ 0..=125 => out.push(u8::try_from(len).unwrap()),
            len => {
                out.push(126);
                out.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
            }
        }
        out.extend_from_slice(&payload);
        out
    }

    fn text(conv: ConvId, seq: u64) -> ServerMsg {
        ServerMsg::Msg(Message {
            conv,
            seq: Seq(seq),
            id: MsgId(seq),
            from: UserId(1),
            device: DeviceId(1),
            ts: UnixMillis(0),
            content: Content::Text("123".into()),
        })
    }

    fn synced(conv: ConvId, last: u64) -> ServerMsg {
        ServerMsg::Synced {
            rid: SYNC_RID,
            convs: vec![ConvSummary {
                conv,
                kind: ConvKind::Group,
                last_seq: Seq(last),
                delivered: Seq(0),
                read: Seq(0),
            }],
        }
    }

    #[test]
    fn handshake_sync_and_live() {
        let conv = ConvId(1 << 63 | 5);
        let sync = sync_frame();
        let mut ctx = Ctx {
            conv,
            base: 3,
            expected: None,
            sync_frame: &sync,
        };
        let mut m = Member::new(UserId(7), 2, Ipv4Addr::new(127, 0, 0, 2));
        m.state = State::Upgrading;
        m.buf
            .extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        let welcome = ServerMsg::Welcome {
            user: UserId(7),
            device: DeviceId(1),
            version: 1,
            time: UnixMillis(0),
        };
        let bytes = frame(&welcome);
        // The welcome arrives in two pieces.
        m.buf.extend_from_slice(&bytes[..2]);
        m.on_bytes(&ctx, 0).unwrap();
        assert_eq!((m.state, m.out.len()), (State::Welcome, 0));
        m.buf.extend_from_slice(&bytes[2..]);
        m.on_bytes(&ctx, 0).unwrap();
        assert_eq!(m.state, State::Syncing);
        assert_eq!(m.out, sync);
        assert!(m.buf.is_empty());
        for msg in [text(conv, 2), text(conv, 3), synced(conv, 3)] {
            m.buf.extend_from_slice(&frame(&msg));
        }
        m.buf.extend_from_slice(&[0x89, 2, b'h', b'i']); // a ping
        m.buf.extend_from_slice(&frame(&text(conv, 4)));
        m.on_bytes(&ctx, 50).unwrap();
        assert_eq!(m.state, State::Live);
        assert_eq!(
            (m.report.caught_up, m.report.catch_up_seqs),
            (2, Some((2, 3)))
        );
        assert_eq!(m.report.got, vec![(4, 50)]);
        assert_eq!(m.out.len(), sync.len() + 2 + 4 + 2, "a masked pong follows");
        ctx.expected = Some(2);
        m.buf.extend_from_slice(&frame(&text(conv, 5)));
        m.buf.extend_from_slice(&frame(&text(ConvId(9), 1)));
        m.on_bytes(&ctx, 60).unwrap();
        assert!(m.done);
        assert_eq!(m.report.got, vec![(4, 50), (5, 60)]);
        assert_eq!(m.report.strays, 1);
    }

    #[test]
    fn refusals() {
        let conv = ConvId(1 << 63 | 5);
        let sync = sync_frame();
        let ctx = Ctx {
            conv,
            base: 3,
            expected: None,
            sync_frame: &sync,
        };
        let mut m = Member::new(UserId(7), 1, Ipv4Addr::new(127, 0, 0, 2));
        m.state = State::Syncing;
        m.buf.extend_from_slice(&frame(&synced(ConvId(9), 3)));
        let err = format!("{:#}", m.on_bytes(&ctx, 0).unwrap_err());
        assert!(err.contains("does not list the group"), "{err}");
        let mut m = Member::new(UserId(7), 1, Ipv4Addr::new(127, 0, 0, 2));
        m.state = State::Live;
        m.buf.extend_from_slice(&[0x88, 2, 0x0f, 0xa2]);
        let err = format!("{:#}", m.on_bytes(&ctx, 0).unwrap_err());
        assert!(err.contains("code Some(4002)"), "{err}");
        let mut m = Member::new(UserId(7), 1, Ipv4Addr::new(127, 0, 0, 2));
        m.state = State::Upgrading;
        m.buf
            .extend_from_slice(b"HTTP/1.1 401 Unauthorized\r\n\r\n");
        assert!(m.on_bytes(&ctx, 0).is_err());
    }
}
