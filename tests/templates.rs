//! Templates: every placeholder, `~~`, unknown names, and the classic modes
//! of the bundled meteor.conf rendered byte for byte.

mod common;

use common::*;
use std::time::Duration;

const CONF: &str = "\
[hdr]
Persist 0
HeaderTemplate ~status~|~server~|~servertime~|~channelinfo~|~bogus~|~~|\\n
ChannelInfoTemplate <~name~,~lastMsgID~,~messageCount~,~subscriberCount~,~what~>
MessageTemplate ~id~|~channel~|~text~|~timestamp~|~nope~|~~\\n

[tilde]
Persist 0
HeaderTemplate ~~~~H~~\\n
MessageTemplate a~~b~id~~~c~~~~\\n

[stream]
Persist 1
HeaderTemplate HDR ~status~\\n
MessageTemplate ~id~:~channel~:~text~\\n
";

fn body_after<'a>(all: &'a str, prefix: &str) -> &'a str {
    all.strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{all:?} does not start with {prefix:?}"))
}

#[test]
fn header_and_channel_info_placeholders() {
    let s = Server::start(&[], CONF);
    let mut ctl = s.ctl();
    ctl.add("a", "x");
    ctl.add("a", "y");
    ctl.add("b", "z");
    let _watcher = s.subscribe("/push/w/stream/b", "HDR 200 OK\n");
    let t0 = now_unix();
    let mut c = s.http_get("/push/h1/hdr/a.r99/b/c");
    let all = String::from_utf8(c.read_to_end(WAIT)).unwrap();
    let t1 = now_unix();
    // ~status~|~server~|~servertime~|~channelinfo~|~bogus~|~~|\n
    let f: Vec<&str> = all.split('|').collect();
    assert_eq!(f.len(), 7, "{all:?}");
    assert_eq!(f[0], "200 OK");
    assert_eq!(f[1], "meteord");
    let st: u64 = f[2]
        .parse()
        .unwrap_or_else(|_| panic!("servertime {all:?}"));
    assert!(st >= t0 && st <= t1, "servertime {st} not in [{t0}, {t1}]");
    assert_eq!(f[4], "", "unknown placeholder must be empty: {all:?}");
    assert_eq!(f[5], "~", "~~ is a literal ~: {all:?}");
    assert_eq!(f[6], "\n", "{all:?}");
    // One ChannelInfoTemplate per requested channel (order not asserted).
    let mut infos: Vec<&str> = f[3]
        .split_inclusive('>')
        .filter(|p| !p.is_empty())
        .collect();
    infos.sort();
    // The requester (Persist 0) is not a subscriber; the watcher on b is.
    assert_eq!(infos, ["<a,2,2,0,>", "<b,3,1,1,>", "<c,0,0,0,>"], "{all:?}");
}

#[test]
fn message_placeholders() {
    let s = Server::start(&[], CONF);
    let mut ctl = s.ctl();
    let t0 = now_unix();
    ctl.add("chan_1", "some text\there");
    let t1 = now_unix();
    let mut c = s.http_get("/push/h1/hdr/chan_1.h");
    let all = String::from_utf8(c.read_to_end(WAIT)).unwrap();
    let header_end = all.find("|\n").expect("header") + 2;
    let msg = &all[header_end..];
    let f: Vec<&str> = msg.split('|').collect();
    assert_eq!(f.len(), 6, "{msg:?}");
    assert_eq!(f[0], "1");
    assert_eq!(f[1], "chan_1");
    assert_eq!(f[2], "some text\there");
    let ts: u64 = f[3].parse().unwrap_or_else(|_| panic!("timestamp {msg:?}"));
    assert!(ts >= t0 && ts <= t1, "timestamp {ts} not in [{t0}, {t1}]");
    assert_eq!(f[4], "");
    assert_eq!(f[5], "~\n");
}

#[test]
fn double_tilde_and_adjacent_placeholders() {
    let s = Server::start(&[], CONF);
    let mut ctl = s.ctl();
    ctl.add("t", "x");
    let mut c = s.http_get("/push/h1/tilde/t.h");
    c.expect_str("~~H~\n");
    c.expect_str("a~b1~c~~\n");
    c.expect_eof();
}

#[test]
fn message_text_is_not_expanded() {
    let s = Server::start(&[], CONF);
    let mut ctl = s.ctl();
    ctl.add("t", "~id~ ~~ ~channel~ ~");
    let mut c = s.http_get("/push/h1/stream/t.h");
    c.expect_str("HDR 200 OK\n1:t:~id~ ~~ ~channel~ ~\n");
}

#[test]
fn default_channel_info_template() {
    let conf = "[ci]\nPersist 0\nHeaderTemplate ~channelinfo~\n";
    let s = Server::start(&[], conf);
    let mut ctl = s.ctl();
    ctl.add("one", "x");
    ctl.add("one", "y");
    let mut c = s.http_get("/push/h1/ci/one/two");
    let all = String::from_utf8(c.read_to_end(WAIT)).unwrap();
    let a = "<script>ch(\"one\", 2);</script>\r\n";
    let b = "<script>ch(\"two\", 0);</script>\r\n";
    assert!(
        all == format!("{a}{b}") || all == format!("{b}{a}"),
        "{all:?}"
    );
}

// ---------------------------------------------------------------------------
// The classic modes of the bundled meteor.conf
// ---------------------------------------------------------------------------

fn bundled() -> Server {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/meteor.conf");
    let conf = std::fs::read_to_string(path).expect("read meteor.conf");
    Server::start(&[], &conf)
}

const CLASSIC_HEAD: &str = "HTTP/1.1 200 OK\r\nServer: meteord\r\nContent-Type: text/plain; charset=utf-8\r\nPragma: no-cache\r\nCache-Control: no-cache, no-store, must-revalidate\r\nExpires: Thu, 1 Jan 1970 00:00:00 GMT\r\n\r\n";

/// The head of the classic streaming modes: nginx must not buffer them.
const CLASSIC_STREAM_HEAD: &str = "HTTP/1.1 200 OK\r\nServer: meteord\r\nContent-Type: text/plain; charset=utf-8\r\nPragma: no-cache\r\nCache-Control: no-cache, no-store, must-revalidate\r\nExpires: Thu, 1 Jan 1970 00:00:00 GMT\r\nX-Accel-Buffering: no\r\n\r\n";

#[test]
fn classic_iframe_mode() {
    let s = bundled();
    let mut ctl = s.ctl();
    ctl.add("ch", "hello");
    let mut c = s.http_get("/push/h1/iframe/ch.h");
    c.expect_str(
        "HTTP/1.1 200 OK\r\nServer: meteord\r\nContent-Type: text/html; charset=utf-8\r\n\
         Pragma: no-cache\r\nCache-Control: no-cache, no-store, must-revalidate\r\n\
         Expires: Thu, 1 Jan 1970 00:00:00 GMT\r\nX-Accel-Buffering: no\r\n\r\n\
         <html><head><script type=\"text/javascript\">\r\nwindow.onError = null;\r\n\
         parent.Meteor.register(this);\r\n</script>\r\n</head>\r\n\
         <body onload=\"try { parent.Meteor.reset(this) } catch (e) {}\">\r\n\
         <script>ch(\"ch\", 1);</script>\r\n",
    );
    c.expect_str("<script>p(1,\"ch\",\"hello\");</script>\r\n");
    ctl.add("ch", "live one");
    c.expect_str("<script>p(2,\"ch\",\"live one\");</script>\r\n");
    let mut d = s.http_get("/disconnect/h1");
    d.read_to_end(WAIT);
    c.expect_str("<script>eof();</script>\r\n");
    c.expect_eof();
}

#[test]
fn classic_xhrinteractive_mode() {
    let s = bundled();
    let mut ctl = s.ctl();
    let mut c = s.http_get("/push/h1/xhrinteractive/ch");
    c.expect_str(&format!("{CLASSIC_STREAM_HEAD}ch(\"ch\", 0);\r\n"));
    ctl.add("ch", "a b");
    c.expect_str("p(1,\"ch\",\"a b\");\r\n");
    let mut d = s.http_get("/disconnect/h1");
    d.read_to_end(WAIT);
    c.expect_str("eof();\r\n");
    c.expect_eof();
}

#[test]
fn classic_longpoll_mode() {
    let s = bundled();
    let mut ctl = s.ctl();
    let mut c = s.http_get("/push/h1/longpoll/ch");
    c.expect_str(&format!("{CLASSIC_HEAD}ch(\"ch\", 0);\r\n"));
    c.expect_silence(Duration::from_millis(200));
    ctl.add("ch", "one");
    ctl.add("ch", "two");
    c.expect_str("p(1,\"ch\",\"one\");\r\n");
    c.expect_eof();
    // The client comes back with .r<next id>.
    let mut c = s.http_get("/push/h1/longpoll/ch.r2");
    c.expect_str(&format!(
        "{CLASSIC_HEAD}ch(\"ch\", 2);\r\np(2,\"ch\",\"two\");\r\n"
    ));
    c.expect_eof();
}

#[test]
fn classic_smartpoll_and_simplepoll_modes() {
    let s = bundled();
    let mut ctl = s.ctl();
    ctl.add("ch", "one");
    ctl.add("ch", "two");
    for mode in ["smartpoll", "simplepoll"] {
        let mut c = s.http_get(&format!("/push/h1/{mode}/ch.r2"));
        c.expect_str(&format!(
            "{CLASSIC_HEAD}ch(\"ch\", 2);\r\np(2,\"ch\",\"two\");\r\n"
        ));
        c.expect_eof();
    }
}

#[test]
fn classic_flash_mode() {
    let s = bundled();
    let mut ctl = s.ctl();
    ctl.add("ch", "x");
    let mut c = s.http_get("/push/h1/flash/ch.h");
    c.expect_str(&format!(
        "{CLASSIC_STREAM_HEAD}ch(\"ch\", 1);\0p(1,\"ch\",\"x\");\0"
    ));
    let mut d = s.http_get("/disconnect/h1");
    d.read_to_end(WAIT);
    c.expect_str("eof();\0");
    c.expect_eof();
}

#[test]
fn classic_flashloadvars_mode() {
    let s = bundled();
    let mut ctl = s.ctl();
    ctl.add("ch", "x");
    ctl.add("ch", "y");
    let mut c = s.http_get("/push/h1/flashloadvars/ch.h");
    c.expect_str(&format!("{CLASSIC_HEAD}&msg1=x&chan1=ch&msg2=y&chan2=ch"));
    c.expect_eof();
}

#[test]
fn header_for_404_uses_status_placeholder() {
    let s = Server::start(&[], CONF);
    let mut c = s.http_get("/push/h1/hdr/!!");
    let all = String::from_utf8(c.read_to_end(WAIT)).unwrap();
    let f: Vec<&str> = all.split('|').collect();
    assert_eq!(f.len(), 7, "{all:?}");
    assert_eq!(f[0], "404 Not Found");
    assert_eq!(f[3], "", "empty channelinfo on 404: {all:?}");
    // After the server time: empty channelinfo and unknown name, `~`, and
    // nothing else (no body on a 404).
    let rest = body_after(&all, "404 Not Found|meteord|");
    let (time, rest) = rest.split_once('|').unwrap_or_else(|| panic!("{all:?}"));
    assert!(
        time.parse::<u64>().is_ok(),
        "servertime {time:?} in {all:?}"
    );
    assert_eq!(rest, "||~|\n", "{all:?}");
}
