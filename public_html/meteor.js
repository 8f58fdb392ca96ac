/*
 * meteor.js: the browser client of meteord. No dependencies, no build step:
 * load it with <script src="/meteor.js"></script> and use the global Meteor.
 *
 * It keeps the classic Meteor page API (host, port, scheme, hostid, mode,
 * joinChannel, leaveChannel, registerEventCallback, connect, disconnect, the
 * status numbers) and speaks the websocket, sse, fetchstream and jsonlongpoll
 * modes of the bundled meteor.conf: a WebSocket (one JSON text frame per
 * event; it does not count against the browser's six HTTP/1.1 connections
 * per host), falling back to EventSource when the upgrade fails (a proxy
 * that drops Upgrade), else fetch() reading a stream of JSON lines, else
 * long-polling with the same JSON lines over fetch(), which lets the browser
 * send every request on the same kept-alive connection (the server's
 * jsonlongpoll replies carry Content-Length).
 *
 * Exactly once, in order: the client keeps one connection at a time, remembers
 * the last id delivered per channel and resumes each channel with
 * <name>.r<last + 1> whenever it reconnects (after an error, a dropped stream,
 * the server's end-of-stream message, or between long-poll replies).
 * README.md, section "In the browser", documents it for page authors.
 */
(function (global) {
  'use strict';

  const CHANNEL_NAME = /^[A-Za-z0-9_%-]+$/;
  const TRANSPORTS = ['websocket', 'sse', 'fetchstream', 'jsonlongpoll']; // best first
  // Classic mode names and the transport each now means ('' = the best one).
  const CLASSIC_MODES = {
    stream: '', iframe: '', serversent: 'sse', xhrinteractive: 'fetchstream',
    longpoll: 'jsonlongpoll', smartpoll: 'jsonlongpoll', simplepoll: 'jsonlongpoll',
  };
  const SUPPORTED = {
    websocket: () => typeof global.WebSocket === 'function',
    sse: () => typeof global.EventSource === 'function',
    fetchstream: () => typeof global.fetch === 'function' && typeof global.ReadableStream === 'function',
    jsonlongpoll: () => typeof global.fetch === 'function',
  };
  const FIRST_RETRY = 1000; // ms before the first reconnection attempt, doubled per failure
  const LAST_RETRY = 30000; // ms, the longest wait between attempts
  const HEALTHY = 5000;     // ms a connection must stay open (or deliver an event) to reset the back-off
  const QUICK_REPLY = 1000; // ms: a long-poll reply this fast and without events counts as a failure

  const channels = new Map(); // name -> { backtrack, last }; last: id delivered last, null = position unknown
  const callbacks = { process: [], reset: [], eof: [], statuschanged: [], changemode: [] };
  let wanted = false;  // connect() called and disconnect() not called since
  let current = null;  // the connection in flight
  let timer = null;    // the pending (re)connection
  let failures = 0;    // consecutive failed connections, for the back-off

  const here = global.location && /^https?:$/.test(global.location.protocol) ? global.location : null;

  function randomId() {
    const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
    const bytes = global.crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join('');
  }

  function log(...args) {
    if (Meteor.debugmode) console.log('Meteor:', ...args);
  }

  function fire(event, ...args) {
    for (const fn of callbacks[event]) {
      try {
        fn(...args);
      } catch (e) {
        console.error('Meteor ' + event + ' callback failed:', e);
      }
    }
  }

  function setStatus(status) {
    if (Meteor.status === status) return;
    Meteor.status = status;
    fire('statuschanged', status);
  }

  /* The transport to use for Meteor.mode: the one asked for (classic names
     translated), or the next one this browser supports. */
  function pickMode(asked) {
    const mode = asked in CLASSIC_MODES ? CLASSIC_MODES[asked] : asked;
    if (mode !== '' && !TRANSPORTS.includes(mode)) throw new Error('Meteor: unknown mode ' + asked);
    const first = mode === '' ? 0 : TRANSPORTS.indexOf(mode);
    const usable = TRANSPORTS.slice(first).find((t) => SUPPORTED[t]());
    if (!usable) throw new Error('Meteor: this browser has neither EventSource nor fetch');
    return usable;
  }

  function subscribeUrl(mode) {
    const defs = [];
    for (const [name, ch] of channels) {
      if (ch.last !== null) defs.push(name + '.r' + (ch.last + 1));
      else if (ch.backtrack > 0) defs.push(name + '.b' + ch.backtrack);
      else if (ch.backtrack < 0) defs.push(name + '.h');
      else defs.push(name);
    }
    const port = Meteor.port ? ':' + Meteor.port : '';
    return Meteor.scheme + '://' + Meteor.host + port + Meteor.path + '/' + Meteor.hostid +
      '/' + mode + '/' + defs.join('/') + '?nc=' + Date.now();
  }

  /* ---- transports: open(url, conn) starts a request and returns close().
     They report to conn: waiting() (a long-poll request is outstanding),
     opened(), record(object) with the object shapes of
     the JSON modes, end(reason). */

  function openEventSource(url, conn) {
    const source = new EventSource(url);
    source.onopen = () => conn.opened();
    // Every event carries its id; the end-of-stream event has none, so it
    // repeats the previous one. That tells it from an event on a channel "eof".
    let lastId = '';
    const onEvent = (e) => {
      if (!(e instanceof MessageEvent)) return; // the browser's own open/error on a channel of that name
      if (e.lastEventId === lastId) {
        if (e.type === 'eof') conn.record({ eof: true });
        return;
      }
      lastId = e.lastEventId;
      conn.record({ id: Number(lastId), channel: e.type, text: e.data });
    };
    for (const type of new Set([...channels.keys(), 'eof'])) source.addEventListener(type, onEvent);
    // Where each channel stood when we subscribed (no id: a name no channel can have).
    source.addEventListener('meteor.channel', (e) => {
      try { conn.record(JSON.parse(e.data)); } catch (err) { log('bad channel info', err); }
    });
    // No automatic reconnection: the client resumes itself, channel by channel.
    // CLOSED here means the server's answer was not a 200 event stream.
    source.onerror = () => conn.end(source.readyState === EventSource.CLOSED ? 'refused' : 'lost');
    return () => source.close();
  }

  function openWebSocket(url, conn) {
    const socket = new WebSocket(url.replace(/^http/, 'ws'));
    let opened = false;
    socket.onopen = () => {
      opened = true;
      conn.opened();
    };
    // One JSON object per text frame, as the fetchstream lines. The server's
    // ping frames are answered by the browser itself.
    socket.onmessage = (e) => {
      let rec;
      try { rec = JSON.parse(e.data); } catch (err) { return log('bad frame', err); }
      conn.record(rec);
    };
    // Never opened: the upgrade failed (or the server is away); fall back.
    // 1000: a normal end (a non-persistent mode); any other code: reconnect.
    socket.onclose = (e) => {
      log('websocket closed', e.code, e.reason);
      conn.end(!opened ? 'refused' : e.code === 1000 ? 'done' : 'lost');
    };
    return () => {
      socket.onclose = null;
      socket.onmessage = null;
      if (socket.readyState <= WebSocket.OPEN) socket.close();
    };
  }

  function openFetch(url, conn, streaming) {
    const abort = new AbortController();
    let silence = null;
    // A connection that says nothing for pingtimeout ms is presumed dead.
    const awake = () => {
      clearTimeout(silence);
      if (Meteor.pingtimeout > 0) silence = setTimeout(() => abort.abort(), Meteor.pingtimeout);
    };
    let pending = '';
    const feed = (text) => {
      const lines = (pending + text).split('\n');
      pending = lines.pop();
      for (const line of lines) if (line.trim() !== '') conn.record(JSON.parse(line));
    };
    (async () => {
      awake();
      const reply = fetch(url, { cache: 'no-store', signal: abort.signal });
      // A kept-alive long-poll reply comes whole when it has an event, so the
      // poll counts as connected while it is outstanding.
      if (!streaming) conn.waiting();
      const res = await reply;
      if (!res.ok) throw new Error('HTTP ' + res.status);
      if (!res.body) {
        if (streaming) return 'refused'; // this browser cannot read a body as it grows
        conn.opened();
        feed(await res.text() + '\n');
        return 'done';
      }
      conn.opened();
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        awake();
        const { done, value } = await reader.read();
        if (done) break;
        feed(decoder.decode(value, { stream: true }));
      }
      feed(decoder.decode() + '\n');
      return 'done';
    })().then(conn.end, conn.end).finally(() => clearTimeout(silence));
    return () => {
      clearTimeout(silence);
      abort.abort();
    };
  }

  const OPEN = {
    websocket: openWebSocket,
    sse: openEventSource,
    fetchstream: (url, conn) => openFetch(url, conn, true),
    jsonlongpoll: (url, conn) => openFetch(url, conn, false),
  };

  /* ---- private channels: the page's token (README, "Private channels") ----
     Meteor.token is null, a string, or a function fn(previous) that returns the
     token or a Promise of it. The function is asked before every connection,
     so the page decides how to refresh: previous is the token of the last
     connection if that one ended normally (a long-poll reply), else null (the
     first connection, or the server refused the token or closed the stream at
     its exp, or the connection failed): then the page should hand a fresh one.
     The token travels as the token= query parameter. */
  const tokens = {
    last: null,      // the token of the last connection, while it is still good
    used: false,     // the connection in flight carries a token
    excused: false,  // one refusal was already put down to the token
    get(then, fail) {
      const hook = Meteor.token;
      if (typeof hook !== 'function') {
        tokens.used = Boolean(hook);
        return then(hook || null);
      }
      let result;
      try {
        result = hook(tokens.last);
      } catch (e) {
        return fail(e);
      }
      Promise.resolve(result).then((token) => {
        tokens.last = token || null;
        tokens.used = Boolean(token);
        then(tokens.last);
      }, fail);
    },
    ended(normal) {
      if (!normal) tokens.last = null;
    },
    opened() {
      tokens.excused = false;
    },
    /* EventSource cannot tell a 401 from a server without the mode: the first
       refusal of a connection with a token is put down to the token (a fresh
       one is asked for), a second one to the transport. */
    refusedByToken() {
      if (!tokens.used || tokens.excused) return false;
      tokens.excused = true;
      return true;
    },
  };

  /* ---- the connection cycle ---- */

  function deliver(id, name, text) {
    const ch = channels.get(name);
    if (!ch) return; // left since the request was made
    // On one connection a channel's ids only grow and start above ch.last;
    // a lower one means the server restarted and counts from 1 again.
    if (ch.last !== null && id <= ch.last) log('ids went back: the server restarted');
    ch.last = id;
    fire('process', text, name, id);
  }

  /* Channel info (JSON modes): where the channel stood when we subscribed.
     Returns true when the request must be made again from the start. */
  function channelInfo(name, lastId) {
    const ch = channels.get(name);
    if (!ch) return false;
    if (ch.last === null) {
      // No backlog coming (or an empty channel): we are now at its newest id.
      if (ch.backtrack === 0 || lastId === 0) ch.last = lastId;
      return false;
    }
    if (lastId >= ch.last) return false;
    // The server restarted or lost its cache: every event it holds is new.
    ch.last = 0;
    return lastId > 0;
  }

  function backoff() {
    const delay = Math.min(LAST_RETRY, FIRST_RETRY * 2 ** Math.max(0, failures - 1));
    return Math.round(delay * (0.5 + Math.random() / 2));
  }

  function schedule(delay) {
    if (delay > 0) setStatus(3);
    timer = setTimeout(connectNow, delay);
  }

  function stop() {
    clearTimeout(timer);
    timer = null;
    if (current) current.cancel();
  }

  function connectNow() {
    timer = null;
    if (!wanted) return;
    if (channels.size === 0) return setStatus(0); // until a channel is joined
    const mode = Meteor.mode;
    const askedAt = Date.now();
    let openedAt = 0, delivered = 0, done = false, close = null;

    const finish = (reason) => {
      if (done) return;
      done = true;
      current = null;
      close();
      tokens.ended(reason === 'resync' || (reason === 'done' && mode === 'jsonlongpoll'));
      if (reason instanceof Error) {
        log('connection failed:', reason.message);
        if (!openedAt && Meteor.status === 4) setStatus(1); // the poll never got a reply
      }
      if (reason === 'eof') {
        setStatus(6);
        fire('eof'); // may call disconnect() to stay away
      }
      if (!wanted) return;
      // A kept-alive long-poll reply comes whole, head included, when it has
      // an event or its MaxTime ends: it lived from the request.
      const since = mode === 'jsonlongpoll' ? askedAt : openedAt;
      const lived = openedAt ? Date.now() - since : 0;
      if (openedAt && (delivered > 0 || lived >= HEALTHY)) failures = 0;
      if (reason === 'resync') return schedule(0);
      if (reason === 'done' && mode === 'jsonlongpoll' && (delivered > 0 || lived >= QUICK_REPLY)) {
        return schedule(0); // the normal end of a long-poll reply
      }
      if (reason === 'refused' && !tokens.refusedByToken()) fallBack(mode);
      if (reason !== 'eof') fire('reset');
      failures++;
      schedule(backoff());
    };

    const conn = {
      waiting() {
        if (!done && Meteor.status !== 5) setStatus(4);
      },
      opened() {
        if (done) return;
        openedAt = Date.now();
        tokens.opened();
        if (Meteor.status !== 5) setStatus(4);
      },
      record(rec) {
        if (done) return;
        if (rec.eof) return finish('eof');
        if (typeof rec.id === 'number') {
          delivered++;
          setStatus(5);
          deliver(rec.id, rec.channel, rec.text);
        } else if (typeof rec.lastMsgID === 'number') {
          if (channelInfo(rec.channel, rec.lastMsgID)) finish('resync');
        } else if (rec.ping) {
          setStatus(5);
        }
      },
      end: finish,
      cancel() {
        done = true;
        current = null;
        close();
      },
    };

    if (Meteor.status !== 4 && Meteor.status !== 5) setStatus(1);
    current = conn;
    close = () => {};
    tokens.get((token) => {
      if (done) return;
      const url = subscribeUrl(mode);
      log('GET', url); // without the token
      close = OPEN[mode](token ? url + '&token=' + encodeURIComponent(token) : url, conn);
    }, finish);
  }

  /* The server or the browser cannot do this transport: use the next one. */
  function fallBack(mode) {
    const next = TRANSPORTS.slice(TRANSPORTS.indexOf(mode) + 1).find((t) => SUPPORTED[t]());
    if (!next || Meteor.mode !== mode) return;
    log('falling back from', mode, 'to', next);
    Meteor.mode = next;
    failures = 0;
    fire('changemode', next);
  }

  /* Apply a change of channels to a live connection (once per script turn). */
  function resubscribe() {
    if (!wanted) return;
    stop();
    schedule(0);
  }

  const Meteor = {
    host: here ? here.hostname : '127.0.0.1',
    port: here ? here.port : '4670',   // '' = the scheme's default port
    scheme: here ? here.protocol.slice(0, -1) : 'http',
    path: '/push',                     // the server's SubscriberDynamicPageAddress
    hostid: randomId(),                // one per page: a second connection with it would replace the first
    mode: 'stream',                    // 'stream' = the best transport, or 'websocket', 'sse', 'fetchstream', 'jsonlongpoll'
    pingtimeout: 30000,                // ms of silence after which a fetch connection is reopened (0 = never; a WebSocket is checked by the server's ping frames)
    debugmode: false,                  // log to the console
    token: null,                       // private channels: a token, or fn(previous) returning one (or a Promise)
    status: 0,

    /* backtrack: n > 0 = the last n cached events first, 0 = only new ones,
       negative or omitted = every cached event (as the classic client). */
    joinChannel(name, backtrack) {
      if (!CHANNEL_NAME.test(name)) throw new Error('Meteor: invalid channel name ' + name);
      if (channels.has(name)) throw new Error('Meteor: already joined ' + name);
      const n = Number(backtrack);
      channels.set(name, { backtrack: n >= 0 ? Math.floor(n) : -1, last: null });
      resubscribe();
    },

    leaveChannel(name) {
      if (!channels.delete(name)) throw new Error('Meteor: not joined ' + name);
      resubscribe();
    },

    /* "process" fn(text, channel, id), "reset" fn(), "eof" fn(),
       "statuschanged" fn(status), "changemode" fn(mode). */
    registerEventCallback(event, fn) {
      if (!callbacks[event]) throw new Error('Meteor: unknown event ' + event);
      callbacks[event].push(fn);
    },

    connect() {
      Meteor.mode = pickMode(Meteor.mode);
      if (!Meteor.hostid) Meteor.hostid = randomId();
      wanted = true;
      failures = 0;
      stop();
      connectNow();
    },

    disconnect() {
      wanted = false;
      stop();
      if (Meteor.status !== 6) setStatus(0);
    },
  };

  global.Meteor = Meteor;
})(globalThis);
