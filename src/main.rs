//! meteord: a Comet server. Publishers push events into channels over a
//! line protocol; browsers receive them live over plain HTTP.

use meteord::config::{self, Action};
use meteord::{info, log, process, server, token};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Stops start-up: the log lines so far, then the reason, then exit 1.
fn die(reason: &dyn std::fmt::Display) -> ! {
    log::flush();
    eprintln!("meteord: {reason}");
    std::process::exit(1);
}

/// `-token`: prints a token signed with the first `SubscriberSecret`.
fn print_token(
    config: &config::Config,
    channels: Vec<String>,
    seconds: u64,
    hostid: Option<String>,
) {
    let Some(secret) = config.subscriber_secrets.first() else {
        die(
            &"-token: SubscriberSecret is not set (in the configuration file or as -SubscriberSecret)",
        );
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = token::Claims {
        exp: now + seconds,
        nbf: None,
        channels,
        hostid,
    };
    println!("{}", token::mint(secret, &claims));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (action, command_line) = match config::parse_args(&args) {
        Ok(parsed) => parsed,
        Err(e) => die(&e),
    };
    match action {
        Action::Version => {
            println!("meteord {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        Action::Help => {
            print!("{}", config::help());
            return;
        }
        Action::Man => {
            print!("{}", config::man());
            return;
        }
        Action::Run | Action::Token { .. } => {}
    }
    let config = match config::load(&command_line) {
        Ok(config) => config,
        Err(e) => die(&e),
    };
    if let Action::Token {
        channels,
        seconds,
        hostid,
    } = action
    {
        print_token(&config, channels, seconds, hostid);
        return;
    }
    log::configure(config.debug, config.log_time_format);
    // Without a syslog daemon to hear it, a detached server would log into
    // /dev/null: then it logs to standard error and stays in the foreground.
    let syslog = config
        .syslog_facility
        .filter(|_| !config.debug)
        .filter(|&facility| {
            log::to_syslog(&config.syslog_socket, facility)
                .map_err(|e| {
                    eprintln!(
                        "meteord: cannot log to syslog at {}: {e}; logging to standard error \
                     and staying in the foreground",
                        config.syslog_socket.display()
                    );
                })
                .is_ok()
        });
    let detach = syslog.is_some() && !config.foreground;
    let pid_path = match (&config.pid_file, detach) {
        (Some(path), _) => Some(path.clone()),
        (None, true) => Some(Path::new("/var/run/meteord.pid").to_owned()),
        (None, false) => None,
    };
    let fd_limit = process::raise_fd_limit();
    let mut server = match server::Server::new(config, command_line, fd_limit) {
        Ok(server) => server,
        Err(e) => die(&e),
    };
    let detached = match detach.then(process::detach).transpose() {
        Ok(detached) => detached,
        Err(e) => die(&format!("cannot detach: {e}")),
    };
    let pid_file = match pid_path
        .as_deref()
        .map(process::PidFile::create)
        .transpose()
    {
        Ok(pid_file) => pid_file,
        Err(e) => {
            info!("{e}");
            if let Some(detached) = detached {
                detached.fail(&e);
            }
            die(&e)
        }
    };
    if let Some(detached) = detached {
        detached.ready();
    }
    process::notify("READY=1");
    let status = server.run();
    log::flush();
    drop(pid_file);
    std::process::exit(status);
}
