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
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_meteord"))
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
