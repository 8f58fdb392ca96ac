//! The controller line protocol: exact reply bytes, argument rules,
//! pipelined and split commands, several controllers, input bounds,
//! the SHOWSTATS counters.

mod common;

use common::*;
use std::time::Duration;

const ERR: &str = "ERR Invalid command syntax";

#[test]
fn controller_listens_on_loopback_by_default() {
    // Part B1: no -ControllerIP given, so 127.0.0.1.
    let s = Server::start_test(&[]);
    assert_eq!(s.ctl_addr.ip().to_string(), "127.0.0.1");
    let mut c = s.ctl();
    assert_eq!(c.command("COUNTSUBSCRIBERS x"), "OK 0");
    // Not reachable on another address, not even another loopback one.
    let other: std::net::SocketAddr = format!("127.0.0.2:{}", s.ctl_addr.port()).parse().unwrap();
    assert!(
        std::net::TcpStream::connect_timeout(&other, WAIT).is_err(),
        "controller port answers on 127.0.0.2"
    );
}

#[test]
fn addmessage_reply_is_ok_tab_id_and_ids_start_at_one() {
    let s = Server::start_test(&[]);
    let mut c = s.ctl();
    c.send("ADDMESSAGE chan hello\n");
    c.conn.expect(b"OK\t1\r\n");
    c.send("ADDMESSAGE other x\n");
    c.conn.expect(b"OK\t2\r\n");
    c.send("ADDMESSAGE chan y\n");
    c.conn.expect(b"OK\t3\r\n");
}

#[test]
fn ids_are_shared_by_all_channels_and_controllers() {
    let s = Server::start_test(&[]);
    let mut a = s.ctl();
    let mut b = s.ctl();
    let mut last = 0;
    for i in 0..20 {
        let id = if i % 2 == 0 {
            a.add(&format!("c{}", i % 3), "m")
        } else {
            b.add(&format!("d{}", i % 5), "m")
        };
        assert!(id > last, "id {id} after {last}");
        assert_eq!(id, last + 1, "ids are consecutive from one counter");
        last = id;
    }
}

/// Publish `line`, then read the text back through a `.h` poll.
fn text_of(s: &Server, channel: &str) -> Vec<u8> {
    let mut sub = s.http_get(&format!("/push/h{}/poll/{channel}.h", rand_tag()));
    let all = sub.read_to_end(WAIT);
    assert!(all.starts_with(HDR_OK.as_bytes()), "{}", show(&all));
    all[HDR_OK.len()..].to_vec()
}

fn rand_tag() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

#[test]
fn addmessage_text_is_everything_after_one_separator() {
    let s = Server::start_test(&[]);
    let mut c = s.ctl();
    // Spaces and TABs inside the text, two spaces after the channel: the
    // second one belongs to the text; a trailing space is kept.
    c.send("ADDMESSAGE a  x\ty  z \n");
    c.conn.expect(b"OK\t1\r\n");
    assert_eq!(text_of(&s, "a"), b"1:a: x\ty  z \n");
    // TABs as separators, several before the channel, one after.
    c.send("ADDMESSAGE\t\t b\t\tq\n");
    c.conn.expect(b"OK\t2\r\n");
    assert_eq!(text_of(&s, "b"), b"2:b:\tq\n");
}

#[test]
fn addmessage_with_empty_text() {
    let s = Server::start_test(&[]);
    let mut c = s.ctl();
    c.send("ADDMESSAGE e \n");
    c.conn.expect(b"OK\t1\r\n");
    assert_eq!(text_of(&s, "e"), b"1:e:\n");
    assert_eq!(c.list(), "OK\r\ne(1/0)\r\n--EOT--\r\n");
}

#[test]
fn addmessage_without_separator_after_channel_is_an_error() {
    let s = Server::start_test(&[]);
    let mut c = s.ctl();
    assert_eq!(c.command("ADDMESSAGE chan"), ERR);
    assert_eq!(c.command("ADDMESSAGE"), ERR);
    assert_eq!(c.command("ADDMESSAGE "), ERR);
    assert_eq!(c.command("ADDMESSAGEchan x"), ERR);
    // No channel was created by any of these.
    assert_eq!(c.list(), "OK\r\n--EOT--\r\n");
    // And the connection still works.
    assert_eq!(c.command("ADDMESSAGE chan x"), "OK\t1");
}

#[test]
fn addmessage_accepts_any_non_whitespace_channel_name() {
    let s = Server::start_test(&[]);
    let mut c = s.ctl();
    assert_eq!(c.command("ADDMESSAGE we!rd.ch@n x"), "OK\t1");
    assert_eq!(c.list(), "OK\r\nwe!rd.ch@n(1/0)\r\n--EOT--\r\n");
}

#[test]
fn crlf_line_end_drops_the_cr() {
    let s = Server::start_test(&[]);
    let mut c = s.ctl();
    c.send("ADDMESSAGE a hi\r\n");
    c.conn.expect(b"OK\t1\r\n");
    assert_eq!(text_of(&s, "a"), b"1:a:hi\n");
    c.send("LISTCHANNELS\r\n");
    c.conn.expect(b"OK\r\na(1/0)\r\n--EOT--\r\n");
}

#[test]
fn bare_cr_inside_a_line_does_not_wedge_the_connection() {
    // Defects table: lines end at LF; a CR elsewhere is part of the line.
    let s = Server::start_test(&[]);
    let mut c = s.ctl();
    c.send("ADDMESSAGE a x\ry\n");
    c.conn.expect(b"OK\t1\r\n");
    assert_eq!(text_of(&s, "a"), b"1:a:x\ry\n");
    c.send("SHOWSTATS\rjunk\n");
    c.conn.expect(format!("{ERR}\r\n").as_bytes());
    assert_eq!(c.command("ADDMESSAGE a z"), "OK\t2");
}

#[test]
fn zero_text_and_zero_channel_are_kept() {
    // Defects table: a message text or channel name `0` stays `0`.
    let s = Server::start_test(&[]);
    let mut c = s.ctl();
    assert_eq!(c.command("ADDMESSAGE 0 0"), "OK\t1");
    assert_eq!(c.list(), "OK\r\n0(1/0)\r\n--EOT--\r\n");
    assert_eq!(text_of(&s, "0"), b"1:0:0\n");
}

#[test]
fn countsubscribers_unknown_channel_is_zero_and_not_created() {
    let s = Server::start_test(&[]);
    let mut c = s.ctl();
    c.send("COUNTSUBSCRIBERS nosuch\n");
    c.conn.expect(b"OK 0\r\n");
    c.send("LISTCHANNELS\n");
    c.conn.expect(b"OK\r\n--EOT--\r\n");
}

#[test]
fn countsubscribers_argument_rules() {
    let s = Server::start_test(&[]);
    let mut c = s.ctl();
    assert_eq!(c.command("COUNTSUBSCRIBERS"), ERR);
    assert_eq!(c.command("COUNTSUBSCRIBERS "), ERR);
    assert_eq!(c.command("COUNTSUBSCRIBERS a b"), ERR);
    assert_eq!(c.command("countsubscribers a"), ERR);
    assert_eq!(c.command("COUNTSUBSCRIBERS a"), "OK 0");
}

#[test]
fn countsubscribers_counts_persistent_subscribers() {
    let s = Server::start_test(&[]);
    let mut c = s.ctl();
    let _a = s.subscribe("/push/h1/stream/ch", HDR_OK);
    let _b = s.subscribe("/push/h2/stream/ch/other", HDR_OK);
    c.send("COUNTSUBSCRIBERS ch\n");
    c.conn.expect(b"OK 2\r\n");
    assert_eq!(c.command("COUNTSUBSCRIBERS other"), "OK 1");
    // A non-persistent poll is not counted (it is gone once answered).
    let mut p = s.http_get("/push/h3/poll/ch");
    assert_eq!(p.read_to_end(WAIT), HDR_OK.as_bytes());
    assert_eq!(c.command("COUNTSUBSCRIBERS ch"), "OK 2");
    drop(_a);
    assert_eq!(c.wait_count("ch", 1, WAIT), 1);
}

#[test]
fn listchannels_empty() {
    let s = Server::start_test(&[]);
    let mut c = s.ctl();
    c.send("LISTCHANNELS\n");
    c.conn.expect(b"OK\r\n--EOT--\r\n");
}

#[test]
fn listchannels_sorted_with_message_and_subscriber_counts() {
    let s = Server::start_test(&[]);
    let mut c = s.ctl();
    c.add("gamma", "1");
    c.add("alpha", "1");
    c.add("gamma", "2");
    c.add("beta", "1");
    let _sub = s.subscribe("/push/h1/stream/beta/delta", HDR_OK);
    let _sub2 = s.subscribe("/push/h2/stream/beta", HDR_OK);
    c.send("LISTCHANNELS\n");
    c.conn
        .expect(b"OK\r\nalpha(1/0)\r\nbeta(1/2)\r\ndelta(0/1)\r\ngamma(2/0)\r\n--EOT--\r\n");
}

#[test]
fn commands_without_arguments_reject_arguments() {
    let s = Server::start_test(&[]);
    let mut c = s.ctl();
    assert_eq!(c.command("LISTCHANNELS x"), ERR);
    assert_eq!(c.command("SHOWSTATS x"), ERR);
    assert_eq!(c.command("QUIT now"), ERR);
    // Still connected and usable.
    assert_eq!(c.list(), "OK\r\n--EOT--\r\n");
}

#[test]
fn unknown_commands_get_err_and_the_connection_stays_usable() {
    let s = Server::start_test(&[]);
    let mut c = s.ctl();
    for bad in [
        "addmessage a b",
        "",
        "SHOWSTATSx",
        "SHOWSTATSjunk",
        "LISTCHANNELSx",
        "QUITx",
        "Quit",
        "HELLO",
        "listchannels",
    ] {
        c.send(&format!("{bad}\n"));
        c.conn.expect(format!("{ERR}\r\n").as_bytes());
    }
    assert_eq!(c.command("ADDMESSAGE a b"), "OK\t1");
    assert_eq!(c.list(), "OK\r\na(1/0)\r\n--EOT--\r\n");
}

#[test]
fn quit_replies_ok_and_closes() {
    let s = Server::start_test(&[]);
    let mut c = s.ctl();
    c.send("QUIT\n");
    c.conn.expect(b"OK\r\n");
    c.conn.expect_eof();
    // The server goes on.
    let mut c2 = s.ctl();
    assert_eq!(c2.command("COUNTSUBSCRIBERS a"), "OK 0");
}

#[test]
fn pipelined_commands_in_one_segment() {
    let s = Server::start_test(&[]);
    let mut c = s.ctl();
    c.send(
        "ADDMESSAGE a one\nADDMESSAGE b two\r\nCOUNTSUBSCRIBERS a\nbogus\nLISTCHANNELS\n\
         ADDMESSAGE a three\nQUIT\nADDMESSAGE a never\n",
    );
    let all = c.conn.read_to_end(WAIT);
    assert_eq!(
        show(&all),
        show(
            b"OK\t1\r\nOK\t2\r\nOK 0\r\nERR Invalid command syntax\r\n\
              OK\r\na(1/0)\r\nb(1/0)\r\n--EOT--\r\nOK\t3\r\nOK\r\n"
        )
    );
    // The command after QUIT was not executed.
    let mut c2 = s.ctl();
    assert_eq!(c2.list(), "OK\r\na(2/0)\r\nb(1/0)\r\n--EOT--\r\n");
}

#[test]
fn one_command_split_over_many_segments() {
    let s = Server::start_test(&[]);
    let mut c = s.ctl();
    let cmd = b"ADDMESSAGE split hello world\r\n";
    // Byte by byte; after each partial write nothing may have been answered.
    for (i, b) in cmd.iter().enumerate() {
        c.send_bytes(&[*b]);
        if i % 7 == 3 {
            c.conn.expect_silence(Duration::from_millis(50));
        }
    }
    c.conn.expect(b"OK\t1\r\n");
    assert_eq!(text_of(&s, "split"), b"1:split:hello world\n");
    // A split right between CR and LF, and a split multi-line command.
    c.send("LISTCHAN");
    c.conn.expect_silence(Duration::from_millis(100));
    c.send("NELS\r");
    c.conn.expect_silence(Duration::from_millis(100));
    c.send("\nADDMESSAGE split ");
    c.conn.expect(b"OK\r\nsplit(1/0)\r\n--EOT--\r\n");
    c.conn.expect_silence(Duration::from_millis(100));
    c.send("tail\n");
    c.conn.expect(b"OK\t2\r\n");
}

#[test]
fn several_controllers_at_once() {
    let s = Server::start_test(&[]);
    let mut a = s.ctl();
    let mut b = s.ctl();
    let mut c = s.ctl();
    // Partial command on a must not block b and c.
    a.send("ADDMESSAGE x ");
    assert_eq!(b.command("ADDMESSAGE x from-b"), "OK\t1");
    assert_eq!(c.command("ADDMESSAGE x from-c"), "OK\t2");
    a.send("from-a\n");
    a.conn.expect(b"OK\t3\r\n");
    assert_eq!(b.list(), "OK\r\nx(3/0)\r\n--EOT--\r\n");
    assert_eq!(text_of(&s, "x"), b"1:x:from-b\n2:x:from-c\n3:x:from-a\n");
}

#[test]
fn overlong_controller_line_is_refused_and_closed() {
    // Part B2: bounded controller lines; an ERR, then the connection closes,
    // and nothing else is affected.
    let s = Server::start_test(&[]);
    let mut other = s.ctl();
    let mut c = s.ctl();
    c.send("ADDMESSAGE big ");
    let chunk = vec![b'a'; 64 * 1024];
    for _ in 0..(8 * 16) {
        // 8 MiB without a line end.
        if c.conn.try_send(&chunk).is_err() {
            break;
        }
    }
    let got = c.conn.read_to_end(Duration::from_secs(10));
    assert_eq!(
        show(&got[..got.len().min(200)]),
        "ERR Line too long\\r\\n",
        "expected exactly ERR Line too long, then close"
    );
    assert_eq!(other.command("ADDMESSAGE small x"), "OK\t1");
    assert_eq!(other.list(), "OK\r\nsmall(1/0)\r\n--EOT--\r\n");
}

#[test]
fn showstats_format() {
    let s = Server::start_test(&[]);
    let mut c = s.ctl();
    c.send("SHOWSTATS\n");
    let raw = c.read_until_eot();
    let stats = parse_stats(&raw);
    // uptime is small, there are no channels yet.
    assert!(stats[0].1 < 60, "{raw}");
    assert_eq!(stats[1], ("channel_count".to_string(), 0));
    assert_eq!(c.stat("current_controllers"), 1);
    c.add("a", "x");
    c.add("b", "x");
    assert_eq!(c.stat("channel_count"), 2);
    assert_eq!(c.stat("unique_messages"), 2);
}

#[test]
fn stats_controller_counters() {
    let s = Server::start_test(&[]);
    let mut c = s.ctl();
    assert_eq!(c.stat("current_controllers"), 1);
    assert_eq!(c.stat("controller_connections_accepted"), 1);
    let mut c2 = s.ctl();
    assert_eq!(c2.command("COUNTSUBSCRIBERS a"), "OK 0");
    assert_eq!(c.stat("current_controllers"), 2);
    assert_eq!(c.stat("controller_connections_accepted"), 2);
    c2.send("QUIT\n");
    c2.conn.expect(b"OK\r\n");
    c2.conn.expect_eof();
    assert_eq!(c.wait_stat("current_controllers", WAIT, |v| v == 1), 1);
    assert_eq!(c.stat("controller_connections_accepted"), 2);
}

#[test]
fn stats_subscriber_counters() {
    let s = Server::start_test(&[]);
    let mut c = s.ctl();
    let base = c.stats();
    let get = |v: &Vec<(String, u64)>, k: &str| v.iter().find(|(n, _)| n == k).unwrap().1;
    // Deltas only: whether controller connections count as requests is
    // not specified.
    let req0 = get(&base, "total_requests");
    assert_eq!(get(&base, "current_subscribers"), 0);
    assert_eq!(get(&base, "subscriber_connections_accepted"), 0);
    assert_eq!(get(&base, "messages_served"), 0);

    let req = get_request("/push/h1/stream/ch");
    let mut a = s.request(req.as_bytes());
    a.expect_str(HDR_OK);
    let _b = s.subscribe("/push/h2/stream/ch", HDR_OK);
    assert_eq!(c.stat("current_subscribers"), 2);
    assert_eq!(c.stat("subscriber_connections_accepted"), 2);
    assert_eq!(c.stat("total_requests"), req0 + 2);

    c.add("ch", "one");
    c.add("ch", "two");
    a.expect_str(&msgs(&[(1, "ch", "one"), (2, "ch", "two")]));
    // Two messages to each of two subscribers.
    assert_eq!(c.wait_stat("messages_served", WAIT, |v| v == 4), 4);
    assert_eq!(c.stat("unique_messages"), 2);

    // A poll with a backlog of 2.
    let mut p = s.http_get("/push/h3/poll/ch.h");
    p.read_to_end(WAIT);
    assert_eq!(c.wait_stat("messages_served", WAIT, |v| v == 6), 6);
    assert_eq!(c.stat("total_requests"), req0 + 3);
    assert_eq!(c.stat("subscriber_connections_accepted"), 3);

    let after = c.stats();
    assert!(
        get(&after, "total_inbound_bytes")
            >= get(&base, "total_inbound_bytes") + 3 * req.len() as u64,
        "inbound bytes {:?}",
        after
    );
    let out = 2 * (HDR_OK.len() + msgs(&[(1, "ch", "one"), (2, "ch", "two")]).len());
    assert!(
        get(&after, "total_outbound_bytes") >= get(&base, "total_outbound_bytes") + out as u64,
        "outbound bytes {:?}",
        after
    );

    drop(a);
    assert_eq!(c.wait_stat("current_subscribers", WAIT, |v| v == 1), 1);
}

#[test]
fn stats_document_and_error_counters() {
    let s = Server::start_test(&[]);
    s.write_doc("a.txt", b"hello");
    let mut c = s.ctl();
    let mut d = s.http_get("/a.txt");
    d.read_to_end(WAIT);
    assert_eq!(c.wait_stat("documents_served", WAIT, |v| v == 1), 1);
    let mut d = s.http_get("/missing.txt");
    d.read_to_end(WAIT);
    assert_eq!(c.wait_stat("documents_not_found", WAIT, |v| v == 1), 1);
    assert_eq!(c.stat("documents_served"), 1);
    // A push request without a valid channel is an error reply: one more.
    let e0 = c.stat("errors_served");
    let mut e = s.http_get("/push/h1/stream/bad!name");
    e.read_to_end(WAIT);
    assert_eq!(c.wait_stat("errors_served", WAIT, |v| v == e0 + 1), e0 + 1);
    assert_eq!(c.stat("documents_not_found"), 1);
}

#[test]
fn stats_uptime_grows() {
    let s = Server::start_test(&[]);
    let mut c = s.ctl();
    let u0 = c.stat("uptime");
    let ok = eventually(Duration::from_secs(4), || c.stat("uptime") > u0);
    assert!(ok, "uptime did not advance in 4 s");
}
