//! WebSocket close codes the engine sends (RFC 6455 §7.4 and the private
//! 4000–4999 range). `docs/PROTOCOL.md` lists when each is used.

/// Normal closure.
pub const NORMAL: u16 = 1000;
/// The server is shutting down or restarting; reconnect with backoff.
pub const GOING_AWAY: u16 = 1001;
/// The peer broke RFC 6455 (unmasked frame, bad opcode, bad fragmentation, …).
pub const PROTOCOL_ERROR: u16 = 1002;
/// A frame type the endpoint does not accept.
pub const UNSUPPORTED_DATA: u16 = 1003;
/// A text message that is not valid UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// A policy violation not covered by a more specific code.
pub const POLICY_VIOLATION: u16 = 1008;
/// A frame or message over the size limits.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// The server hit an unexpected condition.
pub const INTERNAL_ERROR: u16 = 1011;
/// The server is overloaded; reconnect later with backoff.
pub const TRY_AGAIN_LATER: u16 = 1013;

/// The auth token expired while the connection was open; get a new one.
pub const TOKEN_EXPIRED: u16 = 4001;
/// The client did not read fast enough and its send queue overflowed; it
/// catches up on reconnect, nothing acked is lost.
pub const SLOW_CONSUMER: u16 = 4002;
/// The client kept sending after being rate limited.
pub const RATE_LIMITED: u16 = 4003;
/// The user has too many connections open.
pub const TOO_MANY_CONNECTIONS: u16 = 4004;
/// Nothing was received within the idle timeout (no pong to our pings).
pub const IDLE_TIMEOUT: u16 = 4005;
/// Too many undecodable messages.
pub const BAD_MESSAGES: u16 = 4006;
