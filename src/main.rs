//! meteord: a Comet server. Publishers push events into channels over a
//! line protocol; browsers receive them live over plain HTTP.

use meteord::config::{self, Action};
use meteord::{info, log, server};

/// Raises the open-file soft limit to the hard limit; returns the limit in force.
fn raise_fd_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    usize::try_from(limit.rlim_cur)
        .unwrap_or(usize::MAX)
        .min(1 << 24)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (action, command_line) = match config::parse_args(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("meteord: {e}");
            std::process::exit(1);
        }
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
        Action::Run => {}
    }
    let config = match config::load(&command_line) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("meteord: {e}");
            std::process::exit(1);
        }
    };
    log::configure(config.debug, config.log_time_format);
    if !config.debug && config.syslog_facility != "none" {
        info!(
            "SyslogFacility {}: syslog and detaching are not implemented yet; staying in the foreground, logging here",
            config.syslog_facility
        );
    }
    let fd_limit = raise_fd_limit();
    let mut server = match server::Server::new(config, command_line, fd_limit) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("meteord: {e}");
            std::process::exit(1);
        }
    };
    std::process::exit(server.run());
}
