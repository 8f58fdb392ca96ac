//! meteord: a Comet server. Publishers push events into channels over a
//! line protocol; browsers receive them live over plain HTTP.

use meteord::config::{self, Action};
use meteord::{info, log, process, server};
use std::path::Path;

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
    let syslog = config.syslog_facility.filter(|_| !config.debug);
    if let Some(facility) = syslog
        && let Err(e) = log::to_syslog(&config.syslog_socket, facility)
    {
        eprintln!(
            "meteord: cannot log to syslog at {}: {e}; logging to standard error",
            config.syslog_socket.display()
        );
    }
    let detach = syslog.is_some() && !config.foreground;
    let pid_path = match (&config.pid_file, detach) {
        (Some(path), _) => Some(path.clone()),
        (None, true) => Some(Path::new("/var/run/meteord.pid").to_owned()),
        (None, false) => None,
    };
    let fd_limit = process::raise_fd_limit();
    let mut server = match server::Server::new(config, command_line, fd_limit) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("meteord: {e}");
            std::process::exit(1);
        }
    };
    let detached = match detach.then(process::detach).transpose() {
        Ok(detached) => detached,
        Err(e) => {
            eprintln!("meteord: cannot detach: {e}");
            std::process::exit(1);
        }
    };
    let pid_file = match pid_path
        .as_deref()
        .map(process::PidFile::create)
        .transpose()
    {
        Ok(pid_file) => pid_file,
        Err(e) => {
            info!("{e}");
            eprintln!("meteord: {e}");
            std::process::exit(1);
        }
    };
    if let Some(detached) = detached {
        detached.ready();
    }
    process::notify("READY=1");
    let status = server.run();
    drop(pid_file);
    std::process::exit(status);
}
