// ws_client.mjs: meteord's WebSocket subscribers through an independent
// client, the `ws` package from npm. Run by tests/browser.rs:
//
//   node tests/browser/ws_client.mjs <subscriber-port> <controller-port> <meteord-pid>
//
// One client receives a backlog and 1,000 live events, each exactly once and
// in order; a quiet one answers the server's pings on its own and stays
// open; then the close codes: 4001 for /disconnect, 4000 for a replaced
// hostid, 1003 for a data frame from the client, a clean close handshake
// started by the client (1000), and last 1001 when meteord gets SIGTERM.
// Exits 0 when everything held.

import WebSocket from 'ws';
import { connect } from 'node:net';

const WAIT = 15000;
const [subscriberPort, controllerPort, serverPid] = process.argv.slice(2).map(Number);
const base = `ws://127.0.0.1:${subscriberPort}/push`;

function withDeadline(promise, what, ms = WAIT) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/* The controller line protocol: sends lines, resolves with their reply lines. */
function controller() {
  const socket = connect(controllerPort, '127.0.0.1');
  const waiting = [];
  let buffered = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk) => {
    const lines = (buffered + chunk).split('\r\n');
    buffered = lines.pop();
    for (const line of lines) waiting.shift()(line);
  });
  return {
    commands(lines) {
      const replies = lines.map(() => new Promise((resolve) => waiting.push(resolve)));
      socket.write(lines.map((l) => l + '\n').join(''));
      return withDeadline(Promise.all(replies), `${lines.length} replies`);
    },
    async publish(channel, texts) {
      const replies = await this.commands(texts.map((t) => `ADDMESSAGE ${channel} ${t}`));
      return replies.map((r, i) => {
        const m = /^OK\t(\d+)$/.exec(r);
        if (!m) throw new Error(`ADDMESSAGE answered ${r}`);
        return { id: Number(m[1]), channel, text: texts[i] };
      });
    },
    close: () => socket.destroy(),
  };
}

/* Opens a client; collects its text frames (parsed) and resolves `closed`
   with the close code. */
function client(path) {
  const ws = new WebSocket(`${base}${path}`);
  const got = [];
  const c = { ws, got, pings: 0 };
  c.opened = withDeadline(new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('unexpected-response', (req, res) => reject(new Error(`HTTP ${res.statusCode} for ${path}`)));
    ws.once('error', reject);
  }), `open ${path}`);
  ws.on('message', (data, isBinary) => {
    if (isBinary) throw new Error('a binary frame');
    got.push(JSON.parse(data.toString('utf8')));
  });
  ws.on('ping', () => c.pings++);
  c.closed = new Promise((resolve) => ws.once('close', (code) => resolve(code)));
  return c;
}

async function until(what, condition) {
  const deadline = Date.now() + WAIT;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function same(got, want, what) {
  if (JSON.stringify(got) !== JSON.stringify(want)) {
    const i = got.findIndex((e, k) => JSON.stringify(e) !== JSON.stringify(want[k]));
    throw new Error(`${what}: differs at #${i}: ${JSON.stringify(got[i])} vs ${JSON.stringify(want[i])} ` +
      `(${got.length} got, ${want.length} expected)`);
  }
}

async function expectClose(c, code, what) {
  const got = await withDeadline(c.closed, what);
  if (got !== code) throw new Error(`${what}: close code ${got}, expected ${code}`);
  console.log(`ok ${what}: close code ${code}`);
}

const ctl = controller();
let failed = false;
try {
  const quiet = client('/quiet/websocket/idle');
  await quiet.opened;

  const backlog = await ctl.publish('lib', Array.from({ length: 10 }, (_, i) => `backlog ${i} "ü€😀" </script>`));
  const c = client('/lib1/websocket/lib.b10');
  await c.opened;
  const want = [{ channel: 'lib', lastMsgID: backlog.at(-1).id }, ...backlog];
  await until('the backlog', () => c.got.length >= want.length);
  for (let i = 0; i < 1000; i += 100) {
    want.push(...await ctl.publish('lib', Array.from({ length: 100 }, (_, k) => `live ${i + k}`)));
  }
  await until('1,000 live events', () => c.got.length >= want.length);
  same(c.got, want, 'backlog and 1,000 events');
  console.log(`ok ws client: ${want.length - 1} events exactly once and in order`);

  // Server endings: the shutdown message as a last text frame, then the code.
  const reply = await fetch(`http://127.0.0.1:${subscriberPort}/disconnect/lib1`);
  await reply.text();
  await expectClose(c, 4001, '/disconnect');
  same(c.got.at(-1), { eof: true }, 'the last frame before 4001');

  const first = client('/same/websocket/lib');
  await first.opened;
  const second = client('/same/websocket/lib');
  await second.opened;
  await expectClose(first, 4000, 'replaced hostid');
  same(first.got.at(-1), { eof: true }, 'the last frame before 4000');

  second.ws.send('subscribers do not publish');
  await expectClose(second, 1003, 'a text frame from the client');

  const polite = client('/polite/websocket/lib');
  await polite.opened;
  polite.ws.close(1000, 'bye');
  await expectClose(polite, 1000, 'a close handshake started by the client');

  // Pings every 3 s: ws answers them itself, so the quiet client stays open.
  await until('two pings', () => quiet.pings >= 2);
  if (quiet.ws.readyState !== WebSocket.OPEN) throw new Error('the quiet client was closed');
  console.log(`ok pings: ${quiet.pings} ping frames answered, still open`);

  // Shutdown: the server drains its subscribers with 1001 going away.
  process.kill(serverPid, 'SIGTERM');
  await expectClose(quiet, 1001, 'SIGTERM');
  same(quiet.got.at(-1), { eof: true }, 'the last frame before 1001');
} catch (e) {
  console.error(`FAILED: ${e.message}`);
  failed = true;
} finally {
  ctl.close();
}
process.exit(failed ? 1 : 0);
