/*
 * meteor.js: a small browser client for meteord (a Comet server).
 *
 * It keeps the classic Meteor page API:
 *
 *   Meteor.hostid = "abc123";                       // optional, random by default
 *   Meteor.mode = "xhrinteractive";                 // or longpoll, smartpoll, simplepoll
 *   Meteor.joinChannel("demo", 5);                  // 5 = cached events to fetch first
 *   Meteor.registerEventCallback("process", (text, channel, id) => { ... });
 *   Meteor.connect();
 *
 * Events ("process", "reset", "eof", "statuschanged", "changemode") are
 * described at registerEventCallback below, status numbers at STATUS.
 *
 * Wire format (the bundled meteor.conf modes): the reply body is a series of
 * records, each ended by CRLF (or NUL in the flash mode):
 *
 *   ch("<channel>", <lastMsgID>);    channel info, sent first
 *   p(<id>,"<channel>","<text>");    an event; <text> is raw, as published
 *   p(-1,"");                        a ping (keep-alive)
 *   eof();                           the server closed us on purpose
 *
 * Records are matched with strict regular expressions, never evaluated. An
 * optional <script>...</script> wrapper (the default templates) is accepted.
 * Because <text> is raw, a text that itself contains `");` followed by a line
 * end cannot be told apart from the end of the record; it is cut there.
 *
 * Nothing is lost or delivered twice across reconnections: the client keeps
 * the last id seen per channel, asks for `<channel>.r<last+1>` when it
 * reconnects and drops any id it has already seen.
 *
 * The page must be served by meteord itself (same origin): the server does not
 * send CORS headers.
 */
(function (global) {
  'use strict';

  /* Status numbers, kept compatible with the classic client. */
  const STATUS = {
    UNINITIALISED: 0, // not connected: initial state, after disconnect(), or no channel joined
    LOADING: 1,       // a request is on its way, no response yet
    LOADING_FRAME: 2, // classic "loading controller frame": unused here
    FRAME_LOADED: 3,  // classic "controller frame loaded": unused here
    WAITING: 4,       // waiting to (re)connect: back-off after an error, or between polls
    CONNECTED: 5,     // the response is being read (streaming / reading a poll reply)
    DISCONNECTED: 6,  // the server sent eof() (shutdown, kicked by the same hostid, or
                      // /disconnect/<hostid>); no automatic reconnection, call connect()
  };

  const MODES = ['xhrinteractive', 'longpoll', 'smartpoll', 'simplepoll'];
  const EVENTS = ['process', 'reset', 'eof', 'statuschanged', 'changemode'];
  const CHANNEL_RE = /^[A-Za-z0-9_%-]+$/;
  const MAX_RECORD = 1 << 20; // give up on a record that grows past 1 MiB

  /* ---- record parser ------------------------------------------------ */

  // Every regex is sticky (/y): it must match exactly at `lastIndex`.
  const O = '(?:<script>)?', C = '(?:</script>)?', T = '(?:\\r\\n|\\0)';
  const RE_MSG = new RegExp(O + 'p\\((\\d+),"([A-Za-z0-9_%-]+)","([\\s\\S]*?)"\\);' + C + T, 'y');
  const RE_MSG_START = new RegExp(O + 'p\\(\\d+,"[A-Za-z0-9_%-]+","', 'y');
  const RE_PING = new RegExp(O + 'p\\(-1,""\\);' + C + T, 'y');
  const RE_CH = new RegExp(O + 'ch\\("([A-Za-z0-9_%-]+)", ?(\\d+)\\);' + C + T, 'y');
  const RE_EOF = new RegExp(O + 'eof\\(\\);' + C + T, 'y');
  const RE_LINE_END = /\r\n|\0/g;

  function matchAt(re, buf, pos) {
    re.lastIndex = pos;
    return re.exec(buf);
  }

  /*
   * Returns feed(text): appends decoded text and calls onRecord(type, a, b, c)
   * for each complete record: ("msg", id, channel, text), ("ping"),
   * ("ch", channel, lastId) or ("eof"). Unknown lines (HTML from other
   * templates, etc.) are skipped. onRecord may return false to stop parsing.
   */
  function createParser(onRecord) {
    let buf = '';
    return function feed(text) {
      buf += text;
      let pos = 0, m;
      while (pos < buf.length) {
        let rec;
        if ((m = matchAt(RE_MSG, buf, pos))) rec = ['msg', Number(m[1]), m[2], m[3]];
        else if ((m = matchAt(RE_PING, buf, pos))) rec = ['ping'];
        else if ((m = matchAt(RE_CH, buf, pos))) rec = ['ch', m[1], Number(m[2])];
        else if ((m = matchAt(RE_EOF, buf, pos))) rec = ['eof'];
        if (rec) {
          pos += m[0].length;
          if (onRecord(...rec) === false) break;
          continue;
        }
        // An event whose end has not arrived yet (its text may hold line ends).
        if (matchAt(RE_MSG_START, buf, pos) && buf.length - pos < MAX_RECORD) break;
        // Anything else: skip to the next line end, or wait for one.
        RE_LINE_END.lastIndex = pos;
        if (!RE_LINE_END.exec(buf)) {
          if (buf.length - pos >= MAX_RECORD) pos = buf.length;
          break;
        }
        pos = RE_LINE_END.lastIndex;
      }
      buf = buf.slice(pos);
    };
  }

  /* ---- helpers ------------------------------------------------------- */

  function randomId(len) {
    const chars = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
    const bytes = new Uint8Array(len);
    if (global.crypto && global.crypto.getRandomValues) global.crypto.getRandomValues(bytes);
    else for (let i = 0; i < len; i++) bytes[i] = Math.floor(Math.random() * 256);
    return Array.from(bytes, (b) => chars[b % chars.length]).join('');
  }

  const loc = global.location && /^https?:$/.test(global.location.protocol) ? global.location : null;

  /* ---- client state ------------------------------------------------- */

  const channels = new Map(); // name -> { backtrack, last }  (last: null = not synced yet)
  const callbacks = {};       // event -> [fn]
  EVENTS.forEach((e) => { callbacks[e] = []; });

  let wanted = false;    // connect() called and not undone
  let gen = 0;           // bumped on every (re)start; stale requests check it and quit
  let abort = null;      // AbortController of the current request
  let timer = null;      // pending (re)connect timer
  let watchdog = null;   // fires when a pinging stream goes silent
  let backoff = 0;       // current error back-off, ms
  let lastMode = null;   // mode of the previous request, for "changemode"

  function fire(evt, ...args) {
    for (const fn of callbacks[evt]) {
      try { fn(...args); } catch (e) { console.error('Meteor ' + evt + ' callback:', e); }
    }
  }

  function setStatus(s) {
    if (Meteor.status === s) return;
    Meteor.status = s;
    fire('statuschanged', s);
  }

  function log(...args) {
    if (Meteor.debug) console.debug('Meteor:', ...args);
  }

  // Stop whatever is running: timers and the request in flight.
  function stop() {
    gen++;
    clearTimeout(timer);
    clearTimeout(watchdog);
    timer = watchdog = null;
    if (abort) abort.abort();
    abort = null;
  }

  // (Re)start the connection after `delay` ms, if connected and there is a channel.
  function restart(delay) {
    stop();
    if (!wanted) return;
    if (channels.size === 0) { setStatus(STATUS.UNINITIALISED); return; }
    const myGen = gen;
    if (delay > 0) setStatus(STATUS.WAITING);
    timer = setTimeout(() => { timer = null; request(myGen); }, delay);
  }

  function nextBackoff() {
    backoff = Math.min(Meteor.maxBackoff, backoff ? backoff * 2 : 1000);
    return Math.round(backoff * (0.75 + Math.random() * 0.5)); // +/- 25% jitter
  }

  function baseUrl() {
    const port = Meteor.port ? ':' + Meteor.port : '';
    return Meteor.scheme + '://' + Meteor.host + port;
  }

  // "<name>" / "<name>.b<n>" / "<name>.r<id>" for each joined channel.
  function channelDefs() {
    const defs = [];
    for (const [name, c] of channels) {
      if (c.last !== null) defs.push(name + '.r' + (c.last + 1));
      else if (c.backtrack > 0) defs.push(name + '.b' + c.backtrack);
      else defs.push(name);
    }
    return defs.join('/');
  }

  /* ---- one request -------------------------------------------------- */

  async function request(myGen) {
    const mode = Meteor.mode;
    if (lastMode !== null && lastMode !== mode) fire('changemode', mode);
    lastMode = mode;
    const streaming = mode === 'xhrinteractive';
    const polling = mode !== 'xhrinteractive' && mode !== 'longpoll';

    const url = baseUrl() + Meteor.path + '/' + Meteor.hostid + '/' + mode + '/' +
      channelDefs() + '?nc=' + Date.now();
    const ac = new AbortController();
    abort = ac;
    const started = Date.now();
    let records = 0, opened = false, sawPing = false, sawEof = false, resync = false, failed = null;

    // A stream that has pinged us once is expected to keep doing so.
    const kick = () => {
      clearTimeout(watchdog);
      if (sawPing && Meteor.pingTimeout > 0) {
        watchdog = setTimeout(() => { log('no ping, reconnecting'); ac.abort(); }, Meteor.pingTimeout);
      }
    };

    const feed = createParser((type, a, b, c) => {
      if (myGen !== gen) return false;
      records++;
      if (type === 'msg') {
        const ch = channels.get(b);
        if (!ch || (ch.last !== null && a <= ch.last)) return; // left, or already seen
        ch.last = a;
        fire('process', c, b, a);
      } else if (type === 'ch') {
        const ch = channels.get(a);
        if (!ch) return;
        if (ch.last === null) {
          // Plain join: start after the newest id. With a backlog on its way
          // (.b<n> on a non-empty channel) the events themselves set it.
          if (!(ch.backtrack > 0 && b > 0)) ch.last = b;
        } else if (b < ch.last) {
          // Ids went backwards: the server restarted or the cache was emptied.
          // Start the channel over; if it holds events we have not seen,
          // ask again for all of them.
          ch.last = 0;
          if (b > 0) { resync = true; return false; }
        }
      } else if (type === 'ping') {
        sawPing = true;
      } else if (type === 'eof') {
        sawEof = true;
        return false;
      }
    });

    setStatus(STATUS.LOADING);
    log('GET', url);
    try {
      const res = await fetch(url, { cache: 'no-store', signal: ac.signal });
      if (myGen !== gen) return;
      if (!res.ok) throw new Error('HTTP ' + res.status);
      opened = true;
      setStatus(STATUS.CONNECTED);
      if (res.body && res.body.getReader) {
        const reader = res.body.getReader();
        const decoder = new TextDecoder('utf-8');
        for (;;) {
          kick();
          const { done, value } = await reader.read();
          if (myGen !== gen) return;
          if (done) break;
          feed(decoder.decode(value, { stream: true }));
          if (sawEof || resync || myGen !== gen) { reader.cancel().catch(() => {}); break; }
        }
      } else {
        // No streaming body in this browser: streaming cannot work, poll instead.
        if (streaming) { Meteor.mode = 'longpoll'; }
        feed(await res.text());
      }
    } catch (e) {
      if (myGen !== gen) return;
      failed = e;
    }
    clearTimeout(watchdog);
    if (myGen !== gen) return;
    abort = null;

    if (sawEof) {
      // The server closed us on purpose: do not fight it (another page with the
      // same hostid would be kicked back and forth).
      log('eof');
      wanted = false;
      stop();
      setStatus(STATUS.DISCONNECTED);
      fire('eof');
      return;
    }
    if (resync) { log('server ids went backwards, resyncing'); restart(0); return; }
    if (failed) log('request failed:', failed.message || failed);

    const healthy = !failed && (records > 0 || Date.now() - started >= 1000);
    if (healthy) backoff = 0;
    let delay;
    if (polling) delay = failed ? Math.max(Meteor.pollfreq, nextBackoff()) : Meteor.pollfreq;
    else delay = healthy ? 0 : nextBackoff();
    if (streaming && opened) fire('reset'); // the stream we had is gone
    restart(delay);
  }

  /* ---- public API --------------------------------------------------- */

  const Meteor = {
    host: loc ? loc.hostname : '127.0.0.1',
    port: loc ? loc.port : 4670,     // '' = the scheme's default port
    scheme: loc ? loc.protocol.slice(0, -1) : 'http',
    path: '/push',                   // SubscriberDynamicPageAddress
    hostid: randomId(12),            // [0-9a-zA-Z]+; one persistent connection per hostid
    mode: 'xhrinteractive',
    pollfreq: 2000,                  // ms between requests in the poll modes
    maxBackoff: 30000,               // ms, longest wait after repeated errors
    pingTimeout: 30000,              // ms of silence after which a pinging stream is
                                     // considered dead and reopened (0 = never)
    debug: false,                    // log to the console
    status: STATUS.UNINITIALISED,
    STATUS,
    MODES,

    /* Subscribe to a channel; backtrack = cached events to fetch first (.b<n>). */
    joinChannel(name, backtrack) {
      if (!CHANNEL_RE.test(name)) throw new Error('invalid channel name: ' + name);
      if (channels.has(name)) return;
      channels.set(name, { backtrack: Math.max(0, Math.floor(Number(backtrack) || 0)), last: null });
      if (wanted) restart(0);
    },

    leaveChannel(name) {
      if (channels.delete(name) && wanted) restart(0);
    },

    /*
     * "process"       fn(text, channel, id)  an event (each id once, in order per channel)
     * "reset"         fn()                   the stream ended without eof(); reconnecting
     * "eof"           fn()                   the server closed us on purpose (see status 6)
     * "statuschanged" fn(status)             see STATUS above
     * "changemode"    fn(mode)               the next request uses another mode
     */
    registerEventCallback(evt, fn) {
      if (!callbacks[evt]) throw new Error('unknown event: ' + evt);
      if (typeof fn === 'function') callbacks[evt].push(fn);
    },

    /* Switch mode; takes effect at once when connected. */
    setMode(mode) {
      if (!MODES.includes(mode)) throw new Error('unknown mode: ' + mode);
      Meteor.mode = mode;
      if (wanted) restart(0);
    },

    connect() {
      wanted = true;
      backoff = 0;
      restart(0);
    },

    disconnect() {
      wanted = false;
      stop();
      setStatus(STATUS.UNINITIALISED);
    },

    _createParser: createParser, // exposed for tests
  };

  global.Meteor = Meteor;
  if (typeof module === 'object' && module.exports) module.exports = Meteor;
})(globalThis);
