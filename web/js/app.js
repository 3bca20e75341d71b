// The controller: connects the socket, the chat state and the view, and turns
// user actions into protocol requests.

import { Connection, RequestError } from './connection.js';
import { ChatState } from './state.js';
import { View } from './view.js';
import {
  BODY_BYTES_MAX, FETCH_LIMIT_MAX, GROUP_OP_USERS_MAX, PRESENCE_SUBSCRIPTIONS_MAX,
  SYNC_POSITIONS_MAX, TITLE_BYTES_MAX, isRetryable, msg, newCmid, parseId, parseIdList, utf8Bytes,
} from './protocol.js';

/** Entries fetched when a conversation is first shown, and per page when scrolling up. */
const PAGE_LIMIT = 50;
/** Entries fetched per conversation after a sync, for the list's last message and unread count. */
const PREVIEW_LIMIT = 20;
/** Typing: repeat `active` this often while typing; stop after this long without a key. */
const TYPING_REPEAT_MS = 3000;
const TYPING_IDLE_MS = 4000;
/** Batching of `recv` cursors. */
const RECV_DELAY_MS = 150;
/** A send refused as retryable (rate limited, overloaded) is tried again after this. */
const SEND_RETRY_MS = 1500;
/** Failed connection attempts in a row before asking whether the server is up at all. */
const REFUSED_AFTER_FAILURES = 3;

export class App {
  constructor({ token, user, device, onSignOut }) {
    this.me = { user, device };
    this.onSignOut = onSignOut;
    const key = `switchboard.outbox.${user}.${device}`;
    this.state = new ChatState(this.me, {
      load: () => {
        try {
          return JSON.parse(localStorage.getItem(key) ?? '[]');
        } catch {
          return [];
        }
      },
      save: (entries) => {
        try {
          localStorage.setItem(key, JSON.stringify(entries));
        } catch {
          // Storage full or disabled: the outbox still lives in memory.
        }
      },
    });
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    this.conn = new Connection({
      url: `${scheme}://${location.host}/ws?token=${encodeURIComponent(token)}`,
      onMessage: (type, f) => this.onMessage(type, f),
      onState: (state) => {
        if (state !== 'open') {
          this.live = false;
          this.state.clearLive();
        }
        if (state === 'waiting') this.probe();
        this.changed();
      },
    });
    /** Synced and live on the current connection. */
    this.live = false;
    this.everLive = false;
    this.openId = null;
    this.panelOpen = false;
    /** Per conversation: a page fetch or gap fill under way. */
    this.loadingOlder = new Set();
    this.filling = new Set();
    this.infoWanted = new Set();
    this.watched = '';
    this.typingConv = null;
    this.typingSentAt = 0;
    this.typingIdle = null;
    this.recvTimer = null;
    /** Set when the server answers HTTP but keeps refusing the WebSocket (a bad token). */
    this.refused = false;
    this.view = new View(this);
  }

  start() {
    this.view.bind();
    this.conn.start();
    addEventListener('online', () => this.conn.kick());
    document.addEventListener('visibilitychange', () => this.markOpenRead());
    // Typing indicators expire and "reconnecting in…" counts down.
    setInterval(() => this.changed(), 1000);
    this.changed();
  }

  /**
   * The socket keeps failing before `welcome`: if the server answers plain HTTP, it is
   * refusing this session (browsers hide the upgrade's 401), not down.
   */
  async probe() {
    if (this.conn.failedOpens < REFUSED_AFTER_FAILURES) {
      this.refused = false;
      return;
    }
    try {
      const r = await fetch('/v1/info', { cache: 'no-store' });
      this.refused = r.ok;
    } catch {
      this.refused = false;
    }
    this.changed();
  }

  signOut(reason) {
    this.conn.stop();
    this.onSignOut(reason);
  }

  changed() {
    this.view.schedule();
  }

  // ---- the server ----------------------------------------------------

  onMessage(type, f) {
    const s = this.state;
    switch (type) {
      case 'welcome':
        if (f.user !== this.me.user || f.device !== this.me.device) {
          this.signOut('The token is for another user or device.');
          return;
        }
        s.onWelcome(f, Date.now());
        this.live = false;
        // A new connection has no presence subscription yet.
        this.watched = '';
        this.sync();
        break;
      case 'msg':
        this.onEntry(f);
        break;
      case 'ack':
        this.afterInsert(f.conv, s.onAck(f));
        break;
      case 'receipt':
        s.onReceipt(f);
        break;
      case 'typing':
        s.onTyping(f, Date.now());
        // Someone typing in a conversation this device has not seen yet (a new 1:1).
        if (!s.conv(f.conv).known) this.loadInfo(f.conv, false);
        break;
      case 'presence':
        s.onPresence(f);
        break;
      case 'error':
        this.onError(f);
        break;
      case 'expired':
        this.signOut('Your session expired. Sign in again.');
        return;
      default:
        // Replies whose request was given up on (timed out) land here; nothing to do.
        break;
    }
    this.changed();
  }

  onEntry(m) {
    const s = this.state;
    const c = s.conv(m.conv);
    this.afterInsert(m.conv, s.onMsg(m));
    if (!c.known || ChatState.changesMembers(m)) this.loadInfo(m.conv, true);
  }

  /** After a stream entry or an ack: fill a gap, move the cursors. */
  afterInsert(conv, gapAfter) {
    if (gapAfter !== null && gapAfter !== undefined) this.fillGap(conv);
    this.scheduleRecv();
    if (conv === this.openId) this.markOpenRead();
  }

  onError(f) {
    if (f.cmid !== null && f.cmid !== undefined) {
      const retryable = isRetryable(f.code);
      this.state.onSendError(f.cmid, f.code, f.message, retryable);
      if (retryable) setTimeout(() => this.resend(f.cmid), SEND_RETRY_MS);
      return;
    }
    console.warn('server error', f.code, f.message);
  }

  async sync() {
    const since = this.state.syncSince(SYNC_POSITIONS_MAX);
    let synced;
    try {
      [, synced] = await this.conn.request((rid) => msg.sync(rid, since));
    } catch (e) {
      // Dropped during the catch-up (the next connection syncs again), or refused
      // (overloaded): start over on a new connection, with backoff.
      console.warn('sync failed', e.code ?? e);
      this.conn.restart();
      return;
    }
    const s = this.state;
    s.onSynced(synced);
    this.live = true;
    this.everLive = true;
    this.conn.healthy();
    for (const e of s.unsent()) this.conn.send(msg.send(e.conv, e.cmid, e.body));
    for (const c of s.convs.values()) {
      if (!c.known) this.loadInfo(c.id, false);
      if (c.msgs.size === 0 && c.lastSeq > 0) this.loadLatest(c.id, PREVIEW_LIMIT);
      else if (c.gapAfter() !== null) this.fillGap(c.id);
    }
    this.scheduleRecv();
    this.markOpenRead();
    if (this.openId) this.loadReceipts(this.openId);
    this.watch();
    this.changed();
  }

  // ---- reads -----------------------------------------------------------

  async loadInfo(conv, refresh) {
    if (this.infoWanted.has(conv)) return;
    if (!refresh && this.state.conv(conv).known) return;
    this.infoWanted.add(conv);
    try {
      const [, reply] = await this.conn.request((rid) => msg.convGet(rid, conv));
      this.state.onConvInfo(reply.conv);
      this.watch();
    } catch (e) {
      if (e instanceof RequestError && (e.code === 'forbidden' || e.code === 'not_found')) {
        this.state.onForbidden(conv);
      }
    } finally {
      this.infoWanted.delete(conv);
      this.changed();
    }
  }

  /** The members' stored cursors, for the ticks of messages sent before this page loaded. */
  async loadReceipts(conv) {
    try {
      const [, reply] = await this.conn.request((rid) => msg.receiptsGet(rid, conv));
      this.state.onReceipts(reply);
    } catch {
      // Best effort, like live receipts: the next open asks again.
    } finally {
      this.changed();
    }
  }

  async fetchPage(conv, from, limit) {
    try {
      const [, h] = await this.conn.request((rid) => msg.fetch(rid, conv, from, limit));
      const more = this.state.onHistory(h, from);
      this.scheduleRecv();
      return more;
    } catch (e) {
      if (e instanceof RequestError && e.code === 'forbidden') this.state.onForbidden(conv);
      return null;
    } finally {
      this.changed();
    }
  }

  async loadLatest(conv, limit) {
    if (this.loadingOlder.has(conv)) return;
    this.loadingOlder.add(conv);
    await this.fetchPage(conv, 'latest', limit);
    this.loadingOlder.delete(conv);
    if (conv === this.openId) this.markOpenRead();
  }

  /** One page below the oldest held entry (scrolling up). */
  async loadOlder(conv) {
    const c = this.state.conv(conv);
    if (this.loadingOlder.has(conv) || !c.hasOlder() || !this.live) return;
    if (c.msgs.size === 0) {
      await this.loadLatest(conv, PAGE_LIMIT);
      return;
    }
    this.loadingOlder.add(conv);
    this.changed();
    await this.fetchPage(conv, { before: c.lo }, PAGE_LIMIT);
    this.loadingOlder.delete(conv);
    this.changed();
  }

  /** Fetches `after` the contiguous run until the gap above it is closed. */
  async fillGap(conv) {
    if (this.filling.has(conv)) return;
    this.filling.add(conv);
    try {
      const c = this.state.conv(conv);
      while (c.gapAfter() !== null) {
        const more = await this.fetchPage(conv, { after: c.hi }, FETCH_LIMIT_MAX);
        if (more === null) break;
        if (!more) break;
      }
    } finally {
      this.filling.delete(conv);
    }
    if (conv === this.openId) this.markOpenRead();
  }

  // ---- cursors, presence -----------------------------------------------

  scheduleRecv() {
    if (this.recvTimer !== null) return;
    this.recvTimer = setTimeout(() => {
      this.recvTimer = null;
      if (!this.live) return;
      for (const [conv, seq] of this.state.recvDue()) this.conn.send(msg.recv(conv, seq));
    }, RECV_DELAY_MS);
  }

  markOpenRead() {
    if (!this.openId || !this.live || document.visibilityState !== 'visible') return;
    const c = this.state.conv(this.openId);
    const before = c.readSent;
    const seq = this.state.markRead(this.openId);
    if (seq !== null && !this.conn.send(msg.read(this.openId, seq))) c.readSent = before;
    this.changed();
  }

  async watch() {
    const users = this.state.watchList(PRESENCE_SUBSCRIPTIONS_MAX);
    const key = users.join(',');
    if (key === this.watched || !this.live) return;
    this.watched = key;
    try {
      await this.conn.request((rid) => msg.presenceSubscribe(rid, users));
    } catch {
      this.watched = '';
    }
  }

  // ---- user actions ----------------------------------------------------

  openConv(conv) {
    if (this.openId !== conv) this.stopTyping();
    this.openId = conv;
    this.panelOpen = false;
    const c = this.state.conv(conv);
    if (this.live) {
      if (!c.known) this.loadInfo(conv, false);
      this.loadReceipts(conv);
      if (c.msgs.size < PAGE_LIMIT && c.hasOlder()) this.loadOlder(conv);
    }
    this.markOpenRead();
    this.changed();
  }

  closeConv() {
    this.stopTyping();
    this.openId = null;
    this.panelOpen = false;
    this.changed();
  }

  /** Queues a message in the open conversation; returns an error text or null. */
  sendText(text) {
    const body = text.trim();
    if (!this.openId || body.length === 0) return null;
    if (utf8Bytes(body) > BODY_BYTES_MAX) return `A message is at most ${BODY_BYTES_MAX} bytes.`;
    const e = this.state.queueSend(this.openId, newCmid(), body, Date.now());
    this.stopTyping();
    if (this.live) this.conn.send(msg.send(e.conv, e.cmid, e.body));
    this.changed();
    return null;
  }

  resend(cmid) {
    const e = this.state.retry(cmid);
    if (e && this.live) this.conn.send(msg.send(e.conv, e.cmid, e.body));
    this.changed();
  }

  discard(cmid) {
    this.state.discard(cmid);
    this.changed();
  }

  /** The composer changed: send `typing` (repeated while typing, stopped when idle). */
  typed(text) {
    if (!this.openId || !this.live) return;
    if (text.trim().length === 0) {
      this.stopTyping();
      return;
    }
    const now = Date.now();
    if (this.typingConv !== this.openId || now - this.typingSentAt >= TYPING_REPEAT_MS) {
      this.stopTyping();
      this.conn.send(msg.typing(this.openId, true));
      this.typingConv = this.openId;
      this.typingSentAt = now;
    }
    clearTimeout(this.typingIdle);
    this.typingIdle = setTimeout(() => this.stopTyping(), TYPING_IDLE_MS);
  }

  stopTyping() {
    clearTimeout(this.typingIdle);
    if (this.typingConv !== null) {
      this.conn.send(msg.typing(this.typingConv, false));
      this.typingConv = null;
      this.typingSentAt = 0;
    }
  }

  async startDirect(userText) {
    const user = parseId(userText);
    if (user === null) throw new Error('A user id is a number.');
    if (user === this.me.user) throw new Error('That is you.');
    const [, reply] = await this.request((rid) => msg.directOpen(rid, user));
    this.state.onConvInfo(reply.conv);
    this.openConv(reply.conv.conv);
    this.watch();
  }

  async createGroup(title, membersText) {
    const members = parseIdList(membersText);
    if (members === null) throw new Error('Members are user ids separated by commas.');
    const others = members.filter((u) => u !== this.me.user);
    if (others.length > GROUP_OP_USERS_MAX) throw new Error(`At most ${GROUP_OP_USERS_MAX} members at once.`);
    if (utf8Bytes(title) > TITLE_BYTES_MAX) throw new Error(`A title is at most ${TITLE_BYTES_MAX} bytes.`);
    const [, reply] = await this.request((rid) => msg.groupCreate(rid, title.trim(), others));
    this.state.onConvInfo(reply.conv);
    this.openConv(reply.conv.conv);
    this.watch();
  }

  async groupOp(build) {
    const [type, reply] = await this.request(build);
    if (type === 'conv') this.state.onConvInfo(reply.conv);
    this.watch();
    this.changed();
  }

  rename(title) {
    if (utf8Bytes(title) > TITLE_BYTES_MAX) return Promise.reject(new Error('Title too long.'));
    return this.groupOp((rid) => msg.groupRename(rid, this.openId, title.trim()));
  }

  addMembers(text) {
    const users = parseIdList(text);
    if (users === null || users.length === 0) return Promise.reject(new Error('Give user ids separated by commas.'));
    return this.groupOp((rid) => msg.groupAdd(rid, this.openId, users));
  }

  removeMember(user) {
    return this.groupOp((rid) => msg.groupRemove(rid, this.openId, [user]));
  }

  async leave() {
    const conv = this.openId;
    await this.request((rid) => msg.groupLeave(rid, conv));
    this.state.conv(conv).gone = true;
    this.closeConv();
  }

  /** A request from a user action: refused at once while offline, with a readable error. */
  async request(build) {
    if (!this.live) throw new Error('Not connected; try again when the banner is gone.');
    try {
      return await this.conn.request(build);
    } catch (e) {
      if (e instanceof RequestError) throw new Error(e.message || e.code);
      throw e;
    }
  }
}
