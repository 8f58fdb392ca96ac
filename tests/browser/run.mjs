// run.mjs: meteor.js in a real browser. Drives Debian's Chromium (headless,
// through playwright-core) against a meteord that tests/browser.rs started:
//
//   node tests/browser/run.mjs <subscriber-port> <controller-port> <screenshot.png> <subscriber-secret>
//
// For each transport meteor.js can use (websocket, sse, fetchstream,
// jsonlongpoll) a page
// joins a channel with a backlog of 10 events; 200 events are published and
// must all arrive exactly once and in order; then the server cuts the page off
// (GET /disconnect/<hostid>), 50 more are published while it is away, and it
// must come back and report each of them exactly once too. The jsonlongpoll
// page then gets 20 events one at a time (a long-poll cycle each) and must
// make them on its kept-alive connection: the server's count of subscriber
// connections accepted (GET /stats on the controller port) may grow by at
// most 2 over those cycles. Then a page behind
// a proxy that refuses WebSocket upgrades must fall back to sse. Last, the demo
// page (/) gets events from a terminal-style publisher and from its own form,
// and a screenshot of it is written. Private channels: for each transport a
// page reads a private channel with tokens it hands meteor.js through
// Meteor.token (minted with jsonwebtoken, 3 s each); the server closes the
// stream at exp, the page is asked for a fresh token, and every event still
// arrives exactly once. Exits 0 when everything held.

import { chromium } from 'playwright-core';
import jwt from 'jsonwebtoken';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const CHROMIUM = '/usr/bin/chromium';
const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run',
];
const TRANSPORTS = ['websocket', 'sse', 'fetchstream', 'jsonlongpoll'];
const WAIT = 15000; // ms allowed for any one expected thing to happen

const [subscriberPort, controllerPort, screenshotPath, subscriberSecret] = process.argv.slice(2);
if (!subscriberSecret) {
  console.error('usage: node run.mjs <subscriber-port> <controller-port> <screenshot.png> <subscriber-secret>');
  process.exit(2);
}
const origin = `http://127.0.0.1:${subscriberPort}`;

/* A controller connection speaking the line protocol: one reply line per command. */
class Controller {
  static open(port) {
    return new Promise((resolve, reject) => {
      const socket = connect(port, '127.0.0.1', () => resolve(new Controller(socket)));
      socket.once('error', reject);
    });
  }

  constructor(socket) {
    this.socket = socket;
    this.waiting = []; // resolvers of the commands sent, in order
    let buffered = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk) => {
      const lines = (buffered + chunk).split('\r\n');
      buffered = lines.pop();
      for (const line of lines) this.waiting.shift()(line);
    });
  }

  command(line) {
    return this.commands([line]).then(([reply]) => reply);
  }

  /* Sends every line at once and resolves with the replies, in order. */
  commands(lines) {
    const replies = lines.map(() => new Promise((resolve) => this.waiting.push(resolve)));
    this.socket.write(lines.map((l) => l + '\n').join(''));
    return withDeadline(Promise.all(replies), `replies to ${lines.length} command(s)`);
  }

  /* Publishes each text on channel; resolves with the events as the page should report them. */
  async publish(channel, texts) {
    const replies = await this.commands(texts.map((t) => `ADDMESSAGE ${channel} ${t}`));
    return replies.map((reply, i) => {
      const match = /^OK\t(\d+)$/.exec(reply);
      if (!match) throw new Error(`ADDMESSAGE answered ${JSON.stringify(reply)}`);
      return { id: Number(match[1]), channel, text: texts[i] };
    });
  }

  close() {
    this.socket.destroy();
  }
}

function withDeadline(promise, what, ms = WAIT) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/* Polls an async condition every 20 ms until it holds, for at most WAIT ms. */
async function waitUntil(what, condition) {
  const deadline = Date.now() + WAIT;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${WAIT} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/* Event texts that exercise the escaping of every mode. */
function texts(phase, count) {
  const samples = ['plain', '"quoted" \\ back\\slash', '</script><b>&amp;</b>', ' leading space',
    'tab\there', 'ünïcødé € 😀', ''];
  return Array.from({ length: count }, (_, i) => `${phase} ${i} ${samples[i % samples.length]}`);
}

/* Waits until the page has reported `expected.length` events, then requires exactly them. */
async function expectEvents(page, expected, what) {
  await page.waitForFunction((n) => window.seen.events.length >= n, expected.length, { timeout: WAIT })
    .catch(async () => {
      const got = await page.evaluate(() => window.seen.events.length);
      throw new Error(`${what}: only ${got} of ${expected.length} events arrived within ${WAIT} ms`);
    });
  const got = await page.evaluate(() => window.seen.events);
  const bad = got.findIndex((e, i) => JSON.stringify(e) !== JSON.stringify(expected[i]));
  if (bad >= 0 || got.length !== expected.length) {
    throw new Error(`${what}: event #${bad} differs: got ${JSON.stringify(got[bad])}, ` +
      `expected ${JSON.stringify(expected[bad])} (${got.length} events, ${expected.length} expected)`);
  }
}

async function checkTransport(context, controller, mode) {
  const started = Date.now();
  const channel = `via-${mode}`;
  const expected = await controller.publish(channel, texts('backlog', 10));
  const page = await context.newPage();
  const requests = [];
  page.on('request', (r) => { if (r.url().includes('/push/')) requests.push(r.url()); });
  page.on('websocket', (ws) => { if (ws.url().includes('/push/')) requests.push(ws.url()); });
  await page.goto(`${origin}/test.html?mode=${mode}&channel=${channel}&backtrack=10`);
  await expectEvents(page, expected, `${mode}, backlog`);

  expected.push(...await controller.publish(channel, texts('live', 200)));
  await expectEvents(page, expected, `${mode}, 200 live events`);
  if (mode === 'jsonlongpoll') await checkKeptAlive(page, controller, channel, expected, requests);

  // Cut the page off from the server side, once its connection is registered.
  const hostid = await page.evaluate(() => Meteor.hostid);
  await waitUntil(`${mode}: a subscriber on ${channel}`,
    async () => (await controller.command(`COUNTSUBSCRIBERS ${channel}`)) === 'OK 1');
  const cut = requests.length;
  await withDeadline(fetch(`${origin}/disconnect/${hostid}`).then((r) => r.text()), 'GET /disconnect');
  await page.waitForFunction(() => window.seen.eofs === 1, null, { timeout: WAIT });
  const resume = `${channel}.r${expected.at(-1).id + 1}`;
  expected.push(...await controller.publish(channel, texts('away', 50)));
  expected.push(...await controller.publish(channel, ['end']));
  await expectEvents(page, expected, `${mode}, 50 events published while away`);

  const state = await page.evaluate(() => ({ mode: Meteor.mode, modes: window.seen.modes }));
  if (state.mode !== mode || state.modes.length > 0) {
    throw new Error(`${mode}: the page switched transport: ${JSON.stringify(state)}`);
  }
  const wrong = requests.find((url) => !url.includes(`/${mode}/`));
  if (wrong) throw new Error(`${mode}: a request used another mode: ${wrong}`);
  if (!requests.slice(cut).some((url) => url.includes(resume))) {
    throw new Error(`${mode}: no request resumed with ${resume}: ${requests.slice(cut).join(' ')}`);
  }
  await page.close();
  console.log(`ok ${mode}: ${expected.length} events exactly once and in order, ` +
    `across a server-side disconnect (${requests.length} requests, ${Date.now() - started} ms)`);
}

/* Subscriber connections the server has accepted so far (GET /stats). */
async function acceptedSubscribers() {
  const stats = await withDeadline(
    fetch(`http://127.0.0.1:${controllerPort}/stats`).then((r) => r.json()), 'GET /stats');
  if (typeof stats.subscriber_connections_accepted !== 'number') {
    throw new Error(`GET /stats has no subscriber_connections_accepted: ${JSON.stringify(stats)}`);
  }
  return stats.subscriber_connections_accepted;
}

/* Long-poll cycles one event at a time: meteor.js's fetch() must reuse the
   kept-alive connection instead of opening one per cycle. */
async function checkKeptAlive(page, controller, channel, expected, requests) {
  const before = await acceptedSubscribers();
  const asked = requests.length;
  const CYCLES = 20;
  for (let i = 0; i < CYCLES; i++) {
    expected.push(...await controller.publish(channel, [`one at a time ${i}`]));
    await expectEvents(page, expected, `jsonlongpoll, event ${i} of ${CYCLES} one at a time`);
  }
  const opened = (await acceptedSubscribers()) - before;
  const cycles = requests.length - asked;
  if (cycles < CYCLES - 1 || opened > 2) {
    throw new Error(`jsonlongpoll: ${cycles} long-poll requests opened ${opened} connections ` +
      `(expected at least ${CYCLES - 1} requests on at most 2 new connections)`);
  }
  console.log(`ok jsonlongpoll: ${cycles} long-poll cycles opened ${opened} new connection(s)`);
}

/* A proxy that passes plain HTTP through to meteord but refuses every
   Upgrade, as some proxies do. */
function upgradeRefusingProxy() {
  const server = createServer((req, res) => {
    const upstream = httpRequest({
      host: '127.0.0.1', port: Number(subscriberPort), path: req.url, method: req.method, headers: req.headers,
    }, (answer) => {
      res.writeHead(answer.statusCode, answer.headers);
      res.flushHeaders();
      answer.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    res.on('close', () => upstream.destroy());
    req.pipe(upstream);
  });
  server.on('upgrade', (req, socket) => {
    socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/* The best transport (websocket) cannot connect through the proxy: the page
   falls back to sse and gets every event exactly once, in order. */
async function checkFallback(context, controller) {
  const started = Date.now();
  const proxy = await upgradeRefusingProxy();
  const channel = 'via-fallback';
  const expected = await controller.publish(channel, texts('backlog', 10));
  const page = await context.newPage();
  await page.goto(`http://127.0.0.1:${proxy.address().port}/test.html?mode=stream&channel=${channel}&backtrack=10`);
  await expectEvents(page, expected, 'fallback, backlog');
  expected.push(...await controller.publish(channel, texts('live', 50)));
  await expectEvents(page, expected, 'fallback, 50 live events');
  const state = await page.evaluate(() => ({ mode: Meteor.mode, modes: window.seen.modes }));
  if (state.mode !== 'sse' || JSON.stringify(state.modes) !== '["sse"]') {
    throw new Error(`fallback: expected websocket then sse, got ${JSON.stringify(state)}`);
  }
  await page.close();
  proxy.closeAllConnections();
  proxy.close();
  console.log(`ok fallback: websocket refused by a proxy, sse took over with ${expected.length} events ` +
    `exactly once and in order (${Date.now() - started} ms)`);
}

/* ---- private channels: a token from the page, refreshed at expiry ---- */

const TOKEN_SECONDS = 3;

async function checkPrivate(context, controller, mode) {
  const started = Date.now();
  const channel = `private-${mode}`;
  const refusal = await withDeadline(fetch(`${origin}/push/nohook/${mode}/${channel}`), 'GET without a token');
  const said = await refusal.text();
  if (refusal.status !== 401 || said !== '401 Unauthorized: token missing\n') {
    throw new Error(`${mode}: a private channel without a token answered ${refusal.status} ${JSON.stringify(said)}`);
  }
  const expected = await controller.publish(channel, texts('backlog', 5));
  const page = await context.newPage();
  let minted = 0;
  await page.exposeFunction('mintToken', () => {
    minted++;
    return jwt.sign({ channels: [channel] }, subscriberSecret, { algorithm: 'HS256', expiresIn: TOKEN_SECONDS });
  });
  await page.goto(`${origin}/test.html?mode=${mode}&channel=${channel}&backtrack=5&private=1`);
  await expectEvents(page, expected, `${mode} private, backlog`);
  expected.push(...await controller.publish(channel, texts('live', 20)));
  await expectEvents(page, expected, `${mode} private, 20 live events`);
  // The token expires: the server ends the stream at exp, and meteor.js asks
  // the page for a fresh token before it reconnects.
  await waitUntil(`${mode}: a second token asked for`, async () => minted >= 2);
  expected.push(...await controller.publish(channel, texts('after expiry', 20)));
  await expectEvents(page, expected, `${mode} private, 20 events after the token expired`);
  const state = await page.evaluate(() => ({ mode: Meteor.mode, modes: window.seen.modes, asked: window.seen.minted }));
  if (state.mode !== mode || state.modes.length > 0) {
    throw new Error(`${mode} private: the page switched transport: ${JSON.stringify(state)}`);
  }
  if (state.asked !== minted) throw new Error(`${mode} private: ${state.asked} tokens asked, ${minted} minted`);
  await page.close();
  console.log(`ok ${mode} private: ${expected.length} events exactly once with ${minted} tokens ` +
    `of ${TOKEN_SECONDS} s (${Date.now() - started} ms)`);
}

async function demoScreenshot(context, controller) {
  const page = await context.newPage();
  await page.setViewportSize({ width: 1000, height: 760 });
  const published = await controller.publish('demo', [
    'Hello from a terminal: curl --data-binary ... http://127.0.0.1:4671/pub/demo',
    'meteord pushes each event to every subscriber as it arrives',
  ]);
  await page.goto(`${origin}/?controller=${controllerPort}`);
  await page.waitForFunction(() => Meteor.status === 5, null, { timeout: WAIT });
  published.push(...await controller.publish('demo', ['Events published now show up at the top, live']));
  await page.fill('#text', 'Hello from the form on this page (POST /pub/demo)');
  await page.click('#publish button');
  await page.waitForFunction(() => document.querySelector('#note').textContent.startsWith('Published as #'),
    null, { timeout: WAIT });
  const shown = async () => page.$$eval('#events .text', (els) => els.map((e) => e.textContent));
  await waitUntil('4 events on the demo page', async () => (await shown()).length === 4);
  const want = ['Hello from the form on this page (POST /pub/demo)', ...published.map((e) => e.text).reverse()];
  if (JSON.stringify(await shown()) !== JSON.stringify(want)) {
    throw new Error(`demo page shows ${JSON.stringify(await shown())}, expected ${JSON.stringify(want)}`);
  }
  await page.screenshot({ path: screenshotPath, animations: 'disabled' });
  await page.close();
  console.log(`ok demo page: 4 events (one through its form); screenshot in ${screenshotPath}`);
}

const profile = mkdtempSync(join(tmpdir(), 'meteord-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM, headless: true, args: FLAGS,
});
const controller = await Controller.open(Number(controllerPort));
let failed = false;
try {
  for (const mode of TRANSPORTS) await checkTransport(context, controller, mode);
  await checkFallback(context, controller);
  for (const mode of TRANSPORTS) await checkPrivate(context, controller, mode);
  await demoScreenshot(context, controller);
} catch (e) {
  console.error(`FAILED: ${e.message}`);
  failed = true;
} finally {
  controller.close();
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
