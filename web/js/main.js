// Start-up: sign in (dev token endpoint or a pasted token), then run the app.

import { App } from './app.js';
import { parseId } from './protocol.js';

const SESSION_KEY = 'switchboard.session';
const REASON_KEY = 'switchboard.signout-reason';
/** This browser's device id for dev sign-in: random once, then kept, so that two browsers
 * signed in as the same user are two devices (the same id would share one cursor, and
 * neither would get the other's messages live). */
const DEVICE_KEY = 'switchboard.device';
const DEVICE_ID_MAX = 2 ** 31;

function browserDevice() {
  let id = parseId(localStorage.getItem(DEVICE_KEY) ?? '');
  if (!id || id === '0') {
    const r = new Uint32Array(1);
    crypto.getRandomValues(r);
    id = String(1 + (r[0] % (DEVICE_ID_MAX - 1)));
    localStorage.setItem(DEVICE_KEY, id);
  }
  return id;
}
const $ = (id) => document.getElementById(id);

function loadSession() {
  try {
    const s = JSON.parse(localStorage.getItem(SESSION_KEY) ?? 'null');
    if (s && typeof s.token === 'string' && parseId(s.user) && parseId(s.device)) {
      if (!s.expires || s.expires * 1000 > Date.now()) return s;
    }
  } catch {
    // A damaged entry: sign in again.
  }
  return null;
}

/** The claims of a JWT, unverified (the server checks it; this only names the user). */
function claims(token) {
  const part = token.split('.')[1];
  if (!part) throw new Error('That is not a token (expected three dot-separated parts).');
  const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
  let json;
  try {
    json = JSON.parse(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)));
  } catch {
    throw new Error('The token’s claims do not decode.');
  }
  const user = parseId(json.sub ?? '');
  const device = parseId(json.dev ?? '');
  if (!user || !device) throw new Error('The token names no user and device.');
  if (typeof json.exp === 'number' && json.exp * 1000 <= Date.now()) throw new Error('The token has expired.');
  return { user, device, expires: json.exp ?? null };
}

async function serverInfo() {
  try {
    const r = await fetch('/v1/info', { cache: 'no-store' });
    if (r.ok) return await r.json();
  } catch {
    // Unreachable: offer the token box; signing in will say what is wrong.
  }
  return { dev: false };
}

async function devToken(user, device) {
  const r = await fetch('/v1/dev/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user, device }),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error ?? `The server answered ${r.status}.`);
  return body;
}

function run(session) {
  const app = new App({
    token: session.token,
    user: session.user,
    device: session.device,
    onSignOut: (reason) => {
      localStorage.removeItem(SESSION_KEY);
      if (reason) sessionStorage.setItem(REASON_KEY, reason);
      location.reload();
    },
  });
  // For the browser tests and the console.
  window.switchboard = app;
  app.start();
}

async function signIn() {
  $('signin').hidden = false;
  const reason = sessionStorage.getItem(REASON_KEY);
  sessionStorage.removeItem(REASON_KEY);
  $('signin-error').textContent = reason ?? '';
  const info = await serverInfo();
  const dev = info.dev === true;
  $('signin-dev').hidden = !dev;
  $('signin-paste').hidden = dev;
  // Hidden fields must not take part in the form's validation.
  for (const input of $('signin-dev').querySelectorAll('input')) input.disabled = !dev;
  $('signin-token').disabled = dev;
  $('signin-token').required = !dev;
  $('signin-mode').textContent = dev
    ? 'Development server: sign in as any user id.'
    : 'Paste a token issued for you (a JWT with your user and device ids).';
  const userInput = $('signin-user');
  if (dev && !$('signin-device').value) $('signin-device').value = browserDevice();
  if (dev) userInput.focus();
  $('signin-form').onsubmit = async (ev) => {
    ev.preventDefault();
    $('signin-error').textContent = '';
    try {
      let session;
      if (dev) {
        const user = parseId(userInput.value);
        const device = parseId($('signin-device').value);
        if (!user || !device || device === '0') throw new Error('User and device ids are numbers; devices start at 1.');
        const t = await devToken(user, device);
        session = { token: t.token, user: t.user, device: t.device, expires: t.expires };
      } else {
        const token = $('signin-token').value.trim();
        session = { token, ...claims(token) };
      }
      localStorage.setItem(SESSION_KEY, JSON.stringify(session));
      $('signin').hidden = true;
      run(session);
    } catch (e) {
      $('signin-error').textContent = e.message;
    }
  };
}

const session = loadSession();
if (session) run(session);
else signIn();
