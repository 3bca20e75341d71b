// The web client in headless Chromium against a real `switchboard --dev`:
// 1:1 chat with receipts and typing, a second device, a group of three, and a
// server killed and restarted while a message is being sent.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { DESKTOP, Device, PHONE, SHOTS, Server, launchBrowser, mintToken } from './harness.mjs';

/** Bound on every wait for something to show up in a page. */
const UI_TIMEOUT_MS = 15_000;

describe('web client in Chromium', { timeout: 240_000 }, () => {
  const server = new Server();
  let browser;
  /** alice (user 1) on a desktop and on a phone, bob (2), carol (3). */
  let alice;
  let alicePhone;
  let bob;
  let carol;
  const devices = () => [alice, alicePhone, bob, carol].filter(Boolean);

  before(async () => {
    await server.start();
    browser = await launchBrowser();
  });

  afterEach(() => {
    // Errors a page logged explain most failures: show them with the test.
    for (const d of devices()) {
      if (d.errors.length > 0) console.error(`user ${d.user} device ${d.device}:`, d.errors.join('\n'));
    }
  });

  after(async () => {
    for (const d of devices()) await d.close().catch(() => {});
    await browser?.close();
    const code = await server.stop();
    assert.equal(code, 0, `switchboard exited with ${code}:\n${server.logTail()}`);
    server.cleanup();
  });

  test('the client is served at / and signs in with the dev token endpoint', async () => {
    const context = await browser.newContext({ viewport: PHONE });
    const page = await context.newPage();
    const response = await page.goto(server.url);
    assert.equal(response.status(), 200);
    assert.match(response.headers()['content-security-policy'] ?? '', /default-src 'self'/);
    await page.locator('#signin-user').waitFor();
    assert.match(await page.textContent('#signin-mode'), /Development server/);
    // Each browser gets a device id of its own, kept across visits.
    const device = await page.inputValue('#signin-device');
    assert.match(device, /^[1-9][0-9]*$/);
    await page.reload();
    await page.locator('#signin-user').waitFor();
    assert.equal(await page.inputValue('#signin-device'), device);
    // Bad input gets a message, not a request.
    await page.fill('#signin-user', 'alice');
    await page.click('#signin-submit');
    assert.equal(await page.$eval('#signin-user', (i) => i.validity.valid), false);
    await page.screenshot({ path: `${SHOTS}/phone-signin.png` });
    await context.close();

    alice = await Device.open(browser, server, '1', '1');
    bob = await Device.open(browser, server, '2', '1');
    assert.equal(await alice.page.textContent('#me'), 'User 1');
    assert.equal(await alice.page.textContent('#me-device'), 'device 1');
  });

  test('two users chat 1:1 and see delivery and read receipts and typing', async () => {
    const a = alice.page;
    const b = bob.page;
    await a.click('#new-chat');
    await a.fill('#direct-user', '2');
    await a.click('#direct-submit');
    await a.locator('#chat-title', { hasText: 'User 2' }).waitFor();

    // Over the body limit in UTF-8 bytes (8,193 characters, 16,386 bytes): refused in
    // the page, nothing sent.
    await a.fill('#composer-input', 'é'.repeat(8193));
    await a.press('#composer-input', 'Enter');
    await a.locator('#chat-notice', { hasText: 'at most 16384 bytes' }).waitFor();
    assert.equal(await a.locator('#message-list li').count(), 0);
    await a.fill('#composer-input', '');

    await alice.send('hello bob');
    const mine = a.locator('#message-list li.msg.mine', { hasText: 'hello bob' });
    // Acked (it has a seq), then delivered: bob's client holds it and said `recv`.
    await mine.and(a.locator('[data-seq="1"]')).waitFor({ timeout: UI_TIMEOUT_MS });
    await mine.locator('.msg-status[data-state="delivered"]').waitFor({ timeout: UI_TIMEOUT_MS });

    // Bob has not opened it: one unread, with the last message in the list.
    const row = bob.conv('User 1');
    await row.locator('.conv-unread', { hasText: '1' }).waitFor({ timeout: UI_TIMEOUT_MS });
    assert.equal(await row.locator('.conv-last').textContent(), 'hello bob');
    await bob.shot('desktop-list-unread');

    // Opening it reads it: alice sees "Read".
    await bob.open('User 1');
    await mine.locator('.msg-status[data-state="read"]').waitFor({ timeout: UI_TIMEOUT_MS });
    assert.equal(await row.locator('.conv-unread').textContent(), '');

    // Presence: each sees the other online.
    await a.locator('#chat-status', { hasText: 'online' }).waitFor({ timeout: UI_TIMEOUT_MS });

    // Typing: bob types, alice sees it in the header and under the messages; sending stops it.
    await b.fill('#composer-input', 'hi al');
    await b.type('#composer-input', 'ice');
    await a.locator('#typing', { hasText: 'User 2 is typing…' }).waitFor({ timeout: UI_TIMEOUT_MS });
    await a.locator('#chat-status', { hasText: 'typing…' }).waitFor();
    await alice.shot('desktop-chat-typing');
    await b.press('#composer-input', 'Enter');
    await a.locator('#message-list li.msg:not(.mine)', { hasText: 'hi alice' }).waitFor({ timeout: UI_TIMEOUT_MS });
    await a.locator('#typing', { hasText: 'typing' }).waitFor({ state: 'detached', timeout: UI_TIMEOUT_MS }).catch(() => {});
    assert.equal(await a.textContent('#typing'), '');
    // Alice has it open, so bob's message shows as read on bob's side.
    await b.locator('#message-list li.msg.mine', { hasText: 'hi alice' })
      .locator('.msg-status[data-state="read"]').waitFor({ timeout: UI_TIMEOUT_MS });
    await alice.shot('desktop-chat');
    await bob.shot('desktop-chat-bob');

    assert.deepEqual(await alice.history(), ['1:hello bob', '2:hi alice']);
    assert.deepEqual(await bob.history(), ['1:hello bob', '2:hi alice']);
  });

  test('a second device of the first user shows the same conversation', async () => {
    alicePhone = await Device.open(browser, server, '1', '2', PHONE);
    const p = alicePhone.page;
    const row = alicePhone.conv('User 2');
    await row.waitFor({ timeout: UI_TIMEOUT_MS });
    assert.equal(await row.locator('.conv-last').textContent(), 'hi alice');
    await alicePhone.shot('phone-list');
    await alicePhone.open('User 2');
    // The phone layout shows one pane: the conversation, with a back button.
    assert.equal(await p.isVisible('#sidebar'), false);
    assert.equal(await p.isVisible('#chat-back'), true);
    await p.locator('#message-list li[data-seq="2"]').waitFor({ timeout: UI_TIMEOUT_MS });
    assert.deepEqual(await alicePhone.history(), ['1:hello bob', '2:hi alice']);
    // What this user sent from the desktop shows as hers here too.
    assert.equal(await p.locator('#message-list li.msg.mine').count(), 1);

    await alicePhone.send('from my phone');
    for (const d of [alice, bob, alicePhone]) {
      await d.page.locator('#message-list li[data-seq="3"]', { hasText: 'from my phone' }).waitFor({ timeout: UI_TIMEOUT_MS });
    }
    assert.equal(await alice.page.locator('#message-list li.msg.mine', { hasText: 'from my phone' }).count(), 1);
    await alicePhone.shot('phone-chat');
    await p.click('#chat-back');
    await p.locator('#sidebar').waitFor();
    assert.equal(await p.isVisible('#chat'), false);
  });

  test('a group of three is created, used, renamed and its members changed', async () => {
    carol = await Device.open(browser, server, '3', '1');
    const a = alice.page;
    await a.click('#new-group');
    await a.fill('#group-title', 'Climbing');
    await a.fill('#group-members', '2, 3');
    await a.click('#group-submit');
    await a.locator('#chat-title', { hasText: 'Climbing' }).waitFor({ timeout: UI_TIMEOUT_MS });
    await a.locator('#chat-status', { hasText: '3 members' }).waitFor({ timeout: UI_TIMEOUT_MS });

    for (const d of [bob, carol, alicePhone]) await d.conv('Climbing').waitFor({ timeout: UI_TIMEOUT_MS });
    await bob.open('Climbing');
    await carol.open('Climbing');
    await bob.send('group hello');
    await carol.send('hi both');
    await alice.send('rope at 6?');
    for (const d of [alice, bob, carol]) {
      await d.page.locator('#message-list li[data-seq="4"]', { hasText: 'rope at 6?' }).waitFor({ timeout: UI_TIMEOUT_MS });
      assert.deepEqual(await d.history(), ['1:~User 1 created the group “Climbing”'.replace('User 1', d.user === '1' ? 'You' : 'User 1'),
        '2:group hello', '3:hi both', '4:rope at 6?']);
    }
    // Authors are named in a group.
    await a.locator('#message-list li[data-seq="2"] .msg-author', { hasText: 'User 2' }).waitFor();
    // Everyone has it open: alice's message ends up read by both.
    await a.locator('#message-list li[data-seq="4"] .msg-status[data-state="read"]').waitFor({ timeout: UI_TIMEOUT_MS });

    // Rename, remove carol, add her back (admin panel).
    await a.click('#chat-info');
    await a.locator('#member-list li.member').nth(2).waitFor();
    await alice.shot('desktop-group-details');
    await a.fill('#group-rename-input', 'Climbing 🧗');
    await a.click('#group-rename-submit');
    await bob.page.locator('#chat-title', { hasText: 'Climbing 🧗' }).waitFor({ timeout: UI_TIMEOUT_MS });
    await bob.page.locator('#message-list li.event', { hasText: 'renamed the group to “Climbing 🧗”' }).waitFor();

    await a.click('#member-list li[data-user="3"] button');
    await carol.page.locator('#chat-notice', { hasText: 'no longer a member' }).waitFor({ timeout: UI_TIMEOUT_MS });
    assert.equal(await carol.page.isVisible('#composer'), false);
    await a.locator('#chat-status', { hasText: '2 members' }).waitFor({ timeout: UI_TIMEOUT_MS });
    await bob.send('just us');
    await a.locator('#message-list li.msg', { hasText: 'just us' }).waitFor({ timeout: UI_TIMEOUT_MS });

    await a.fill('#group-add-input', '3');
    await a.click('#group-add-submit');
    await a.locator('#chat-status', { hasText: '3 members' }).waitFor({ timeout: UI_TIMEOUT_MS });
    await carol.page.locator('#composer').waitFor({ timeout: UI_TIMEOUT_MS });
    await carol.send('back again');
    await bob.page.locator('#message-list li.msg', { hasText: 'back again' }).waitFor({ timeout: UI_TIMEOUT_MS });
    // Carol never saw what was said while she was out.
    assert.equal(await carol.page.locator('#message-list li.msg', { hasText: 'just us' }).count(), 0);
    await a.click('#group-close');
    await alice.shot('desktop-group');
    // Alice read it all on her desktop: her phone's unread count follows (her own read
    // receipts), without opening the group there.
    const phoneRow = alicePhone.conv('Climbing');
    await phoneRow.locator('.conv-last', { hasText: 'back again' }).waitFor({ timeout: UI_TIMEOUT_MS });
    await phoneRow.locator('.conv-unread:empty').waitFor({ state: 'attached', timeout: UI_TIMEOUT_MS });
  });

  test('a member leaves the group: the others see it, and it is read-only for her', async () => {
    await carol.page.click('#chat-info');
    await carol.page.click('#group-leave');
    await carol.page.locator('#chat').waitFor({ state: 'hidden', timeout: UI_TIMEOUT_MS });
    await alice.page.locator('#message-list li.event', { hasText: 'User 3 left' }).waitFor({ timeout: UI_TIMEOUT_MS });
    await alice.page.locator('#chat-status', { hasText: '2 members' }).waitFor({ timeout: UI_TIMEOUT_MS });
    await carol.open('Climbing');
    await carol.page.locator('#chat-notice', { hasText: 'no longer a member' }).waitFor();
    assert.equal(await carol.page.isVisible('#composer'), false);
  });

  test('presence: online while the other user has the app open, then last seen', async () => {
    const dave = await Device.open(browser, server, '4', '1', PHONE);
    const a = alice.page;
    await a.click('#new-chat');
    await a.fill('#direct-user', '4');
    await a.click('#direct-submit');
    await a.locator('#chat-title', { hasText: 'User 4' }).waitFor({ timeout: UI_TIMEOUT_MS });
    await a.locator('#chat-status', { hasText: /^online$/ }).waitFor({ timeout: UI_TIMEOUT_MS });
    await alice.conv('User 4').locator('.presence-dot[data-status="online"]').waitFor();
    // Markup in a message is text, never HTML.
    const markup = '<img src=x onerror="window.pwned=1"><b>not bold</b>';
    await dave.page.click('#new-chat');
    await dave.page.fill('#direct-user', '1');
    await dave.page.click('#direct-submit');
    await dave.page.locator('#chat-title', { hasText: 'User 1' }).waitFor({ timeout: UI_TIMEOUT_MS });
    await dave.send(markup);
    const shown = a.locator('#message-list li[data-seq="1"] .msg-text');
    await shown.waitFor({ timeout: UI_TIMEOUT_MS });
    assert.equal(await shown.textContent(), markup);
    assert.equal(await shown.locator('img, b').count(), 0);
    assert.equal(await alice.conv('User 4').locator('.conv-last').textContent(), markup);
    assert.equal(await a.evaluate(() => window.pwned), undefined);
    await dave.close();
    await a.locator('#chat-status', { hasText: 'last seen just now' }).waitFor({ timeout: UI_TIMEOUT_MS });
    await alice.conv('User 4').locator('.presence-dot[data-status="offline"]').waitFor();
    assert.deepEqual(dave.errors, []);
  });

  test('the server is killed and restarted while a message is being sent: both sides end with the same history', async () => {
    const a = alice.page;
    const b = bob.page;
    await alice.open('User 2');
    await bob.open('User 1');
    const before = await alice.history();

    // Enter, and SIGKILL in the same breath: the send may or may not have been stored.
    await a.fill('#composer-input', 'sent as the server died');
    await Promise.all([a.press('#composer-input', 'Enter'), server.kill()]);
    for (const d of [alice, bob]) {
      await d.page.locator('#banner[data-state="offline"]').waitFor({ timeout: UI_TIMEOUT_MS });
    }
    // While it is down, both keep writing; the messages wait, marked as sending.
    await alice.send('written while down');
    await bob.send('bob while down');
    await a.locator('#message-list li[data-pending="true"]', { hasText: 'written while down' }).waitFor();
    await a.locator('#banner', { hasText: 'Disconnected' }).waitFor();
    await alice.shot('desktop-disconnected');
    await alicePhone.shot('phone-disconnected');

    await server.start();
    for (const d of devices()) await d.waitLive(30_000);
    // Presence is subscribed again on the new connection; no typing survives it.
    await a.locator('#chat-status', { hasText: /^online$/ }).waitFor({ timeout: UI_TIMEOUT_MS });
    assert.equal(await b.textContent('#typing'), '');
    // Every send is acknowledged exactly once and both pages converge.
    for (const d of [alice, bob]) {
      await d.page.locator('#message-list li[data-pending]').first().waitFor({ state: 'detached', timeout: UI_TIMEOUT_MS }).catch(() => {});
      assert.equal(await d.page.locator('#message-list li[data-pending]').count(), 0, `${d.user}: unacknowledged sends left`);
    }
    const expected = ['sent as the server died', 'written while down', 'bob while down'];
    let ha;
    let hb;
    const deadline = Date.now() + UI_TIMEOUT_MS;
    do {
      ha = await alice.history();
      hb = await bob.history();
      if (ha.length === before.length + 3 && JSON.stringify(ha) === JSON.stringify(hb)) break;
      await new Promise((r) => setTimeout(r, 100));
    } while (Date.now() < deadline);
    assert.deepEqual(ha, hb, 'alice and bob hold the same history');
    assert.deepEqual(ha.slice(0, before.length), before, 'nothing before the crash changed');
    const after = ha.slice(before.length).map((e) => e.split(':').slice(1).join(':'));
    assert.deepEqual([...after].sort(), [...expected].sort(), 'each message exactly once');
    // alice's two sends keep their order; the seqs run without a gap.
    assert.ok(after.indexOf('sent as the server died') < after.indexOf('written while down'));
    const seqs = ha.map((e) => Number(e.split(':')[0]));
    assert.deepEqual(seqs, seqs.map((_, i) => i + 1));
    // Alice's phone catches up to the same history.
    await alicePhone.open('User 2');
    await alicePhone.page.locator(`#message-list li[data-seq="${seqs.length}"]`).waitFor({ timeout: UI_TIMEOUT_MS });
    assert.deepEqual(await alicePhone.history(), ha);
    await bob.shot('desktop-after-restart');
  });

  test('after a reload the newest page shows and history pages in when scrolling up', async () => {
    // 120 more messages from bob (under the send rate limit). Alice's desktop holds them
    // all; a reload empties its memory, and the catch-up starts at its cursor, so the
    // older messages come only from `fetch` as she scrolls up.
    const count = 120;
    await bob.page.evaluate(async (n) => {
      const app = window.switchboard;
      for (let i = 1; i <= n; i += 1) {
        app.sendText(`bulk ${i}`);
        if (i % 40 === 0) await new Promise((r) => setTimeout(r, 1000));
      }
    }, count);
    const newest = bob.page.locator('#message-list li[data-seq]', {
      has: bob.page.locator('.msg-text', { hasText: new RegExp(`^bulk ${count}$`) }),
    });
    await newest.waitFor({ timeout: 30_000 });
    const total = Number(await newest.getAttribute('data-seq'));
    const p = alice.page;
    await p.locator(`#message-list li[data-seq="${total}"]`).waitFor({ timeout: UI_TIMEOUT_MS });

    await p.reload();
    await alice.waitLive();
    await alice.open('User 2');
    await p.locator(`#message-list li[data-seq="${total}"]`).waitFor({ timeout: UI_TIMEOUT_MS });
    const first = async () => Number(await p.$eval('#message-list > li[data-seq]', (li) => li.dataset.seq));
    assert.ok(await first() > 1, 'only the newest pages at first');
    for (let i = 0; i < 20 && (await first()) > 1; i += 1) {
      await p.$eval('#messages', (m) => { m.scrollTop = 0; });
      await p.waitForTimeout(250);
    }
    assert.equal(await first(), 1, 'scrolling up reached the first message');
    // No live receipt reached this page, yet her messages show as read: the stored
    // cursors (`receipts_get`) say bob read everything.
    const mineRead = p.locator('#message-list li.msg.mine .msg-status[data-state="read"]');
    await mineRead.first().waitFor({ timeout: UI_TIMEOUT_MS });
    assert.equal(await p.locator('#message-list li.msg.mine .msg-status[data-state="sent"]').count(), 0);
    const seqs = await p.$$eval('#message-list > li[data-seq]', (items) => items.map((li) => Number(li.dataset.seq)));
    assert.deepEqual(seqs, Array.from({ length: total }, (_, i) => i + 1));
    await p.locator('#history-top', { hasText: 'Start of the conversation' }).waitFor();
    for (const d of devices()) assert.deepEqual(d.errors, [], `user ${d.user} device ${d.device}`);
  });
});

describe('web client without --dev', { timeout: 60_000 }, () => {
  const secret = 'browser test secret, at least thirty-two bytes long';
  const server = new Server({ secret });
  let browser;
  let context;

  before(async () => {
    await server.start();
    browser = await launchBrowser();
  });

  after(async () => {
    await context?.close();
    await browser?.close();
    const code = await server.stop();
    assert.equal(code, 0, `switchboard exited with ${code}:\n${server.logTail()}`);
    server.cleanup();
  });

  test('asks for a token, checks it, and signs in with a good one', async () => {
    context = await browser.newContext({ viewport: DESKTOP });
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(server.url);
    await page.locator('#signin-token').waitFor();
    assert.equal(await page.isVisible('#signin-user'), false, 'no dev sign-in');
    assert.match(await page.textContent('#signin-mode'), /Paste a token/);
    const tries = [
      ['not a token', /not a token/],
      [mintToken(secret, '5', '1', -60), /expired/],
    ];
    for (const [token, message] of tries) {
      await page.fill('#signin-token', token);
      await page.click('#signin-submit');
      await page.locator('#signin-error', { hasText: message }).waitFor({ timeout: UI_TIMEOUT_MS });
    }
    // Well formed but signed with another secret: the server refuses every upgrade (401),
    // and the banner says so once the server is seen to be up.
    await page.fill('#signin-token', mintToken('some other secret, also thirty-two bytes', '5', '1'));
    await page.click('#signin-submit');
    await page.locator('#banner', { hasText: 'refuses this session' }).waitFor({ timeout: UI_TIMEOUT_MS });
    await page.screenshot({ path: `${SHOTS}/desktop-token-refused.png` });
    await page.click('#sign-out');
    await page.locator('#signin-token').waitFor({ timeout: UI_TIMEOUT_MS });

    await page.fill('#signin-token', mintToken(secret, '5', '1'));
    await page.click('#signin-submit');
    await page.waitForFunction(() => window.switchboard?.live === true, null, { timeout: UI_TIMEOUT_MS });
    assert.equal(await page.textContent('#me'), 'User 5');
    assert.deepEqual(errors, []);
  });
});
