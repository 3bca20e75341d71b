// Unit tests of the web client's state model and protocol helpers, in Node
// (the modules are plain ES modules with no DOM).

import test from 'node:test';
import assert from 'node:assert/strict';

import { ChatState, HELD_PER_CONV_MAX, TYPING_SHOWN_MS } from '../../web/js/state.js';
import { describeEvent, isGroupId, newCmid, parseId, parseIdList } from '../../web/js/protocol.js';

const ME = { user: '1', device: '1' };
const DIRECT = '4294967298';
const GROUP = '9223372036854775812';

function text(conv, seq, from, body = `m${seq}`) {
  return { conv, seq, id: String(1000 + seq), from, device: '1', ts: 1000 * seq, content: { text: body } };
}

function event(conv, seq, from, ev) {
  return { conv, seq, id: String(1000 + seq), from, device: '1', ts: 1000 * seq, content: { event: ev } };
}

test('ids: decimal u64 strings only', () => {
  assert.equal(parseId(' 42 '), '42');
  assert.equal(parseId('007'), '7');
  assert.equal(parseId('18446744073709551615'), '18446744073709551615');
  assert.equal(parseId('18446744073709551616'), null);
  for (const bad of ['', '-1', '1.5', '1e3', 'abc', '0x10']) assert.equal(parseId(bad), null, bad);
  assert.deepEqual(parseIdList('2, 3 3,,4'), ['2', '3', '4']);
  assert.equal(parseIdList('2, x'), null);
  assert.equal(isGroupId(GROUP), true);
  assert.equal(isGroupId(DIRECT), false);
  const a = newCmid();
  assert.match(a, /^[0-9]{1,20}$/);
  assert.notEqual(a, newCmid());
});

test('group events read as sentences', () => {
  const name = (u) => `User ${u}`;
  assert.equal(describeEvent({ renamed: { title: 'Climbing' } }, name), 'renamed the group to “Climbing”');
  assert.equal(describeEvent({ added: { users: ['2', '3'] } }, name), 'added User 2, User 3');
  assert.equal(describeEvent({ role_changed: { user: '2', role: 'admin' } }, name), 'made User 2 an admin');
});

test('entries are held once, as a contiguous run, and a gap is reported until filled', () => {
  const s = new ChatState(ME);
  assert.equal(s.onMsg(text(DIRECT, 5, '2')), null);
  assert.equal(s.onMsg(text(DIRECT, 5, '2')), null, 'a duplicate changes nothing');
  assert.equal(s.onMsg(text(DIRECT, 6, '2')), null);
  const c = s.conv(DIRECT);
  assert.deepEqual([c.lo, c.hi, c.msgs.size], [5, 6, 2]);
  assert.equal(s.onMsg(text(DIRECT, 9, '2')), 6, 'seq 9 after 6 is a gap after 6');
  assert.equal(c.hi, 6);
  s.onHistory({ conv: DIRECT, msgs: [text(DIRECT, 7, '2'), text(DIRECT, 8, '1')], more: false }, { after: 6 });
  assert.equal(c.gapAfter(), null);
  assert.equal(c.hi, 9);
  // A page below the run extends it down; the last page says where history starts.
  s.onHistory({ conv: DIRECT, msgs: [text(DIRECT, 3, '2'), text(DIRECT, 4, '2')], more: true }, { before: 5 });
  assert.equal(c.lo, 3);
  assert.equal(c.hasOlder(), true);
  s.onHistory({ conv: DIRECT, msgs: [text(DIRECT, 1, '2'), text(DIRECT, 2, '2')], more: false }, { before: 3 });
  assert.equal(c.lo, 1);
  assert.equal(c.hasOlder(), false);
  assert.deepEqual(c.sorted().map((m) => m.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
});

test('a member who joined late has no older history once a page says so', () => {
  const s = new ChatState(ME);
  s.onMsg(event(GROUP, 7, '2', { added: { users: ['1'] } }));
  const c = s.conv(GROUP);
  assert.equal(c.hasOlder(), true);
  s.onHistory({ conv: GROUP, msgs: [], more: false }, { before: 7 });
  assert.equal(c.hasOlder(), false);
});

test('the held run is bounded; trimmed history can be paged in again', () => {
  const s = new ChatState(ME);
  for (let seq = 1; seq <= HELD_PER_CONV_MAX + 10; seq += 1) s.onMsg(text(DIRECT, seq, '2'));
  const c = s.conv(DIRECT);
  assert.equal(c.msgs.size, HELD_PER_CONV_MAX);
  assert.equal(c.lo, 11);
  assert.equal(c.hi, HELD_PER_CONV_MAX + 10);
  assert.equal(c.hasOlder(), true);
});

test('the outbox survives a reload and an ack turns a send into a held message', () => {
  let saved = [];
  const store = { load: () => saved, save: (e) => { saved = JSON.parse(JSON.stringify(e)); } };
  const s = new ChatState(ME, store);
  s.queueSend(DIRECT, '77', 'hello', 5000);
  s.queueSend(DIRECT, '78', 'again', 5001);
  assert.equal(saved.length, 2);
  // A reload: a new state from the same storage, plus junk that must be ignored.
  saved.push({ cmid: 5 }, null);
  const t = new ChatState(ME, store);
  assert.deepEqual(t.unsent().map((e) => e.cmid), ['77', '78']);
  assert.equal(t.onAck({ cmid: '77', conv: DIRECT, seq: 1, id: '9', ts: 6000 }), null);
  assert.deepEqual(t.unsent().map((e) => e.cmid), ['78']);
  const m = t.conv(DIRECT).msgs.get(1);
  assert.equal(m.content.text, 'hello');
  assert.equal(m.from, '1');
  assert.equal(t.onAck({ cmid: '77', conv: DIRECT, seq: 1, id: '9', ts: 6000 }), null, 'a second ack is harmless');
  assert.equal(saved.length, 1);
  // A retryable error keeps the send queued; a final one marks it failed.
  t.onSendError('78', 'rate_limited', 'slow down', true);
  assert.equal(t.unsent().length, 1);
  t.onSendError('78', 'forbidden', 'not a member', false);
  assert.equal(t.unsent().length, 0);
  assert.equal(t.retry('78').cmid, '78');
  assert.equal(t.unsent().length, 1);
});

test('unread counts others’ text after the read cursor, including entries not held', () => {
  const s = new ChatState(ME);
  s.onSynced({ convs: [{ conv: DIRECT, kind: 'direct', last_seq: 10, delivered: 4, read: 2 }] });
  const c = s.conv(DIRECT);
  assert.equal(s.unread(c), 8, 'nothing held: last_seq - read');
  for (let seq = 5; seq <= 10; seq += 1) s.onMsg(text(DIRECT, seq, seq === 6 ? '1' : '2'));
  // 3 and 4 are not held (counted), 5..10 are held (6 is mine).
  assert.equal(s.unread(c), 2 + 5);
  assert.equal(s.markRead(DIRECT), 10);
  assert.equal(s.unread(c), 0);
  assert.equal(s.markRead(DIRECT), null, 'nothing new to mark');
  // Read on another device of the same user.
  s.onMsg(text(DIRECT, 11, '2'));
  assert.equal(s.unread(c), 1);
  s.onReceipt({ conv: DIRECT, user: '1', kind: 'read', seq: 11 });
  assert.equal(s.unread(c), 0);
});

test('receipts: a direct message is delivered then read; a group needs every member', () => {
  const s = new ChatState(ME);
  s.onConvInfo({ conv: DIRECT, kind: 'direct', title: '', members: [{ user: '1', role: 'member', joined: 0 }, { user: '2', role: 'member', joined: 0 }], last_seq: 0 });
  const d = s.conv(DIRECT);
  assert.equal(s.status(d, 3), 'sent');
  s.onReceipt({ conv: DIRECT, user: '2', kind: 'delivered', seq: 3 });
  assert.equal(s.status(d, 3), 'delivered');
  assert.equal(s.status(d, 4), 'sent');
  s.onReceipt({ conv: DIRECT, user: '2', kind: 'read', seq: 4 });
  assert.equal(s.status(d, 3), 'read');
  assert.equal(s.status(d, 4), 'read');
  s.onConvInfo({ conv: GROUP, kind: 'group', title: 'G', members: ['1', '2', '3'].map((user) => ({ user, role: 'member', joined: 1 })), last_seq: 5 });
  const g = s.conv(GROUP);
  s.onReceipt({ conv: GROUP, user: '2', kind: 'read', seq: 5 });
  assert.equal(s.status(g, 5), 'sent');
  s.onReceipt({ conv: GROUP, user: '3', kind: 'delivered', seq: 5 });
  assert.equal(s.status(g, 5), 'delivered');
  s.onReceipt({ conv: GROUP, user: '3', kind: 'read', seq: 5 });
  assert.equal(s.status(g, 5), 'read');
});

test('cursors: sync starts above the held run; recv is sent once per advance and again after a reconnect', () => {
  const s = new ChatState(ME);
  for (let seq = 1; seq <= 3; seq += 1) s.onMsg(text(DIRECT, seq, '2'));
  assert.deepEqual(s.syncSince(2000), [{ conv: DIRECT, seq: 3 }]);
  assert.deepEqual(s.recvDue(), [[DIRECT, 3]]);
  assert.deepEqual(s.recvDue(), []);
  // The server never got it (the connection dropped): synced reports 0, so it goes again.
  s.onSynced({ convs: [{ conv: DIRECT, kind: 'direct', last_seq: 3, delivered: 0, read: 0 }] });
  assert.deepEqual(s.recvDue(), [[DIRECT, 3]]);
});

test('typing shows for a while, stops on false, ignores this user', () => {
  const s = new ChatState(ME);
  s.onTyping({ conv: DIRECT, user: '2', active: true }, 1000);
  s.onTyping({ conv: DIRECT, user: '1', active: true }, 1000);
  const c = s.conv(DIRECT);
  assert.deepEqual(s.typers(c, 1001), ['2']);
  assert.deepEqual(s.typers(c, 1000 + TYPING_SHOWN_MS), []);
  s.onTyping({ conv: DIRECT, user: '2', active: true }, 2000);
  s.onTyping({ conv: DIRECT, user: '2', active: false }, 2001);
  assert.deepEqual(s.typers(c, 2002), []);
  // A lost connection forgets who was typing (the `false` may never come).
  s.onTyping({ conv: DIRECT, user: '2', active: true }, 3000);
  s.clearLive();
  assert.deepEqual(s.typers(c, 3001), []);
});

test('group events keep the title and membership state', () => {
  const s = new ChatState(ME);
  s.onMsg(event(GROUP, 1, '2', { created: { title: 'Climbing', members: ['1', '3'] } }));
  const c = s.conv(GROUP);
  assert.equal(c.title, 'Climbing');
  assert.equal(ChatState.changesMembers(c.msgs.get(1)), true);
  s.onMsg(event(GROUP, 2, '2', { renamed: { title: 'Bouldering' } }));
  assert.equal(c.title, 'Bouldering');
  assert.equal(ChatState.changesMembers(c.msgs.get(2)), false);
  s.onMsg(event(GROUP, 3, '2', { removed: { users: ['1'] } }));
  assert.equal(c.gone, true);
  assert.equal(s.markRead(GROUP), null, 'no read cursor for a conversation left');
  assert.deepEqual(s.list().map((r) => r.title), ['Bouldering']);
  assert.match(s.list()[0].last, /removed You/);
});

test('the conversation list is ordered by last activity, pending sends included', () => {
  const s = new ChatState(ME);
  s.onMsg(text(DIRECT, 1, '2', 'older'));
  s.onMsg(event(GROUP, 1, '2', { created: { title: 'G', members: ['1'] } }));
  s.onMsg(text(GROUP, 2, '2', 'newer'));
  assert.deepEqual(s.list().map((r) => r.last), ['newer', 'older']);
  s.queueSend(DIRECT, '5', 'latest', 10_000);
  assert.deepEqual(s.list().map((r) => r.last), ['You: latest', 'newer']);
});

test('a gap a member may not see (it was out of the group) is closed by an empty `after` page', () => {
  const s = new ChatState(ME);
  for (let seq = 1; seq <= 6; seq += 1) s.onMsg(text(GROUP, seq, '2'));
  assert.equal(s.onMsg(event(GROUP, 8, '2', { added: { users: ['1'] } })), 6);
  s.onHistory({ conv: GROUP, msgs: [event(GROUP, 8, '2', { added: { users: ['1'] } })], more: false }, { after: 6 });
  const c = s.conv(GROUP);
  assert.equal(c.gapAfter(), null);
  assert.equal(c.hi, 8);
  assert.equal(s.onMsg(text(GROUP, 9, '3')), null);
  assert.equal(c.hi, 9);
});

test('stored cursors from `receipts` fill in what live receipts missed', () => {
  const s = new ChatState(ME);
  s.onConvInfo({ conv: DIRECT, kind: 'direct', title: '', members: [{ user: '1', role: 'member', joined: 0 }, { user: '2', role: 'member', joined: 0 }], last_seq: 9 });
  const c = s.conv(DIRECT);
  s.onReceipt({ conv: DIRECT, user: '2', kind: 'read', seq: 8 });
  s.onReceipts({ conv: DIRECT, members: [{ user: '1', delivered: 9, read: 9 }, { user: '2', delivered: 9, read: 5 }] });
  assert.equal(s.status(c, 9), 'delivered');
  assert.equal(s.status(c, 8), 'read', 'an older stored cursor does not undo a live receipt');
  assert.equal(c.read, 9, 'this user’s own read cursor');
});
