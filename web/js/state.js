// The client's model of the user's conversations: what the server has said,
// what this device holds and what it still has to send. No DOM and no
// sockets, so it runs (and is unit-tested) in Node as well as the browser.
//
// Per conversation the device holds one contiguous run of the seq stream,
// `lo..hi`, plus messages above a gap while the gap is being fetched
// (docs/PROTOCOL.md, "Detecting gaps"). Older history is paged in below
// `lo`; `recv` is sent for `hi` only, the gap-free prefix.

import { describeEvent, isGroupId } from './protocol.js';

/** How long a `typing` stays shown without a refresh (senders repeat it every few seconds). */
export const TYPING_SHOWN_MS = 6000;
/** Messages kept per conversation; older ones are dropped and paged in again on scroll. */
export const HELD_PER_CONV_MAX = 5000;
/** Unsent messages kept across reloads. */
export const OUTBOX_MAX = 500;

export class Conv {
  constructor(id) {
    this.id = id;
    this.kind = isGroupId(id) ? 'group' : 'direct';
    /** Title and members are known once a `conv` reply arrived. */
    this.known = false;
    this.title = '';
    /** user → {role, joined} */
    this.members = new Map();
    this.lastSeq = 0;
    /** This device's recv cursor as the server last reported it, and what we sent since. */
    this.delivered = 0;
    this.recvSent = 0;
    /** The user's read cursor (any device). */
    this.read = 0;
    this.readSent = 0;
    /** seq → message */
    this.msgs = new Map();
    this.lo = 0;
    this.hi = 0;
    /** Paging below `lo` found the start of what this member may see. */
    this.olderDone = false;
    /** user → {delivered, read}, from receipts. */
    this.receipts = new Map();
    /** user → time the typing indicator expires. */
    this.typing = new Map();
    /** No longer a member (removed, or left): read-only. */
    this.gone = false;
    /** The highest held seq (0: none), and the held entries in seq order once asked for. */
    this.top = 0;
    this.order = null;
  }

  /** The newest held message (text or event), if any. */
  newest() {
    return this.msgs.get(this.top) ?? null;
  }

  /** Held messages in seq order (kept until the held set changes: the view asks every frame). */
  sorted() {
    this.order ??= [...this.msgs.values()].sort((a, b) => a.seq - b.seq);
    return this.order;
  }

  hasOlder() {
    if (this.olderDone) return false;
    if (this.msgs.size === 0) return this.lastSeq > 0;
    return this.lo > 1;
  }

  /** The seq just below a gap above `hi`, if messages are held past one. */
  gapAfter() {
    return this.top > this.hi + 1 ? this.hi : null;
  }
}

export class ChatState {
  /**
   * @param {{user: string, device: string}} me
   * @param {{load?: () => any[], save?: (entries: any[]) => void}} outboxStore
   */
  constructor(me, outboxStore = {}) {
    this.me = me;
    /** conv id → Conv */
    this.convs = new Map();
    /** user → {status, last_seen} */
    this.presence = new Map();
    /** Unacknowledged sends in the order they were made: {cmid, conv, body, ts, failed}. */
    this.outbox = [];
    this.saveOutbox = outboxStore.save ?? (() => {});
    for (const e of outboxStore.load?.() ?? []) {
      if (e && typeof e.cmid === 'string' && typeof e.conv === 'string' && typeof e.body === 'string') {
        this.outbox.push({ cmid: e.cmid, conv: e.conv, body: e.body, ts: Number(e.ts) || 0, failed: e.failed ?? null });
        this.conv(e.conv);
      }
    }
    /** Server clock minus local clock, from `welcome`. */
    this.clockSkew = 0;
  }

  conv(id) {
    let c = this.convs.get(id);
    if (!c) {
      c = new Conv(id);
      this.convs.set(id, c);
    }
    return c;
  }

  name(user) {
    return user === this.me.user ? 'You' : `User ${user}`;
  }

  // ---- server messages -------------------------------------------------

  onWelcome(w, localNow) {
    this.clockSkew = w.time - localNow;
  }

  /**
   * Takes one stream entry (live, from a catch-up or a page). Returns the seq
   * to fetch after if it revealed a gap, else null.
   */
  onMsg(m) {
    const c = this.conv(m.conv);
    this.insert(c, m);
    const ev = m.content.event;
    if (ev) this.applyEvent(c, m, ev);
    return c.gapAfter();
  }

  insert(c, m) {
    if (c.msgs.has(m.seq)) return;
    c.msgs.set(m.seq, m);
    c.order = null;
    c.top = Math.max(c.top, m.seq);
    c.lastSeq = Math.max(c.lastSeq, m.seq);
    if (c.msgs.size === 1) {
      c.lo = m.seq;
      c.hi = m.seq;
    }
    while (c.msgs.has(c.lo - 1)) c.lo -= 1;
    while (c.msgs.has(c.hi + 1)) c.hi += 1;
    if (c.msgs.size > HELD_PER_CONV_MAX) this.trim(c);
  }

  /** Drops the oldest held messages past the bound; they page in again on scroll. */
  trim(c) {
    const seqs = [...c.msgs.keys()].sort((a, b) => a - b);
    const drop = seqs.length - HELD_PER_CONV_MAX;
    for (let i = 0; i < drop; i += 1) c.msgs.delete(seqs[i]);
    c.order = null;
    c.lo = seqs[drop];
    c.olderDone = false;
    if (c.hi < c.lo) c.hi = c.lo;
    while (c.msgs.has(c.hi + 1)) c.hi += 1;
  }

  applyEvent(c, m, ev) {
    const [kind, f] = Object.entries(ev)[0] ?? [];
    if (kind === 'created' || kind === 'renamed') c.title = f.title;
    if (kind === 'removed' && f.users.includes(this.me.user)) c.gone = true;
    if (kind === 'left' && f.user === this.me.user) c.gone = true;
    if ((kind === 'added' && f.users.includes(this.me.user)) || kind === 'created') {
      if (m.seq >= c.hi) c.gone = false;
    }
  }

  /** Whether a stream entry changes membership (the caller re-reads the conversation). */
  static changesMembers(m) {
    const ev = m.content.event;
    if (!ev) return false;
    const kind = Object.keys(ev)[0];
    return kind !== 'renamed' && kind !== 'history_visible' && kind !== 'private';
  }

  onAck(a) {
    const i = this.outbox.findIndex((e) => e.cmid === a.cmid);
    if (i < 0) return null;
    const [e] = this.outbox.splice(i, 1);
    this.saveOutbox(this.outbox);
    const c = this.conv(a.conv);
    this.insert(c, {
      conv: a.conv, seq: a.seq, id: a.id, from: this.me.user, device: this.me.device, ts: a.ts,
      content: { text: e.body },
    });
    return c.gapAfter();
  }

  /** A `send` failed; retryable errors keep it queued, others mark it failed. */
  onSendError(cmid, code, message, retryable) {
    const e = this.outbox.find((x) => x.cmid === cmid);
    if (!e) return;
    if (!retryable) {
      e.failed = `${code}: ${message}`;
      this.saveOutbox(this.outbox);
    }
  }

  onReceipt(r) {
    const c = this.conv(r.conv);
    if (r.user === this.me.user) {
      // Another device of this user: keeps unread counts in step.
      if (r.kind === 'read') c.read = Math.max(c.read, r.seq);
      return;
    }
    const cur = c.receipts.get(r.user) ?? { delivered: 0, read: 0 };
    if (r.kind === 'read') cur.read = Math.max(cur.read, r.seq);
    cur.delivered = Math.max(cur.delivered, r.seq);
    c.receipts.set(r.user, cur);
  }

  /** Every member's stored cursors (a `receipts` reply): catches up on receipts missed while away. */
  onReceipts(r) {
    for (const m of r.members) this.onReceiptPair(r.conv, m.user, m.delivered, m.read);
  }

  onReceiptPair(conv, user, delivered, read) {
    if (read > 0) this.onReceipt({ conv, user, kind: 'read', seq: read });
    if (delivered > 0) this.onReceipt({ conv, user, kind: 'delivered', seq: delivered });
  }

  onTyping(t, localNow) {
    if (t.user === this.me.user) return;
    const c = this.conv(t.conv);
    if (t.active) c.typing.set(t.user, localNow + TYPING_SHOWN_MS);
    else c.typing.delete(t.user);
  }

  /** The connection dropped: live-only state (typing) is no longer known. */
  clearLive() {
    for (const c of this.convs.values()) c.typing.clear();
  }

  onPresence(p) {
    this.presence.set(p.user, { status: p.status, lastSeen: p.last_seen });
  }

  /** Returns whether more pages remain in the direction fetched. */
  onHistory(h, from) {
    const c = this.conv(h.conv);
    for (const m of h.msgs) this.onMsg(m);
    if (typeof from === 'object' && 'before' in from && !h.more) c.olderDone = true;
    if (typeof from === 'object' && 'after' in from && !h.more) {
      // Everything this member may see after `from.after` is held now: what is still
      // missing (messages from while it was not a member) it will never get.
      while (c.gapAfter() !== null) {
        c.hi = Math.min(...[...c.msgs.keys()].filter((seq) => seq > c.hi));
        while (c.msgs.has(c.hi + 1)) c.hi += 1;
      }
    }
    if (from === 'latest' && !h.more) c.olderDone = true;
    return h.more;
  }

  onSynced(s) {
    for (const x of s.convs) {
      const c = this.conv(x.conv);
      c.kind = x.kind;
      c.lastSeq = Math.max(c.lastSeq, x.last_seq);
      // The server's cursors are the truth: a `recv` or `read` lost with the last
      // connection is sent again.
      c.delivered = x.delivered;
      c.recvSent = x.delivered;
      c.read = Math.max(c.read, x.read);
      c.readSent = x.read;
      c.gone = false;
    }
  }

  onConvInfo(info) {
    const c = this.conv(info.conv);
    c.kind = info.kind;
    c.title = info.title;
    c.members = new Map(info.members.map((m) => [m.user, { role: m.role, joined: m.joined }]));
    c.lastSeq = Math.max(c.lastSeq, info.last_seq);
    c.known = true;
    c.gone = !c.members.has(this.me.user);
  }

  /** The conversation is not ours (any more): `forbidden` on a read of it. */
  onForbidden(conv) {
    this.conv(conv).gone = true;
  }

  // ---- local actions ---------------------------------------------------

  queueSend(conv, cmid, body, localNow) {
    const e = { cmid, conv, body, ts: localNow + this.clockSkew, failed: null };
    this.outbox.push(e);
    if (this.outbox.length > OUTBOX_MAX) this.outbox.shift();
    this.saveOutbox(this.outbox);
    return e;
  }

  /** Sends still to (re)send, oldest first. */
  unsent() {
    return this.outbox.filter((e) => !e.failed);
  }

  discard(cmid) {
    this.outbox = this.outbox.filter((e) => e.cmid !== cmid);
    this.saveOutbox(this.outbox);
  }

  retry(cmid) {
    const e = this.outbox.find((x) => x.cmid === cmid);
    if (e) e.failed = null;
    this.saveOutbox(this.outbox);
    return e ?? null;
  }

  /** Sync positions: everything held contiguously, so the catch-up starts above it. */
  syncSince(max) {
    const since = [];
    for (const c of this.convs.values()) {
      if (c.hi > 0 && since.length < max) since.push({ conv: c.id, seq: c.hi });
    }
    return since;
  }

  /** `recv` positions not yet sent: [conv, seq]. */
  recvDue() {
    const due = [];
    for (const c of this.convs.values()) {
      if (c.hi > c.recvSent && !c.gone) {
        due.push([c.id, c.hi]);
        c.recvSent = c.hi;
      }
    }
    return due;
  }

  /** Marks a conversation read up to its newest held entry; the seq to send, or null. */
  markRead(convId) {
    const c = this.convs.get(convId);
    if (!c || c.gone) return null;
    const top = c.hi;
    if (top <= c.read && top <= c.readSent) return null;
    c.read = Math.max(c.read, top);
    if (top <= c.readSent) return null;
    c.readSent = top;
    return top;
  }

  // ---- derived views ---------------------------------------------------

  unread(c) {
    let n = 0;
    for (const m of c.msgs.values()) {
      if (m.seq > c.read && m.from !== this.me.user && m.content.text !== undefined) n += 1;
    }
    // Entries after the read cursor that this device does not hold count too.
    if (c.msgs.size === 0) return Math.max(0, c.lastSeq - c.read);
    n += Math.max(0, c.lo - 1 - c.read);
    n += Math.max(0, c.lastSeq - Math.max(c.top, c.read));
    return n;
  }

  peer(c) {
    for (const u of c.members.keys()) if (u !== this.me.user) return u;
    return null;
  }

  title(c) {
    if (c.kind === 'group') return c.title || (c.known ? 'Untitled group' : 'Group');
    const p = this.peer(c);
    return p ? this.name(p) : 'Direct chat';
  }

  /** The one-line preview of a stream entry. */
  preview(m) {
    if (m.content.text !== undefined) {
      const who = m.from === this.me.user ? 'You: ' : '';
      return who + m.content.text;
    }
    return `${this.name(m.from)} ${describeEvent(m.content.event, (u) => this.name(u))}`;
  }

  /** The conversation list, most recent activity first. */
  list() {
    const rows = [];
    for (const c of this.convs.values()) {
      const newest = c.newest();
      const pending = this.outbox.filter((e) => e.conv === c.id);
      const lastPending = pending[pending.length - 1];
      let last = newest ? this.preview(newest) : '';
      let ts = newest ? newest.ts : 0;
      if (lastPending && lastPending.ts >= ts) {
        last = `You: ${lastPending.body}`;
        ts = lastPending.ts;
      }
      rows.push({ conv: c, title: this.title(c), last, ts, unread: this.unread(c) });
    }
    rows.sort((a, b) => b.ts - a.ts || (a.conv.id < b.conv.id ? -1 : 1));
    return rows;
  }

  /** The delivery state of this user's message `seq`: sent, delivered or read. */
  status(c, seq) {
    const others = [...c.members.keys()].filter((u) => u !== this.me.user);
    if (others.length === 0) {
      // Members not known yet: go by whatever receipts arrived.
      const rs = [...c.receipts.values()];
      if (rs.length === 0) return 'sent';
      if (rs.every((r) => r.read >= seq)) return 'read';
      return rs.every((r) => r.delivered >= seq) ? 'delivered' : 'sent';
    }
    const rs = others.map((u) => c.receipts.get(u) ?? { delivered: 0, read: 0 });
    if (rs.every((r) => r.read >= seq)) return 'read';
    if (rs.every((r) => r.delivered >= seq)) return 'delivered';
    return 'sent';
  }

  /** Who is typing in `c` now (expired entries are dropped). */
  typers(c, localNow) {
    const users = [];
    for (const [u, until] of c.typing) {
      if (until <= localNow) c.typing.delete(u);
      else users.push(u);
    }
    return users.sort();
  }

  /** Users to watch for presence: every other member of every conversation. */
  watchList(max) {
    const users = new Set();
    for (const c of this.convs.values()) {
      if (c.gone) continue;
      for (const u of c.members.keys()) if (u !== this.me.user) users.add(u);
    }
    return [...users].sort().slice(0, max);
  }
}
