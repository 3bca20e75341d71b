// The test harness: a real `switchboard --dev` process (killed and restarted
// on the same port and data directory when a test asks) and headless Chromium
// through playwright-core.

import { spawn, execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(HERE, '../..');
const TARGET = path.resolve(REPO, process.env.CARGO_TARGET_DIR ?? 'target');
/** Where the screenshots of the main screens go. */
export const SHOTS = process.env.SCREENSHOT_DIR ?? path.join(TARGET, 'browser-screenshots');
/** The flags the issue asks Chromium to run with. */
const CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'];
/** Bounds on waiting for the server. */
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

function serverBin() {
  return process.env.SWITCHBOARD_BIN ?? path.join(TARGET, 'release', 'switchboard');
}

function chromiumPath() {
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  for (const name of ['chromium', 'chromium-browser']) {
    try {
      return execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim();
    } catch {
      // try the next name
    }
  }
  throw new Error('no chromium on PATH (apt-get install chromium), or set CHROMIUM');
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * An HS256 token for `user`/`device` (docs/PROTOCOL.md, "Tokens"), valid from now for
 * `ttlS` seconds (negative: already expired).
 */
export function mintToken(secret, user, device, ttlS = 3600) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const signed = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub: user, dev: device, iat: now, exp: now + ttlS })}`;
  return `${signed}.${createHmac('sha256', secret).update(signed).digest('base64url')}`;
}

export class Server {
  /** `secret`: run without `--dev`, with this token secret (no dev token endpoint). */
  constructor({ secret = null } = {}) {
    this.secret = secret;
    this.dir = mkdtempSync(path.join(tmpdir(), 'switchboard-browser-'));
    this.data = path.join(this.dir, 'data');
    this.port = 0;
    this.proc = null;
    this.starts = 0;
  }

  get url() {
    return `http://127.0.0.1:${this.port}/`;
  }

  logPath() {
    return path.join(this.dir, `switchboard-${this.starts}.log`);
  }

  /** Starts the server (on the port it had before, after a restart) and waits for it to listen. */
  async start() {
    this.starts += 1;
    mkdirSync(this.dir, { recursive: true });
    const log = this.logPath();
    const out = openSync(log, 'w');
    const args = ['--listen', `127.0.0.1:${this.port}`, '--admin-listen', '127.0.0.1:0',
      '--data-dir', this.data, '--shards', '2'];
    const env = { ...process.env, NO_COLOR: '1', SWITCHBOARD_LOG: 'info,fjall=warn,lsm_tree=warn' };
    if (this.secret === null) args.unshift('--dev');
    else env.SWITCHBOARD_TOKEN_SECRET = this.secret;
    this.proc = spawn(serverBin(), args, { stdio: ['ignore', out, out], env });
    const proc = this.proc;
    const exited = new Promise((r) => proc.once('exit', r));
    this.exited = exited;
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      const m = /engine::server: listening addr=127\.0\.0\.1:(\d+)/.exec(readFileSync(log, 'utf8'));
      if (m) {
        this.port = Number(m[1]);
        return;
      }
      if (proc.exitCode !== null) break;
      await sleep(50);
    }
    throw new Error(`switchboard did not start:\n${this.logTail()}`);
  }

  /** SIGKILL: no shutdown, no flush beyond what was already acknowledged. */
  async kill() {
    const proc = this.proc;
    this.proc = null;
    proc.kill('SIGKILL');
    await this.exited;
  }

  /** SIGTERM, and the exit code (0 for a clean shutdown). */
  async stop() {
    const proc = this.proc;
    if (!proc) return 0;
    this.proc = null;
    proc.kill('SIGTERM');
    const code = await Promise.race([this.exited, sleep(STOP_TIMEOUT_MS).then(() => 'timeout')]);
    if (code === 'timeout') {
      proc.kill('SIGKILL');
      await this.exited;
      throw new Error('switchboard still running 10 s after SIGTERM');
    }
    return code;
  }

  logTail(lines = 40) {
    try {
      return readFileSync(this.logPath(), 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  cleanup() {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export async function launchBrowser() {
  return chromium.launch({ executablePath: chromiumPath(), args: CHROMIUM_FLAGS, headless: true });
}

/**
 * One signed-in device: a browser context of its own (its own storage), one page.
 * Page errors and console errors are collected; the tests assert there are none.
 */
export class Device {
  static async open(browser, server, user, device, viewport = DESKTOP) {
    const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
    const page = await context.newPage();
    const d = new Device(context, page, user, device);
    page.on('pageerror', (e) => d.errors.push(`pageerror: ${e.message}`));
    page.on('console', (m) => {
      // A refused WebSocket while the server is down is expected; anything else is a bug.
      if (m.type() === 'error' && !/WebSocket connection to .* failed/.test(m.text())) {
        d.errors.push(`console: ${m.text()}`);
      }
    });
    await page.goto(server.url);
    await page.locator('#signin-user').waitFor();
    await page.fill('#signin-user', user);
    await page.fill('#signin-device', device);
    await page.click('#signin-submit');
    await d.waitLive();
    return d;
  }

  constructor(context, page, user, device) {
    this.context = context;
    this.page = page;
    this.user = user;
    this.device = device;
    this.errors = [];
  }

  /** Waits until the app has synced on a connection (the banner is gone). */
  async waitLive(timeout = 20_000) {
    await this.page.waitForFunction(() => window.switchboard?.live === true, null, { timeout });
    await this.page.locator('#banner').waitFor({ state: 'hidden', timeout });
  }

  conv(title) {
    return this.page.locator('#conv-list li.conv-item', { has: this.page.locator('.conv-title', { hasText: title }) });
  }

  async open(title) {
    await this.conv(title).click();
    await this.page.locator('#chat-title', { hasText: title }).waitFor();
  }

  async send(text) {
    await this.page.fill('#composer-input', text);
    await this.page.press('#composer-input', 'Enter');
  }

  /** The open conversation's stored entries as `seq:text` (text messages) or `seq:~event`. */
  async history() {
    return this.page.$$eval('#message-list > li[data-seq]', (items) =>
      items.map((li) => `${li.dataset.seq}:${li.classList.contains('event') ? '~' : ''}${li.querySelector('.msg-text')?.textContent ?? li.textContent}`));
  }

  async shot(name) {
    mkdirSync(SHOTS, { recursive: true });
    await this.page.screenshot({ path: path.join(SHOTS, `${name}.png`) });
  }

  async close() {
    await this.context.close();
  }
}
