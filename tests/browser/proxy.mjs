// proxy.mjs: meteord behind the reverse-proxy recipes of tools/deploy/, in a
// real browser. tests/proxy.rs starts meteord (PingInterval 3), then nginx
// and Caddy from the recipes with a throwaway self-signed certificate, and
// runs:
//
//   node tests/browser/proxy.mjs <controller-port> <ping-seconds> <name>=https://localhost:<port> ...
//
// Through each proxy, Debian's Chromium (headless, through playwright-core):
// - loads the demo page over https:// and gets events over every transport
//   of meteor.js (websocket, sse, fetchstream, jsonlongpoll): each event
//   must be on the page before the next one is published, so a proxy that
//   held bytes back (buffering, gzip) fails here;
// - reads the streams of sse, fetchstream and the classic streaming modes
//   (xhrinteractive, iframe, flash) with fetch() as they grow: each event
//   arrives before the next is published, then a ping arrives;
// - checks the page and every stream came over HTTP/2 (the protocol Chromium
//   reports for each response), and that 8 EventSources at once all get an
//   event (over HTTP/1.1 a browser opens at most 6 connections to a host);
// - keeps the WebSocket of the first page open through several ping
//   intervals: still the same socket afterwards (pongs got back to meteord).
// Exits 0 when everything held.

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const CHROMIUM = '/usr/bin/chromium';
const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run',
];
const TRANSPORTS = ['websocket', 'sse', 'fetchstream', 'jsonlongpoll'];
const EVENTS = 4; // published one at a time per transport
const WAIT = 10000; // ms allowed for any one expected thing to happen

const [controllerPort, pingSeconds, ...proxyArgs] = process.argv.slice(2);
if (!proxyArgs.length) {
  console.error('usage: node proxy.mjs <controller-port> <ping-seconds> <name>=<https origin> ...');
  process.exit(2);
}
const proxies = proxyArgs.map((arg) => {
  const [name, origin] = arg.split('=');
  return { name, origin };
});

/* Publishes through the controller's HTTP endpoint; resolves with the id. */
async function publish(channel, text) {
  const reply = await fetch(`http://127.0.0.1:${controllerPort}/pub/${channel}`, {
    method: 'POST', body: text, signal: AbortSignal.timeout(WAIT),
  });
  const body = await reply.text();
  const match = /^\{"id":(\d+)\}/.exec(body);
  if (reply.status !== 200 || !match) throw new Error(`POST /pub/${channel} answered ${reply.status} ${body}`);
  return Number(match[1]);
}

/* Waits until fn(arg) holds in the page; the error says what did not happen. */
async function pageWait(page, what, fn, arg) {
  await page.waitForFunction(fn, arg, { timeout: WAIT }).catch((e) => {
    throw new Error(`${what}: not within ${WAIT} ms (${e.message.split('\n')[0]})`);
  });
}

/* A page whose responses' protocols (h2, http/1.1) are recorded by URL. */
async function newPage(context) {
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  const protocols = new Map();
  cdp.on('Network.responseReceived', (e) => protocols.set(e.response.url, e.response.protocol));
  await cdp.send('Network.enable');
  return { page, protocols };
}

/* Every response whose URL contains `part` came over HTTP/2 (and there was one). */
function expectH2(protocols, part, what) {
  const seen = [...protocols].filter(([url]) => url.includes(part));
  if (!seen.length) throw new Error(`${what}: no response for ${part} seen`);
  const other = seen.find(([, protocol]) => protocol !== 'h2');
  if (other) throw new Error(`${what}: ${other[0]} came over ${other[1]}, not h2`);
}

/* The demo page with meteor.js on one transport: each event shows on the
   page before the next one is published. Returns the page, still open. */
async function demoPage(context, proxy, mode) {
  const what = `${proxy.name} ${mode}`;
  const channel = `${proxy.name}-${mode}`;
  const { page, protocols } = await newPage(context);
  const sockets = [];
  page.on('websocket', (ws) => { if (ws.url().includes('/push/')) sockets.push(ws.url()); });
  await page.goto(`${proxy.origin}/?mode=${mode}&channel=${channel}`);
  await pageWait(page, `${what}: connected`, () => Meteor.status === 4 || Meteor.status === 5);
  for (let i = 0; i < EVENTS; i++) {
    const text = `${what} event ${i}`;
    const id = await publish(channel, text);
    await pageWait(page, `${what}: event ${id} on the page before the next is published`,
      (want) => document.querySelector('#events .text')?.textContent === want, text);
  }
  const mode_ = await page.evaluate(() => Meteor.mode);
  if (mode_ !== mode) throw new Error(`${what}: meteor.js fell back to ${mode_}`);
  expectH2(protocols, `${proxy.origin}/?mode=`, `${what}, the page`);
  if (mode === 'websocket') {
    if (sockets.length !== 1) throw new Error(`${what}: ${sockets.length} WebSockets opened, 1 expected`);
  } else {
    expectH2(protocols, `/${mode}/${channel}`, what);
  }
  console.log(`ok ${what}: ${EVENTS} events, each on the demo page before the next was published`);
  return { page, channel, sockets };
}

/* The classic stream renderings of one event and of a ping, per mode. */
const RAW = {
  sse: { event: (id, ch, t) => `id: ${id}\nevent: ${ch}\ndata: ${t}\n\n`, ping: ': ping\n\n' },
  fetchstream: {
    event: (id, ch, t) => `{"id":${id},"channel":"${ch}","text":"${t}"}\n`, ping: '{"ping":true}\n',
  },
  xhrinteractive: { event: (id, ch, t) => `p(${id},"${ch}","${t}");\r\n`, ping: 'p(-1,"");\r\n' },
  iframe: {
    event: (id, ch, t) => `<script>p(${id},"${ch}","${t}");</script>\r\n`, ping: '<script>p(-1,"");</script>\r\n',
  },
  flash: { event: (id, ch, t) => `p(${id},"${ch}","${t}");\0`, ping: 'p(-1,"");\0' },
};

/* One stream read with fetch() in the page as it grows: each event arrives
   before the next is published, a ping follows, nothing is compressed. */
async function rawStream(context, proxy, mode) {
  const what = `${proxy.name} ${mode} (read with fetch)`;
  const channel = `${proxy.name}-raw-${mode}`;
  const { page, protocols } = await newPage(context);
  await page.goto(`${proxy.origin}/meteor.js`);
  const head = await page.evaluate(async (url) => {
    window.raw = { text: '' };
    const reply = await fetch(url);
    const reader = reply.body.getReader();
    const decoder = new TextDecoder();
    (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        window.raw.text += decoder.decode(value, { stream: true });
      }
    })();
    return { status: reply.status, encoding: reply.headers.get('content-encoding') };
  }, `/push/raw${mode}/${mode}/${channel}`);
  if (head.status !== 200 || head.encoding !== null) {
    throw new Error(`${what}: answered ${head.status}, Content-Encoding ${head.encoding}`);
  }
  for (let i = 0; i < EVENTS; i++) {
    const text = `raw event ${i}`;
    const id = await publish(channel, text);
    await pageWait(page, `${what}: event ${id} before the next is published`,
      (want) => window.raw.text.includes(want), RAW[mode].event(id, channel, text));
  }
  await pageWait(page, `${what}: a ping (PingInterval ${pingSeconds} s)`,
    (want) => window.raw.text.includes(want), RAW[mode].ping);
  expectH2(protocols, `/${mode}/${channel}`, what);
  await page.close();
  console.log(`ok ${what}: ${EVENTS} events one by one, then a ping, over h2, uncompressed`);
}

/* 8 EventSources in one page, more than the 6 connections per host a
   browser opens over HTTP/1.1: over HTTP/2 all of them get the event. */
async function manyStreams(context, proxy) {
  const what = `${proxy.name} 8 EventSources in one page`;
  const channel = `${proxy.name}-many`;
  const { page, protocols } = await newPage(context);
  await page.goto(`${proxy.origin}/meteor.js`);
  await page.evaluate((ch) => {
    window.got = [];
    window.opened = 0;
    for (let i = 0; i < 8; i++) {
      const source = new EventSource(`/push/many${i}/sse/${ch}`);
      source.onopen = () => { window.opened++; };
      source.addEventListener(ch, (e) => window.got.push(`${i}:${e.data}`));
    }
  }, channel);
  await pageWait(page, `${what}: all open`, () => window.opened === 8);
  await publish(channel, 'to all');
  await pageWait(page, `${what}: the event on each`, () => window.got.length === 8);
  expectH2(protocols, `/sse/${channel}`, what);
  await page.close();
  console.log(`ok ${what}: all open at once and each got the event, over h2`);
}

const profile = mkdtempSync(join(tmpdir(), 'meteord-chromium-proxy-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM, headless: true, args: FLAGS, ignoreHTTPSErrors: true,
});
let failed = false;
try {
  for (const proxy of proxies) {
    const started = Date.now();
    const first = await demoPage(context, proxy, TRANSPORTS[0]);
    for (const mode of TRANSPORTS.slice(1)) await (await demoPage(context, proxy, mode)).page.close();
    for (const mode of Object.keys(RAW)) await rawStream(context, proxy, mode);
    await manyStreams(context, proxy);
    // The WebSocket page has been open all along: after three ping
    // intervals it still has its one socket and gets one more event.
    const left = 3 * 1000 * Number(pingSeconds) - (Date.now() - started);
    if (left > 0) await first.page.waitForTimeout(left);
    const text = `${proxy.name} websocket, after ${((Date.now() - started) / 1000).toFixed(1)} s`;
    await publish(first.channel, text);
    await pageWait(first.page, `${proxy.name} websocket: an event after several ping intervals`,
      (want) => document.querySelector('#events .text')?.textContent === want, text);
    if (first.sockets.length !== 1) {
      throw new Error(`${proxy.name} websocket: reconnected (${first.sockets.length} sockets) while idle`);
    }
    await first.page.close();
    console.log(`ok ${text}: the same WebSocket still delivers (pings answered through the proxy)`);
  }
} catch (e) {
  console.error(`FAILED: ${e.message}`);
  failed = true;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
