//! Configuration: defaults, the file format, the command line, precedence,
//! -v / -help / -d, and fatal errors (exit 1 with a message naming the
//! problem).

mod common;

use common::*;
use std::time::Duration;

const KEYS: [&str; 25] = [
    "ChannelInfoTemplate",
    "ConfigFileLocation",
    "ControllerIP",
    "ControllerPort",
    "ControllerShutdownMsg",
    "Debug",
    "DirectoryIndex",
    "HeaderTemplate",
    "LogTimeFormat",
    "MaxMessageAge",
    "MaxMessages",
    "MaxMessagesPerChannel",
    "MaxTime",
    "MessageTemplate",
    "PingInterval",
    "Persist",
    "PingMessage",
    "SubscriberIP",
    "SubscriberPort",
    "SubscriberShutdownMsg",
    "SubscriberDocumentRoot",
    "SubscriberDynamicPageAddress",
    "SyslogFacility",
    "UDPIP",
    "UDPPort",
];

const RUN: Duration = Duration::from_secs(5);

#[test]
fn version_flag() {
    let r = run_meteord(&["-v"], RUN);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert_eq!(
        r.stdout,
        format!("meteord {}\n", env!("CARGO_PKG_VERSION")),
        "stdout"
    );
}

#[test]
fn help_lists_every_key() {
    let r = run_meteord(&["-help"], RUN);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    for k in KEYS {
        // `-Key`, followed on its line by a description.
        let described = r.stdout.lines().find_map(|l| {
            let rest = l.trim_start().strip_prefix('-')?.strip_prefix(k)?;
            rest.starts_with(char::is_whitespace).then(|| rest.trim())
        });
        let described =
            described.unwrap_or_else(|| panic!("-help does not list -{k}:\n{}", r.stdout));
        assert!(
            described.split_whitespace().count() >= 2,
            "-help lists -{k} without a description: {described:?}"
        );
    }
    assert!(
        r.stdout.len() > KEYS.len() * 30,
        "-help has no descriptions:\n{}",
        r.stdout
    );
}

/// `-man` prints meteord(8) in roff with an entry for every key `-help`
/// lists, with the same description: both come from one table.
#[test]
fn man_page_has_every_help_key_with_its_description() {
    let help = run_meteord(&["-help"], RUN);
    let man = run_meteord(&["-man"], RUN);
    assert_eq!(man.code, Some(0), "stderr: {}", man.stderr);
    assert!(
        man.stdout.starts_with(".TH METEORD 8 "),
        "not a section 8 page: {:?}",
        &man.stdout[..man.stdout.len().min(80)]
    );
    let roff = |s: &str| s.replace('\\', "\\e").replace('-', "\\-");
    let mut keys = 0;
    for line in help.stdout.lines() {
        let Some((name, description)) = line
            .strip_prefix("  -")
            .and_then(|rest| rest.split_once(' '))
        else {
            continue;
        };
        let entry = format!(".BI \\-{name} ");
        let at = man
            .stdout
            .find(&entry)
            .unwrap_or_else(|| panic!("-man has no entry for -{name}"));
        let body = man.stdout[at..].lines().nth(1).unwrap_or("");
        assert_eq!(
            body,
            format!("{}.", roff(description.trim())),
            "-man describes -{name} differently from -help"
        );
        keys += 1;
    }
    assert!(keys >= KEYS.len(), "only {keys} keys in -help");
}

fn expect_fatal(args: &[&str], conf: &str, names: &[&str]) {
    let dir = TempDir::new("cfg");
    let conf_path = dir.join("c.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let all = std_args(&conf_path, &dir.path, args);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let r = run_meteord(&refs, RUN);
    assert_eq!(
        r.code,
        Some(1),
        "{args:?} should exit 1 (None = still running); stderr: {}",
        r.stderr
    );
    assert!(
        names.iter().any(|n| r.stderr.contains(n)),
        "the message should name one of {names:?}; stderr: {:?}",
        r.stderr
    );
}

#[test]
fn unknown_command_line_key_is_fatal() {
    expect_fatal(&["-Bogus", "1"], "", &["Bogus"]);
    expect_fatal(
        &["-MaxMessagesPerChannelX", "1"],
        "",
        &["MaxMessagesPerChannelX"],
    );
}

#[test]
fn ambiguous_prefix_is_fatal() {
    expect_fatal(&["-Ping", "3"], "", &["Ping"]);
    expect_fatal(&["-Sub", "3"], "", &["Sub"]);
    expect_fatal(&["-max", "3"], "", &["max"]);
}

#[test]
fn port_that_is_not_a_number_is_fatal() {
    expect_fatal(&["-ControllerPort", "abc"], "", &["ControllerPort", "abc"]);
    expect_fatal(&["-SubscriberPort", "12x"], "", &["SubscriberPort", "12x"]);
}

#[test]
fn bad_number_in_the_file_is_fatal() {
    expect_fatal(
        &[],
        "MaxMessagesPerChannel lots\n",
        &["MaxMessagesPerChannel", "lots"],
    );
}

#[test]
fn unreadable_config_file_is_fatal() {
    let dir = TempDir::new("cfg");
    let missing = dir.join("does-not-exist.conf");
    let m = missing.to_string_lossy().into_owned();
    let r = run_meteord(
        &[
            "-ConfigFileLocation",
            &m,
            "-SyslogFacility",
            "none",
            "-SubscriberPort",
            "0",
            "-ControllerPort",
            "0",
        ],
        RUN,
    );
    assert_eq!(r.code, Some(1), "stderr: {}", r.stderr);
    assert!(
        r.stderr.contains(&m),
        "message must name the file: {:?}",
        r.stderr
    );
}

#[test]
fn unknown_key_in_the_file_is_fatal() {
    expect_fatal(&[], "# ok\nBogusKey 1\n", &["BogusKey"]);
    expect_fatal(&[], "[mode]\nAlsoBogus 2\n", &["AlsoBogus"]);
}

#[test]
fn config_file_location_inside_the_file_is_fatal() {
    expect_fatal(
        &[],
        "ConfigFileLocation /tmp/x.conf\n",
        &["ConfigFileLocation"],
    );
}

#[test]
fn file_format_comments_blank_lines_crlf_sections() {
    let conf = "# a comment\r\n\r\nMaxMessagesPerChannel 2\r\n[ spaced ]\r\nPersist 1\r\n\
                HeaderTemplate H\\n\r\nMessageTemplate <~text~>\\n\r\n# done\r\n";
    let s = Server::start(&[], conf);
    let mut ctl = s.ctl();
    let mut c = s.subscribe("/push/h1/spaced/a", "H\n");
    for t in ["1", "2", "3"] {
        ctl.add("a", t);
    }
    // CRLF: no CR in the values.
    c.expect_str("<1>\n<2>\n<3>\n");
    assert_eq!(ctl.list(), "OK\r\na(2/1)\r\n--EOT--\r\n");
}

#[test]
fn file_values_escapes_trailing_spaces_dashes_and_empty() {
    let conf = "[m]\nPersist 1\nHeaderTemplate \\r\\n\\t\\s\\0\\x\\\\|\n\
                MessageTemplate --~text~  \n\
                SubscriberShutdownMsg\n\
                [t]\nPersist 1\nHeaderTemplate\tT\\n\nMessageTemplate \t[~text~]\n";
    let s = Server::start(&[], conf);
    let mut ctl = s.ctl();
    let mut c = s.subscribe("/push/h1/m/a", "\r\n\t \0x\\|");
    let mut t = s.subscribe("/push/h2/t/a", "T\n");
    ctl.add("a", "v");
    // "--x" loses one dash; the two trailing spaces are kept.
    c.expect_str("-v  ");
    // Key and value separated by a TAB; the value starts after all the
    // whitespace following the key.
    t.expect_str("[v]");
    // An empty SubscriberShutdownMsg: nothing before close.
    let mut d = s.http_get("/disconnect/h1");
    d.read_to_end(WAIT);
    c.expect_eof();
}

#[test]
fn command_line_mode_settings_and_escapes() {
    let s = Server::start(
        &[
            "-Persist.cl",
            "1",
            "-HeaderTemplate.cl",
            "CL\\s~status~\\n",
            "-MessageTemplate.cl",
            "--~id~\\t~text~\\n",
        ],
        "",
    );
    let mut ctl = s.ctl();
    let mut c = s.subscribe("/push/h1/cl/a", "CL 200 OK\n");
    ctl.add("a", "x");
    c.expect_str("-1\tx\n");
    // Mode names are case-sensitive: CL is not cl.
    let mut g = s.http_get("/push/h2/CL/a.h");
    g.expect_str(&default_header("200 OK"));
    g.expect_str("<script>p(1,\"a\",\"x\");</script>\r\n");
    g.expect_eof();
}

#[test]
fn key_without_value_means_one() {
    // "-Persist.m" followed by another key, and "-Persist.n" at the end.
    let s = Server::start(
        &[
            "-Persist.m",
            "-MessageTemplate.m",
            "M~id~\\n",
            "-MessageTemplate.n",
            "N~id~\\n",
            "-Persist.n",
        ],
        "",
    );
    let mut ctl = s.ctl();
    let hdr = default_header("200 OK");
    let mut m = s.subscribe("/push/h1/m/a", &hdr);
    let mut n = s.subscribe("/push/h2/n/a", &hdr);
    assert_eq!(ctl.count("a"), 2);
    ctl.add("a", "x");
    m.expect_str("M1\n");
    n.expect_str("N1\n");
}

#[test]
fn keys_are_case_insensitive_prefixes() {
    let s = Server::start(
        &[
            "-maxmessagesper",
            "2",
            "-PERSIST.p",
            "1",
            "-messaget.p",
            "~text~\\n",
            "-maxmessages.p",
            "1",
        ],
        "",
    );
    let mut ctl = s.ctl();
    for t in ["1", "2", "3"] {
        ctl.add("a", t);
    }
    assert_eq!(ctl.list(), "OK\r\na(2/0)\r\n--EOT--\r\n");
    // "maxmessages" is a key of its own, not an ambiguous prefix of
    // MaxMessagesPerChannel: mode p closes after one message.
    let mut c = s.subscribe("/push/h1/p/a", &default_header("200 OK"));
    ctl.add("a", "4");
    c.expect_str("4\n");
    c.expect_eof();
}

#[test]
fn dash_d_means_debug() {
    // -d would be an ambiguous prefix (Debug, DirectoryIndex) if it were
    // not its own option.
    let s = Server::start_test(&["-d"]);
    let mut ctl = s.ctl();
    assert_eq!(ctl.add("a", "x"), 1);
}

#[test]
fn precedence_command_line_then_file_then_defaults() {
    // File says 3, command line says 4.
    let s = Server::start(
        &["-MaxMessagesPerChannel", "4"],
        "MaxMessagesPerChannel 3\n",
    );
    let mut ctl = s.ctl();
    for i in 0..6 {
        ctl.add("a", &i.to_string());
    }
    assert_eq!(ctl.list(), "OK\r\na(4/0)\r\n--EOT--\r\n");
    // File over default.
    let s = Server::start(&[], "MaxMessagesPerChannel 3\n");
    let mut ctl = s.ctl();
    for i in 0..6 {
        ctl.add("a", &i.to_string());
    }
    assert_eq!(ctl.list(), "OK\r\na(3/0)\r\n--EOT--\r\n");
    // Mode setting: command line over file.
    let s = Server::start(
        &["-MessageTemplate.m", "cli~id~\\n"],
        "[m]\nMessageTemplate file~id~\\n\n",
    );
    let mut ctl = s.ctl();
    ctl.add("a", "x");
    let mut c = s.http_get("/push/h1/m/a.h");
    c.expect_str(&default_header("200 OK"));
    c.expect_str("cli1\n");
    c.expect_eof();
}

#[test]
fn mode_settings_fall_back_to_global_ones() {
    let conf = "MessageTemplate G~id~\\n\nHeaderTemplate GH\\n\n[m]\nHeaderTemplate MH\\n\n";
    let s = Server::start(&[], conf);
    let mut ctl = s.ctl();
    ctl.add("a", "x");
    let mut c = s.http_get("/push/h1/m/a.h");
    c.expect_str("MH\nG1\n");
    c.expect_eof();
    let mut c = s.http_get("/push/h1/other/a.h");
    c.expect_str("GH\nG1\n");
    c.expect_eof();
}

#[test]
fn mode_settings_are_looked_up_by_key_and_mode() {
    // Defects table: a mode named PerChannel must not read
    // MaxMessagesPerChannel as its MaxMessages.
    let conf = "MaxMessagesPerChannel 3\n[PerChannel]\nPersist 1\nHeaderTemplate H\\n\n\
                MessageTemplate ~id~\\n\n";
    let s = Server::start(&[], conf);
    let mut ctl = s.ctl();
    let mut c = s.subscribe("/push/h1/PerChannel/a", "H\n");
    for i in 0..5 {
        ctl.add("a", &i.to_string());
    }
    c.expect_str("1\n2\n3\n4\n5\n");
    c.expect_silence(Duration::from_millis(200));
}

#[test]
fn defaults_templates_and_persist() {
    // Empty config: global Persist 0, default HeaderTemplate and
    // MessageTemplate; default SubscriberShutdownMsg once made persistent.
    let s = Server::start(&["-Persist.live", "1"], "");
    let mut ctl = s.ctl();
    ctl.add("a", "x");
    let mut p = s.http_get("/push/h1/any/a.h");
    p.expect_str(&default_header("200 OK"));
    p.expect_str("<script>p(1,\"a\",\"x\");</script>\r\n");
    p.expect_eof();
    let mut l = s.subscribe("/push/h2/live/a", &default_header("200 OK"));
    let mut d = s.http_get("/disconnect/h2");
    d.expect_str(&default_header("200 OK"));
    l.expect_str("<script>eof();</script>\r\n");
    l.expect_eof();
}

#[test]
fn subscriber_ip_is_used() {
    let s = Server::start_test(&[]);
    assert_eq!(s.sub_addr.ip().to_string(), "127.0.0.1");
    assert_ne!(s.sub_addr.port(), 0);
    assert_ne!(s.ctl_addr.port(), 0);
}

#[test]
fn controller_ip_can_be_set() {
    let s = Server::start_test(&["-ControllerIP", "127.0.0.2"]);
    assert_eq!(s.ctl_addr.ip().to_string(), "127.0.0.2");
    let mut ctl = s.ctl();
    assert_eq!(ctl.add("a", "x"), 1);
}

#[test]
fn missing_default_file_runs_on_defaults_and_says_so() {
    // Only meaningful where the default file does not exist (as in CI).
    if std::path::Path::new("/etc/meteord.conf").exists() {
        eprintln!("SKIP: /etc/meteord.conf exists on this machine");
        return;
    }
    let mut child = std::process::Command::new(&binary()[0])
        .args(&binary()[1..])
        .args(["-SyslogFacility", "none", "-SubscriberIP", "127.0.0.1"])
        .args(["-SubscriberPort", "0", "-ControllerPort", "0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start meteord");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + RUN;
    let (mut warned, mut listening) = (false, false);
    while !(warned && listening) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        warned |= line.contains("no configuration file at /etc/meteord.conf");
        listening |= line.contains("listening for controllers on 127.0.0.1:");
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(warned, "the missing default file must be logged");
    assert!(listening, "the server must run on its defaults");
}

// ---------------------------------------------------------------------------
// Ranges: every number is refused at start outside its key's range, so
// nothing the operator writes can overflow a deadline or an allocation later.
// ---------------------------------------------------------------------------

/// The keys whose values become durations (seconds).
const DURATION_KEYS: [&str; 6] = [
    "HeadTimeout",
    "WriteTimeout",
    "MaxTime",
    "PingInterval",
    "DrainTimeout",
    "MaxMessageAge",
];

/// 2^63 and 2^64 - 1: the values that used to start and then abort.
const HUGE: [&str; 2] = ["9223372036854775808", "18446744073709551615"];

/// The longest duration accepted: ten years.
const TEN_YEARS: &str = "315360000";

/// Like `expect_fatal`, but the message must contain every one of `needles`.
fn expect_refusal(args: &[&str], conf: &str, needles: &[&str]) {
    let dir = TempDir::new("cfg");
    let conf_path = dir.join("c.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let all = std_args(&conf_path, &dir.path, args);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let r = run_meteord(&refs, RUN);
    assert_eq!(
        r.code,
        Some(1),
        "{args:?} / {conf:?} should exit 1 (None = still running); stderr: {}",
        r.stderr
    );
    for needle in needles {
        assert!(
            r.stderr.contains(needle),
            "{args:?} / {conf:?}: the message should contain {needle:?}; stderr: {:?}",
            r.stderr
        );
    }
}

#[test]
fn huge_durations_are_refused_naming_the_key_and_the_maximum() {
    for key in DURATION_KEYS {
        for value in HUGE {
            let flag = format!("-{key}");
            let message = format!("{key}: {value} is above the maximum of {TEN_YEARS} seconds");
            expect_refusal(&[&flag, value], "", &[&message]);
        }
        // In the file too, and one second more than the maximum.
        let conf = format!("{key} 315360001\n");
        expect_refusal(&[], &conf, &[key, "above the maximum of 315360000"]);
    }
    // Per mode, the message names the key and the mode.
    expect_refusal(&["-MaxTime.x", HUGE[0]], "", &["MaxTime.x: ", "maximum"]);
    expect_refusal(
        &[],
        &format!("[x]\nPingInterval {}\n", HUGE[1]),
        &["PingInterval.x: ", "maximum"],
    );
    // More digits than any u64: above the maximum, not "not a number".
    expect_refusal(
        &["-HeadTimeout", "99999999999999999999999"],
        "",
        &["HeadTimeout: 99999999999999999999999 is above the maximum"],
    );
}

#[test]
fn durations_of_ten_years_run_and_every_deadline_is_computed() {
    // A header far larger than any socket buffer, so that writing it to a
    // subscriber that reads nothing blocks (the WriteTimeout stall deadline).
    let big = "x".repeat(16 * 1024 * 1024);
    let conf = format!("{TEST_CONF}\n[big]\nPersist 1\nHeaderTemplate {big}\n");
    let mut args = Vec::new();
    for key in DURATION_KEYS {
        args.push(format!("-{key}"));
        args.push(TEN_YEARS.to_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut s = Server::start(&args, &conf);
    let mut ctl = s.ctl();
    // HeadTimeout: a head that never completes.
    let mut idle = s.connect_sub();
    idle.send(b"GET /push/h9/stream/a HTTP/1.1\r\n");
    // PingInterval and MaxTime: a persistent subscriber.
    let mut sub = s.subscribe("/push/h1/stream/a", HDR_OK);
    // MaxMessageAge: a cached message, hence an expiry.
    ctl.add("a", "x");
    sub.expect_str("1:a:x\n");
    // WriteTimeout: an error reply (written under a deadline)...
    let mut bad = s.request(b"garbage\r\n\r\n");
    let got = String::from_utf8_lossy(&bad.read_to_end(WAIT)).into_owned();
    assert!(got.contains(" 400 "), "expected a 400 reply, got {got:?}");
    // ...and a subscriber whose writes stall.
    let mut stuck = connect_small_rcvbuf(s.sub_addr, 4096);
    stuck.send(get_request("/push/h2/big/a").as_bytes());
    assert_eq!(ctl.wait_count("a", 2, WAIT), 2);
    std::thread::sleep(Duration::from_millis(200));
    assert!(s.alive(), "meteord died; logs:\n{}", s.logs().join("\n"));
    // Still answering: a message reaches the subscriber, nothing else came.
    assert_eq!(ctl.add("a", "y"), 2);
    sub.expect_str("2:a:y\n");
    drop(stuck);
    drop(idle);
    assert_eq!(ctl.wait_count("a", 1, WAIT), 1);
    // DrainTimeout: computed at shutdown; with nothing left to send the
    // server exits at once, and cleanly.
    s.signal("TERM");
    sub.expect_str("BYE\n");
    sub.expect_eof();
    let status = s.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.and_then(|st| st.code()),
        Some(0),
        "exit after SIGTERM; logs:\n{}",
        s.logs().join("\n")
    );
}

#[test]
fn values_below_a_minimum_are_refused_not_raised_silently() {
    for (key, value, minimum) in [
        ("HeadTimeout", "0", "minimum of 1 second"),
        ("WriteTimeout", "0", "minimum of 1 second"),
        ("MaxRequestHeadBytes", "63", "minimum of 64 bytes"),
        ("MaxControllerLineBytes", "20", "minimum of 64 bytes"),
        ("UDPMaxBytes", "15", "minimum of 16 bytes"),
        ("MaxHeaderLines", "0", "minimum of 1"),
        ("MaxControllers", "0", "minimum of 1"),
        ("MaxChannelNameLength", "0", "minimum of 1"),
        ("MaxChannelsPerRequest", "0", "minimum of 1"),
        ("ListenBacklog", "0", "minimum of 1"),
    ] {
        let message = format!("{key}: {value} is below the {minimum}");
        expect_refusal(&[&format!("-{key}"), value], "", &[&message]);
    }
}

#[test]
fn a_reload_below_a_minimum_keeps_the_running_value() {
    let conf = format!("MaxControllerLineBytes 64\n{TEST_CONF}");
    let s = Server::start(&[], &conf);
    std::fs::write(&s.conf_path, conf.replace("Bytes 64", "Bytes 20")).expect("write config");
    s.signal("HUP");
    let kept = s.wait_log(WAIT, |l| {
        l.contains(
            "SIGHUP: keeping the running configuration: \
             MaxControllerLineBytes: 20 is below the minimum of 64 bytes",
        )
    });
    assert!(kept.is_some(), "{:#?}", s.logs());
    // 64 bytes still pass (a 20-byte limit would refuse them), 65 do not.
    let line = |text_len: usize| format!("ADDMESSAGE a {}", "x".repeat(text_len));
    let mut c = s.ctl();
    assert_eq!(line(51).len(), 64);
    assert_eq!(c.command(&line(51)), "OK\t1");
    c.send(&format!("{}\n", line(52)));
    assert_eq!(c.read_reply_line(), "ERR Line too long");
}

#[test]
fn counts_above_their_maximum_are_refused() {
    for (key, value, maximum) in [
        ("MaxHeaderLines", "10001", "maximum of 10000"),
        ("MaxControllers", "1073741825", "maximum of 1073741824"),
        ("MaxSubscribers", HUGE[1], "maximum of 1073741824"),
        ("UDPMaxBytes", "65536", "maximum of 65535 bytes"),
        ("ListenBacklog", "2147483648", "maximum of 2147483647"),
        (
            "MaxMessagesPerChannel",
            HUGE[0],
            "maximum of 9223372036854775807",
        ),
        ("SubscriberPort", "65536", "maximum of 65535"),
        ("MaxMessages", "18446744073709551616", "maximum of"),
    ] {
        let message = format!("{key}: {value} is above the {maximum}");
        expect_refusal(&[&format!("-{key}"), value], "", &[&message]);
    }
}

#[test]
fn sizes_at_their_maximum_run() {
    let mut s = Server::start_test(&[
        "-MaxRequestHeadBytes",
        HUGE[1],
        "-MaxControllerLineBytes",
        HUGE[1],
        "-MaxChannelNameLength",
        HUGE[1],
        "-MaxChannelsPerRequest",
        HUGE[1],
        "-MaxMessages",
        HUGE[1],
        "-MaxMessagesPerChannel",
        "9223372036854775807",
        "-MaxHeaderLines",
        "10000",
        "-MaxControllers",
        "1073741824",
        "-MaxSubscribers",
        "1073741824",
        "-ListenBacklog",
        "2147483647",
        "-UDPMaxBytes",
        "65535",
    ]);
    let mut ctl = s.ctl();
    // A request with many header lines, on a persistent stream.
    let headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let mut sub =
        s.request(format!("GET /push/h1/stream/a HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes());
    sub.expect_str(HDR_OK);
    for text in ["m1", "m2", "m3"] {
        ctl.add("a", text);
    }
    sub.expect_str("1:a:m1\n2:a:m2\n3:a:m3\n");
    assert_eq!(ctl.count("a"), 1);
    assert!(s.alive(), "meteord died; logs:\n{}", s.logs().join("\n"));
}

// ---------------------------------------------------------------------------
// Paths: relative ones in the file are taken from the file's directory,
// relative ones on the command line from the working directory.
// ---------------------------------------------------------------------------

#[test]
fn relative_paths_in_the_file_are_taken_from_its_directory() {
    let dir = TempDir::new("relconf");
    let elsewhere = TempDir::new("cwd");
    for (site, text) in [("site", "one\n"), ("site2", "two\n")] {
        std::fs::create_dir_all(dir.join(site)).expect("mkdir");
        std::fs::write(dir.join(site).join("hello.txt"), text).expect("write doc");
    }
    let conf_path = dir.join("meteord.conf");
    let conf = "SubscriberDocumentRoot site\nPidFile run.pid\nStateFile file.state\n";
    std::fs::write(&conf_path, conf).expect("write config");
    // The file named relative to the working directory, which is not its own.
    let dir_name = dir.path.file_name().expect("dir name").to_string_lossy();
    let location = format!("../{dir_name}/meteord.conf");
    let args: Vec<String> = [
        "-ConfigFileLocation",
        &location,
        "-SubscriberIP",
        "127.0.0.1",
        "-SubscriberPort",
        "0",
        "-ControllerPort",
        "0",
        "-SyslogFacility",
        "none",
        "-StateFile",
        "cmd.state",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let docroot = dir.join("site");
    let s = Server::launch(&args, &elsewhere.path, dir, conf_path, docroot)
        .unwrap_or_else(|e| panic!("meteord did not start: {e}"));
    let body = |s: &Server| {
        let reply = s.http_get("/hello.txt").read_to_end(WAIT);
        let reply = String::from_utf8_lossy(&reply).into_owned();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        reply
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(body(&s), "one\n");
    assert!(
        s.dir.join("run.pid").exists(),
        "the pid file is next to the file"
    );
    // The command line's StateFile wins, from the working directory.
    assert!(
        elsewhere.join("cmd.state").exists(),
        "the state file is in the working directory"
    );
    assert!(!s.dir.join("file.state").exists());
    assert!(!elsewhere.join("run.pid").exists());
    // A reload resolves the same way.
    std::fs::write(&s.conf_path, conf.replace("site", "site2")).expect("write config");
    s.signal("HUP");
    let reloaded = s.wait_log(WAIT, |l| l.contains("SIGHUP: configuration reloaded"));
    assert!(reloaded.is_some(), "{:#?}", s.logs());
    assert_eq!(body(&s), "two\n");
}
