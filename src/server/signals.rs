//! Signals into the loop (SIGHUP reload, SIGUSR1/2 cache drops, SIGTERM and
//! SIGINT drain) and what the server does on each.

use super::Server;
use super::accept::max_subscribers;
use super::conns::{Conn, Conns};
use crate::config;
use crate::conn::{ConnId, Reason};
use crate::subscriber::documents::Documents;
use crate::{info, log};
use mio::net::UnixStream;
use mio::{Interest, Poll};
use std::io::{self, Read};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The signals the loop reacts to, each raising its own flag.
pub struct Signals {
    hup: Arc<AtomicBool>,
    usr1: Arc<AtomicBool>,
    usr2: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
}

impl Signals {
    /// Routes SIGHUP, SIGUSR1, SIGUSR2, SIGTERM and SIGINT into the loop:
    /// each raises its flag and writes to a self-pipe the loop polls.
    pub fn register(poll: &Poll, conns: &mut Conns) -> io::Result<Signals> {
        let (reader, writer) = std::os::unix::net::UnixStream::pair()?;
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        let flag = |signals: &[i32]| -> io::Result<Arc<AtomicBool>> {
            let raised = Arc::new(AtomicBool::new(false));
            for &signal in signals {
                signal_hook::flag::register(signal, Arc::clone(&raised))?;
                signal_hook::low_level::pipe::register(signal, writer.try_clone()?)?;
            }
            Ok(raised)
        };
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
        let signals = Signals {
            hup: flag(&[SIGHUP])?,
            usr1: flag(&[SIGUSR1])?,
            usr2: flag(&[SIGUSR2])?,
            term: flag(&[SIGTERM, SIGINT])?,
        };
        // SAFETY: the descriptor comes straight from a std UnixStream we own.
        let reader = unsafe { UnixStream::from_raw_fd(reader.into_raw_fd()) };
        conns.register(poll.registry(), Interest::READABLE, Conn::Signals(reader))?;
        Ok(signals)
    }
}

impl Server {
    /// The self-pipe is readable: acts on every flag raised.
    pub(super) fn on_signals(&mut self, id: ConnId) {
        if let Some(slot) = self.conns.get(id)
            && let Conn::Signals(pipe) = &mut slot.conn
        {
            while matches!(pipe.read(&mut self.world.scratch), Ok(n) if n > 0) {}
        }
        if self.signals.usr1.swap(false, Ordering::SeqCst) {
            info!("SIGUSR1: emptying every channel's message cache");
            self.world.hub.clear_caches();
        }
        if self.signals.usr2.swap(false, Ordering::SeqCst) {
            info!("SIGUSR2: dropping the document cache");
            self.world.docs.clear();
        }
        if self.signals.hup.swap(false, Ordering::SeqCst) {
            self.reload();
        }
        if self.signals.term.swap(false, Ordering::SeqCst) && self.draining_until.is_none() {
            self.shut_down();
        }
    }

    /// SIGHUP: re-reads the configuration for new connections; a bad file
    /// keeps the running configuration.
    fn reload(&mut self) {
        let config = match config::load(&self.command_line) {
            Ok(config) => config,
            Err(e) => {
                info!("SIGHUP: keeping the running configuration: {e}");
                return;
            }
        };
        let old = &self.world.config;
        let restart_only = [
            (
                "SubscriberIP/SubscriberPort",
                old.subscriber_addr != config.subscriber_addr,
            ),
            (
                "ControllerIP/ControllerPort",
                old.controller_addr != config.controller_addr,
            ),
            ("UDPIP/UDPPort", old.udp_addr != config.udp_addr),
            (
                "SyslogFacility",
                old.syslog_facility != config.syslog_facility,
            ),
            ("SyslogSocket", old.syslog_socket != config.syslog_socket),
            ("PidFile", old.pid_file != config.pid_file),
            ("Foreground", old.foreground != config.foreground),
            ("RedisAddress", old.redis != config.redis),
            ("StateFile", old.state_file != config.state_file),
            ("StateSync", old.state_sync != config.state_sync),
            (
                "ListenBacklog",
                old.limits.listen_backlog != config.limits.listen_backlog,
            ),
        ];
        for (what, changed) in restart_only {
            if changed {
                info!("SIGHUP: the change of {what} is ignored until a restart");
            }
        }
        log::configure(config.debug, config.log_time_format);
        self.world
            .hub
            .channels
            .set_limits(config.max_messages_per_channel, config.max_message_age);
        self.world
            .hub
            .channels
            .set_bounds(config.max_cached_bytes, config.max_channels);
        self.world.docs = Documents::from_config(&config);
        // Applies to new connections: those over a lowered limit stay.
        self.max_subscribers = max_subscribers(&config, self.fd_limit);
        for warning in &config.warnings {
            info!("warning: {warning}");
        }
        info!(
            "SIGHUP: configuration reloaded from {}; up to {} subscribers",
            config.file.display(),
            self.max_subscribers
        );
        self.world.config = config;
    }

    /// SIGTERM/SIGINT: stop accepting, say goodbye to everyone, drain.
    fn shut_down(&mut self) {
        info!("shutting down: closing listeners and connections");
        crate::process::notify("STOPPING=1");
        for id in std::mem::take(&mut self.listeners) {
            self.close(id, Reason::Shutdown);
        }
        let clients = self.conns.clients();
        self.world
            .kicks
            .extend(clients.into_iter().map(|id| (id, Reason::Shutdown)));
        self.run_kicks();
        let drain = Duration::from_secs(self.world.config.drain_timeout);
        self.draining_until = Some(Instant::now() + drain);
    }
}
