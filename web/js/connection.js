// One WebSocket to the engine with reconnect, backoff and request/reply by `rid`.
// It knows nothing about chat state: the app hears every server message and
// every change of connection state.

import { decode, CLOSE_TOKEN_EXPIRED, CLOSE_TOO_MANY_CONNECTIONS } from './protocol.js';

/** Backoff between reconnects: doubling from the first delay up to the cap, with jitter. */
export const RECONNECT_FIRST_MS = 250;
export const RECONNECT_CAP_MS = 8000;
/** After 4004 (too many connections for this user) wait longer. */
export const RECONNECT_CROWDED_MS = 30000;
/** A request without a reply by then is failed (the connection is probably dead). */
export const REQUEST_TIMEOUT_MS = 15000;
/** Requests waiting for a reply at once; more wait in line. */
export const REQUESTS_IN_FLIGHT_MAX = 16;
/** A socket that has not opened by then is dropped and retried. */
export const CONNECT_TIMEOUT_MS = 10000;

export class RequestError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/**
 * States: 'connecting' (socket opening), 'open' (welcome seen; the app syncs),
 * 'waiting' (closed, reconnect scheduled at `retryAt`), 'stopped'.
 */
export class Connection {
  constructor({ url, onMessage, onState }) {
    this.url = url;
    this.onMessage = onMessage;
    this.onState = onState;
    this.state = 'stopped';
    this.ws = null;
    this.attempt = 0;
    this.retryAt = 0;
    this.timer = null;
    this.lastClose = null;
    /** Attempts in a row that closed before a `welcome` (refused upgrade, or no server). */
    this.failedOpens = 0;
    this.nextRid = 1;
    /** rid → {resolve, reject, timer} */
    this.pending = new Map();
    /** Requests waiting for a slot: {build, resolve, reject}. */
    this.queue = [];
  }

  start() {
    if (this.state !== 'stopped') return;
    this.connect();
  }

  stop() {
    this.setState('stopped');
    clearTimeout(this.timer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = null;
      ws.close(1000, 'signed out');
    }
    this.failAll(new RequestError('disconnected', 'signed out'));
  }

  /** Reconnects now instead of at the scheduled time (the browser came back online). */
  kick() {
    if (this.state === 'waiting') {
      clearTimeout(this.timer);
      this.connect();
    }
  }

  /** Drops the current connection; the usual backoff reconnects. */
  restart() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.close(1000, 'reconnecting');
  }

  setState(state) {
    this.state = state;
    this.onState(state);
  }

  connect() {
    this.setState('connecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this.lastClose = { code: 0, reason: String(e) };
      this.schedule(RECONNECT_CAP_MS);
      return;
    }
    this.ws = ws;
    const opening = setTimeout(() => {
      if (ws.readyState === WebSocket.CONNECTING) ws.close();
    }, CONNECT_TIMEOUT_MS);
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      let type;
      let fields;
      try {
        [type, fields] = decode(ev.data);
      } catch (e) {
        console.warn('undecodable server message', e);
        return;
      }
      if (type === 'welcome') {
        clearTimeout(opening);
        this.failedOpens = 0;
        this.setState('open');
      }
      if (this.settle(type, fields)) return;
      this.onMessage(type, fields);
    };
    ws.onclose = (ev) => {
      clearTimeout(opening);
      if (this.ws !== ws) return;
      this.ws = null;
      this.lastClose = { code: ev.code, reason: ev.reason };
      if (this.state === 'connecting') this.failedOpens += 1;
      this.failAll(new RequestError('disconnected', 'connection closed'));
      if (ev.code === CLOSE_TOKEN_EXPIRED) {
        this.setState('stopped');
        this.onMessage('expired', {});
        return;
      }
      this.schedule(ev.code === CLOSE_TOO_MANY_CONNECTIONS ? RECONNECT_CROWDED_MS : null);
    };
  }

  schedule(fixedMs) {
    const exp = Math.min(RECONNECT_CAP_MS, RECONNECT_FIRST_MS * 2 ** Math.min(this.attempt, 10));
    const ms = fixedMs ?? Math.round(exp * (0.5 + Math.random() * 0.5));
    this.attempt += 1;
    this.retryAt = Date.now() + ms;
    this.setState('waiting');
    this.timer = setTimeout(() => this.connect(), ms);
  }

  /** The catch-up finished: the next disconnect starts backing off from the first delay. */
  healthy() {
    this.attempt = 0;
  }

  /** Sends a message that needs no reply; false if the socket is not open. */
  send(obj) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || this.state !== 'open') return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  /**
   * Sends `build(rid)` and resolves with the reply's [type, fields], or rejects
   * with a RequestError (an `error` reply, a timeout or a lost connection).
   */
  request(build) {
    return new Promise((resolve, reject) => {
      this.queue.push({ build, resolve, reject });
      this.pump();
    });
  }

  pump() {
    while (this.queue.length > 0 && this.pending.size < REQUESTS_IN_FLIGHT_MAX) {
      const { build, resolve, reject } = this.queue.shift();
      const rid = this.nextRid;
      this.nextRid = this.nextRid >= 0xffffffff ? 1 : this.nextRid + 1;
      if (!this.send(build(rid))) {
        reject(new RequestError('disconnected', 'not connected'));
        continue;
      }
      const timer = setTimeout(() => {
        this.pending.delete(rid);
        reject(new RequestError('timeout', 'no reply'));
        this.pump();
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(rid, { resolve, reject, timer });
    }
  }

  /** Resolves the request a reply answers; true if it was one. */
  settle(type, fields) {
    const rid = fields && typeof fields.rid === 'number' ? fields.rid : null;
    if (rid === null || !this.pending.has(rid)) return false;
    const p = this.pending.get(rid);
    this.pending.delete(rid);
    clearTimeout(p.timer);
    if (type === 'error') p.reject(new RequestError(fields.code, fields.message));
    else p.resolve([type, fields]);
    this.pump();
    return true;
  }

  failAll(err) {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    for (const q of this.queue.splice(0)) q.reject(err);
  }
}
