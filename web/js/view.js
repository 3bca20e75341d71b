// The DOM: renders the app's state once per animation frame and forwards user
// input to the app. Text from the network only ever goes into `textContent`.

import { describeEvent } from './protocol.js';

const $ = (id) => document.getElementById(id);

/** Within this many pixels of the bottom, new messages keep the view scrolled down. */
const STICK_BOTTOM_PX = 80;
/** Within this many pixels of the top, the next page of history is fetched. */
const PAGE_AT_TOP_PX = 60;

function el(tag, cls, text) {
  const n = document.createElement(tag);
  if (cls) n.className = cls;
  if (text !== undefined) n.textContent = text;
  return n;
}

/** Sets a text only if it changed (keeps selections and avoids layout work). */
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/**
 * Makes `parent`'s children the nodes for `items`, in order, reusing the node
 * of each key: `create(item)` makes one, `update(node, item)` refreshes it.
 */
function reconcile(parent, items, key, create, update) {
  const old = new Map();
  for (const n of parent.children) old.set(n.dataset.key, n);
  let cursor = parent.firstElementChild;
  for (const item of items) {
    const k = key(item);
    let node = old.get(k);
    if (node) old.delete(k);
    else {
      node = create(item);
      node.dataset.key = k;
    }
    update(node, item);
    if (node !== cursor) parent.insertBefore(node, cursor);
    else cursor = cursor.nextElementSibling;
  }
  for (const n of old.values()) n.remove();
}

function clock(ts) {
  if (!ts) return '';
  const d = new Date(ts);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) {
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }
  return d.toLocaleDateString([], { month: 'short', day: 'numeric' });
}

function ago(ts) {
  const s = Math.max(0, Math.round((Date.now() - ts) / 1000));
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `at ${clock(ts)}`;
  return `on ${new Date(ts).toLocaleDateString()}`;
}

const GONE_TEXT = 'You are no longer a member of this conversation.';
const STATUS_TEXT = { pending: 'Sending…', sent: '✓ Sent', delivered: '✓✓ Delivered', read: '✓✓ Read', failed: 'Not sent' };

export class View {
  constructor(app) {
    this.app = app;
    this.frame = null;
    this.shownConv = null;
  }

  schedule() {
    if (this.frame !== null) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      this.render();
    });
  }

  bind() {
    const app = this.app;
    $('signin').hidden = true;
    $('app').hidden = false;
    $('me').textContent = `User ${app.me.user}`;
    $('me-device').textContent = `device ${app.me.device}`;
    $('sign-out').onclick = () => app.signOut(null);
    $('chat-back').onclick = () => app.closeConv();
    $('chat-info').onclick = () => {
      app.panelOpen = !app.panelOpen;
      this.schedule();
    };
    $('group-close').onclick = () => {
      app.panelOpen = false;
      this.schedule();
    };
    const input = $('composer-input');
    $('composer').onsubmit = (ev) => {
      ev.preventDefault();
      const err = app.sendText(input.value);
      if (err) {
        this.notice(err);
        return;
      }
      input.value = '';
      this.autosize(input);
    };
    input.onkeydown = (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        $('composer').requestSubmit();
      }
    };
    input.oninput = () => {
      this.autosize(input);
      app.typed(input.value);
    };
    $('messages').onscroll = () => {
      if ($('messages').scrollTop < PAGE_AT_TOP_PX && app.openId) app.loadOlder(app.openId);
    };
    $('message-list').onclick = (ev) => {
      const b = ev.target.closest('button[data-action]');
      if (!b) return;
      if (b.dataset.action === 'retry') app.resend(b.dataset.cmid);
      if (b.dataset.action === 'discard') app.discard(b.dataset.cmid);
    };
    $('conv-list').onclick = (ev) => {
      const li = ev.target.closest('li[data-conv]');
      if (li) app.openConv(li.dataset.conv);
    };
    this.dialog('dialog-direct', 'new-chat', 'direct-error', () => app.startDirect($('direct-user').value));
    this.dialog('dialog-group', 'new-group', 'group-create-error', () =>
      app.createGroup($('group-title').value, $('group-members').value));
    this.form('group-rename', () => app.rename($('group-rename-input').value));
    this.form('group-add', () => app.addMembers($('group-add-input').value).then(() => {
      $('group-add-input').value = '';
    }));
    $('member-list').onclick = (ev) => {
      const b = ev.target.closest('button[data-user]');
      if (b) this.guard(app.removeMember(b.dataset.user));
    };
    $('group-leave').onclick = () => this.guard(app.leave());
  }

  /** A dialog opened by a button whose form runs `action` (a promise) and closes on success. */
  dialog(dialogId, buttonId, errorId, action) {
    const d = $(dialogId);
    const form = d.querySelector('form');
    $(buttonId).onclick = () => {
      form.reset();
      $(errorId).textContent = '';
      d.showModal();
    };
    d.querySelector('.cancel').onclick = () => d.close();
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      $(errorId).textContent = '';
      try {
        await action();
        d.close();
      } catch (e) {
        $(errorId).textContent = e.message;
      }
    };
  }

  form(formId, action) {
    $(formId).onsubmit = (ev) => {
      ev.preventDefault();
      this.guard(action());
    };
  }

  guard(promise) {
    $('group-error').textContent = '';
    promise.catch((e) => {
      $('group-error').textContent = e.message;
    });
  }

  notice(text) {
    const n = $('chat-notice');
    n.textContent = text;
    n.hidden = false;
    setTimeout(() => {
      n.hidden = true;
    }, 4000);
  }

  autosize(input) {
    input.style.height = 'auto';
    input.style.height = `${Math.min(input.scrollHeight, 140)}px`;
  }

  render() {
    this.renderBanner();
    this.renderList();
    this.renderChat();
    this.renderPanel();
  }

  renderBanner() {
    const app = this.app;
    const b = $('banner');
    let state = 'hidden';
    let text = '';
    const unsent = app.state.unsent().length;
    const queued = unsent > 0 ? ` ${unsent} message${unsent > 1 ? 's' : ''} waiting to send.` : '';
    if (app.conn.state === 'waiting' && app.refused) {
      state = 'offline';
      text = 'The server refuses this session (an invalid or expired token, or too many connections). Still retrying; sign out to use another token.';
    } else if (app.conn.state === 'waiting') {
      const s = Math.max(0, Math.ceil((app.conn.retryAt - Date.now()) / 1000));
      state = 'offline';
      text = `Disconnected. Reconnecting${s > 0 ? ` in ${s} s` : ''}…${queued}`;
    } else if (app.conn.state === 'connecting') {
      state = app.everLive ? 'offline' : 'connecting';
      text = app.everLive ? `Disconnected. Reconnecting…${queued}` : 'Connecting…';
    } else if (app.conn.state === 'open' && !app.live) {
      state = 'connecting';
      text = 'Catching up…';
    }
    b.dataset.state = state;
    b.hidden = state === 'hidden';
    setText(b, text);
  }

  renderList() {
    const app = this.app;
    const s = app.state;
    const now = Date.now();
    const rows = s.list();
    $('conv-empty').hidden = rows.length > 0;
    // The tab's title counts unread conversations.
    const unread = rows.filter((r) => r.unread > 0 && r.conv.id !== app.openId).length;
    const title = unread > 0 ? `(${unread}) Switchboard` : 'Switchboard';
    if (document.title !== title) document.title = title;
    reconcile($('conv-list'), rows, (r) => r.conv.id, () => {
      const li = el('li', 'conv-item');
      const av = el('span', 'avatar');
      av.append(el('span', 'initials'), el('span', 'presence-dot'));
      li.append(av, el('span', 'conv-title'), el('span', 'conv-time'), el('span', 'conv-last'), el('span', 'conv-unread'));
      return li;
    }, (li, r) => {
      const c = r.conv;
      li.dataset.conv = c.id;
      li.setAttribute('aria-current', String(c.id === app.openId));
      const av = li.querySelector('.avatar');
      av.classList.toggle('group', c.kind === 'group');
      setText(av.querySelector('.initials'), c.kind === 'group' ? (r.title[0] ?? 'G').toUpperCase() : r.title.replace(/\D/g, '').slice(-2) || '?');
      const dot = av.querySelector('.presence-dot');
      const peer = c.kind === 'direct' ? s.peer(c) : null;
      // Presence is only known while connected.
      const p = peer && app.live ? s.presence.get(peer) : null;
      dot.hidden = !p;
      dot.dataset.status = p ? p.status : '';
      setText(li.querySelector('.conv-title'), r.title);
      setText(li.querySelector('.conv-time'), clock(r.ts));
      const typers = s.typers(c, now);
      const last = li.querySelector('.conv-last');
      last.classList.toggle('typing-now', typers.length > 0);
      setText(last, typers.length > 0 ? 'typing…' : r.last || 'No messages yet');
      setText(li.querySelector('.conv-unread'), r.unread > 0 && c.id !== app.openId ? (r.unread > 99 ? '99+' : String(r.unread)) : '');
    });
  }

  renderChat() {
    const app = this.app;
    const s = app.state;
    const open = app.openId;
    $('app').classList.toggle('has-chat', open !== null);
    $('chat').hidden = open === null;
    $('placeholder').hidden = open !== null;
    if (open === null) {
      this.shownConv = null;
      return;
    }
    const c = s.conv(open);
    const now = Date.now();
    setText($('chat-title'), s.title(c));
    const typers = s.typers(c, now);
    let status = '';
    if (c.kind === 'direct') {
      const peer = s.peer(c);
      const p = peer && app.live ? s.presence.get(peer) : null;
      if (typers.length > 0) status = 'typing…';
      else if (p && p.status === 'online') status = 'online';
      else if (p && p.lastSeen) status = `last seen ${ago(p.lastSeen)}`;
      else if (p) status = 'offline';
    } else {
      const n = c.members.size;
      status = c.known ? `${n} member${n === 1 ? '' : 's'}` : '';
    }
    setText($('chat-status'), status);
    $('chat-info').hidden = c.kind !== 'group' || c.gone;
    setText($('typing'), typers.length === 0 ? '' : `${typers.map((u) => s.name(u)).join(', ')} ${typers.length === 1 ? 'is' : 'are'} typing…`);
    const gone = c.gone;
    $('composer').hidden = gone;
    const notice = $('chat-notice');
    if (gone) {
      notice.hidden = false;
      setText(notice, GONE_TEXT);
    } else if (notice.textContent === GONE_TEXT) {
      notice.hidden = true;
      notice.textContent = '';
    }
    this.renderMessages(c);
  }

  renderMessages(c) {
    const app = this.app;
    const s = app.state;
    const box = $('messages');
    const list = $('message-list');
    const switched = this.shownConv !== c.id;
    const fromBottom = box.scrollHeight - box.scrollTop;
    const atBottom = fromBottom - box.clientHeight < STICK_BOTTOM_PX;
    const firstBefore = list.firstElementChild?.dataset.key;
    // Keys name the conversation too: a node is never reused for another conversation's entry.
    const items = c.sorted().map((m) => ({ kind: 'msg', key: `${c.id}/s${m.seq}`, m }));
    for (const e of s.outbox) if (e.conv === c.id) items.push({ kind: 'pending', key: `${c.id}/c${e.cmid}`, e });
    const group = c.kind === 'group';
    reconcile(list, items, (it) => it.key, (it) => this.createMessage(it, group), (li, it) => this.updateMessage(li, it, c));
    let top = '';
    if (app.loadingOlder.has(c.id)) top = 'Loading earlier messages…';
    else if (!c.hasOlder() && (c.msgs.size > 0 || c.known)) top = c.msgs.size > 0 ? 'Start of the conversation' : 'No messages yet';
    setText($('history-top'), top);
    if (switched) {
      this.shownConv = c.id;
      box.scrollTop = box.scrollHeight;
    } else if (list.firstElementChild?.dataset.key !== firstBefore && !atBottom) {
      box.scrollTop = box.scrollHeight - fromBottom;
    } else if (atBottom) {
      box.scrollTop = box.scrollHeight;
    }
    // A short conversation does not scroll: page in more until it does or none is left.
    if (box.scrollHeight <= box.clientHeight && c.hasOlder() && app.live) app.loadOlder(c.id);
  }

  createMessage(it, group) {
    if (it.kind === 'msg' && it.m.content.event) {
      const li = el('li', 'event');
      li.dataset.seq = String(it.m.seq);
      return li;
    }
    const li = el('li', 'msg');
    const bubble = el('div', 'bubble');
    if (group) bubble.append(el('div', 'msg-author'));
    bubble.append(el('div', 'msg-text'));
    const meta = el('div', 'msg-meta');
    meta.append(el('span', 'msg-time'), el('span', 'msg-status'), el('span', 'msg-actions'));
    li.append(bubble, meta);
    return li;
  }

  updateMessage(li, it, c) {
    const s = this.app.state;
    if (it.kind === 'msg' && it.m.content.event) {
      setText(li, `${s.name(it.m.from)} ${describeEvent(it.m.content.event, (u) => s.name(u))}`);
      return;
    }
    const mine = it.kind === 'pending' || it.m.from === s.me.user;
    li.classList.toggle('mine', mine);
    const author = li.querySelector('.msg-author');
    if (author) {
      author.hidden = mine;
      if (!mine) setText(author, s.name(it.m.from));
    }
    let state;
    if (it.kind === 'pending') {
      li.dataset.cmid = it.e.cmid;
      li.dataset.pending = 'true';
      state = it.e.failed ? 'failed' : 'pending';
      setText(li.querySelector('.msg-text'), it.e.body);
      setText(li.querySelector('.msg-time'), clock(it.e.ts));
      li.title = it.e.failed ?? '';
    } else {
      li.dataset.seq = String(it.m.seq);
      delete li.dataset.pending;
      state = mine ? s.status(c, it.m.seq) : null;
      setText(li.querySelector('.msg-text'), it.m.content.text);
      setText(li.querySelector('.msg-time'), clock(it.m.ts));
    }
    li.classList.toggle('failed', state === 'failed');
    const st = li.querySelector('.msg-status');
    st.hidden = state === null;
    if (state !== null) {
      st.dataset.state = state;
      setText(st, STATUS_TEXT[state]);
    }
    const actions = li.querySelector('.msg-actions');
    if (state === 'failed' && actions.childElementCount === 0) {
      for (const [action, label] of [['retry', 'Retry'], ['discard', 'Delete']]) {
        const b = el('button', null, label);
        b.type = 'button';
        b.dataset.action = action;
        b.dataset.cmid = it.e.cmid;
        actions.append(b);
      }
    } else if (state !== 'failed' && actions.childElementCount > 0) {
      actions.replaceChildren();
    }
  }

  renderPanel() {
    const app = this.app;
    const s = app.state;
    const c = app.openId ? s.conv(app.openId) : null;
    const show = Boolean(c && app.panelOpen && c.kind === 'group' && !c.gone);
    $('group-panel').hidden = !show;
    if (!show) return;
    const admin = c.members.get(s.me.user)?.role === 'admin';
    $('group-rename').hidden = !admin;
    $('group-add').hidden = !admin;
    const rename = $('group-rename-input');
    if (document.activeElement !== rename) rename.value = c.title;
    const members = [...c.members.entries()].sort((a, b) => (a[1].joined - b[1].joined) || (a[0] < b[0] ? -1 : 1));
    reconcile($('member-list'), members, ([u]) => u, () => {
      const li = el('li', 'member');
      li.append(el('span', 'member-name'), el('span', 'role'));
      return li;
    }, (li, [u, m]) => {
      li.dataset.user = u;
      setText(li.querySelector('.member-name'), s.name(u));
      const p = s.presence.get(u);
      setText(li.querySelector('.role'), [m.role === 'admin' ? 'admin' : '', p?.status === 'online' ? 'online' : ''].filter(Boolean).join(' · '));
      let b = li.querySelector('button');
      const removable = admin && u !== s.me.user;
      if (removable && !b) {
        b = el('button', null, 'Remove');
        b.type = 'button';
        b.dataset.user = u;
        li.append(b);
      } else if (!removable && b) {
        b.remove();
      }
    });
  }
}
