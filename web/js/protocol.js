// The JSON protocol (docs/PROTOCOL.md): message constructors, ids and limits.
// Ids are decimal strings (u64 does not fit a JS number); seqs are numbers.

export const PROTOCOL_VERSION = 1;
export const BODY_BYTES_MAX = 16384;
export const TITLE_BYTES_MAX = 256;
export const GROUP_OP_USERS_MAX = 1000;
export const FETCH_LIMIT_MAX = 100;
export const SYNC_POSITIONS_MAX = 2000;
export const PRESENCE_SUBSCRIPTIONS_MAX = 1000;

/** Close codes after which reconnecting with the same token is pointless. */
export const CLOSE_TOKEN_EXPIRED = 4001;
export const CLOSE_TOO_MANY_CONNECTIONS = 4004;

/** Error codes a request may be retried after (the table in PROTOCOL.md). */
const RETRYABLE = new Set(['rate_limited', 'overloaded', 'internal']);

export function isRetryable(code) {
  return RETRYABLE.has(code);
}

const ID_RE = /^[0-9]{1,20}$/;
const U64_MAX = 18446744073709551615n;

/** A user-typed id as the protocol's decimal string, or null if it is not one. */
export function parseId(text) {
  const t = String(text).trim();
  if (!ID_RE.test(t)) return null;
  const n = BigInt(t);
  return n <= U64_MAX ? n.toString() : null;
}

/** "1, 2 3" → ["1","2","3"] (deduplicated), or null if any entry is not an id. */
export function parseIdList(text) {
  const parts = String(text).split(/[\s,]+/).filter((p) => p.length > 0);
  const ids = [];
  for (const p of parts) {
    const id = parseId(p);
    if (id === null) return null;
    if (!ids.includes(id)) ids.push(id);
  }
  return ids;
}

/** A random u64 as a decimal string: a client message id unique per device. */
export function newCmid() {
  const words = new Uint32Array(2);
  crypto.getRandomValues(words);
  return ((BigInt(words[0]) << 32n) | BigInt(words[1])).toString();
}

export function utf8Bytes(text) {
  return new TextEncoder().encode(text).length;
}

/** Whether a conversation id is a group's (top bit set). */
export function isGroupId(conv) {
  return BigInt(conv) >= 1n << 63n;
}

/** Compares two decimal id strings numerically. */
export function compareIds(a, b) {
  const x = BigInt(a);
  const y = BigInt(b);
  return x < y ? -1 : x > y ? 1 : 0;
}

export const msg = {
  send: (conv, cmid, body) => ({ send: { conv, cmid, body } }),
  recv: (conv, seq) => ({ recv: { conv, seq } }),
  read: (conv, seq) => ({ read: { conv, seq } }),
  typing: (conv, active) => ({ typing: { conv, active } }),
  fetch: (rid, conv, from, limit) => ({ fetch: { rid, conv, from, limit } }),
  sync: (rid, since) => ({ sync: { rid, since } }),
  directOpen: (rid, user) => ({ direct_open: { rid, user } }),
  convGet: (rid, conv) => ({ conv_get: { rid, conv } }),
  receiptsGet: (rid, conv) => ({ receipts_get: { rid, conv } }),
  groupCreate: (rid, title, members) => ({ group_create: { rid, title, members } }),
  groupRename: (rid, conv, title) => ({ group_rename: { rid, conv, title } }),
  groupAdd: (rid, conv, users) => ({ group_add: { rid, conv, users } }),
  groupRemove: (rid, conv, users) => ({ group_remove: { rid, conv, users } }),
  groupLeave: (rid, conv) => ({ group_leave: { rid, conv } }),
  presenceSubscribe: (rid, users) => ({ presence_subscribe: { rid, users } }),
};

/** Splits a server message into [type, fields]; throws on a malformed one. */
export function decode(text) {
  const value = JSON.parse(text);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new Error('a server message must be an object');
  }
  const keys = Object.keys(value);
  if (keys.length !== 1) throw new Error('a server message has exactly one key');
  return [keys[0], value[keys[0]]];
}

/** A one-line description of a group event, for the conversation view. */
export function describeEvent(event, name) {
  const [kind, f] = Object.entries(event)[0] ?? ['unknown', {}];
  const users = (list) => list.map(name).join(', ');
  switch (kind) {
    case 'created':
      return f.title ? `created the group “${f.title}”` : 'created the group';
    case 'renamed':
      return `renamed the group to “${f.title}”`;
    case 'added':
      return `added ${users(f.users)}`;
    case 'removed':
      return `removed ${users(f.users)}`;
    case 'left':
      return 'left';
    case 'role_changed':
      return `made ${name(f.user)} ${f.role === 'admin' ? 'an admin' : 'a member'}`;
    case 'history_visible':
      return f.visible ? 'made history visible to new members' : 'hid history from new members';
    case 'private':
      return f.private ? 'turned off message previews in notifications' : 'turned on message previews in notifications';
    default:
      return 'changed the conversation';
  }
}
