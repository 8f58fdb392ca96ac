//! The listening sockets: binding them, accepting with a pause when the
//! process runs out of descriptors, and admitting a new connection or
//! refusing it when its port is full.

use super::Server;
use super::conns::{Conn, Conns, Port};
use crate::config::Config;
use crate::conn::{ConnId, Step};
use crate::controller::Controller;
use crate::subscriber::{self, Subscriber};
use crate::{debug, info};
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Interest, Poll};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// How long accepting pauses after the process ran out of descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Connections accepted per listener per turn before others get a go.
const ACCEPTS_PER_TURN: usize = 256;
/// Descriptors kept free for listeners, files and the signal pipe.
const RESERVED_FDS: usize = 32;

/// Binds a listener with a deep accept queue: browsers reconnect in bursts
/// (every long-poll client at once after each event), and a full queue
/// drops connects that then wait a whole second for the SYN retransmission.
fn bind(addr: SocketAddr, what: &str, backlog: i32) -> io::Result<TcpListener> {
    let context =
        |e: io::Error| io::Error::new(e.kind(), format!("cannot listen for {what} on {addr}: {e}"));
    let listener = TcpListener::bind(addr).map_err(context)?;
    // mio listens with 128; listening again raises it (the kernel caps it
    // at net.core.somaxconn).
    // SAFETY: listen() on a socket we own, with a plain integer.
    if unsafe { libc::listen(listener.as_raw_fd(), backlog) } == -1 {
        return Err(context(io::Error::last_os_error()));
    }
    Ok(listener)
}

/// Opens UDP (when configured) and the two TCP ports, in that order: once
/// the TCP ports are announced, everything listens. Returns the listeners.
pub fn listen(poll: &Poll, conns: &mut Conns, config: &Config) -> io::Result<Vec<ConnId>> {
    let registry = poll.registry();
    if let Some(addr) = config.udp_addr {
        let socket = UdpSocket::bind(addr).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot listen for UDP on {addr}: {e}"))
        })?;
        let local = socket.local_addr()?;
        conns.register(registry, Interest::READABLE, Conn::Udp(socket))?;
        info!("listening for UDP on {local}");
    }
    let mut listeners = Vec::new();
    for (addr, port, what) in [
        (config.subscriber_addr, Port::Subscribers, "subscribers"),
        (config.controller_addr, Port::Controllers, "controllers"),
    ] {
        let listener = bind(addr, what, config.limits.listen_backlog)?;
        let local = listener.local_addr()?;
        listeners.push(conns.register(
            registry,
            Interest::READABLE,
            Conn::Listener(listener, port),
        )?);
        info!("listening for {what} on {local}");
    }
    Ok(listeners)
}

/// How many subscribers may be connected at once: `MaxSubscribers`, or
/// (0) what the descriptor limit leaves after controllers and reserves.
pub fn max_subscribers(config: &Config, fd_limit: usize) -> usize {
    match config.limits.subscribers {
        0 => fd_limit
            .saturating_sub(RESERVED_FDS + config.limits.controllers)
            .max(1),
        n => n,
    }
}

impl Server {
    /// Accepts what is queued on a listener, a turn's worth at a time.
    pub(super) fn accept(&mut self, id: ConnId) {
        if self.accept_paused_until.is_some() || self.draining_until.is_some() {
            return;
        }
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(slot) = self.conns.get(id) else {
                return;
            };
            let Conn::Listener(listener, port) = &slot.conn else {
                return;
            };
            let port = *port;
            match listener.accept() {
                Ok((socket, peer)) => match port {
                    Port::Subscribers => self.admit_subscriber(socket, peer),
                    Port::Controllers => self.admit_controller(socket, peer),
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    info!(
                        "accept failed: {e}; pausing accepts for {} ms",
                        ACCEPT_PAUSE.as_millis()
                    );
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    return;
                }
                Err(e) => debug!("accept failed: {e}"),
            }
        }
        self.after(id, Step::Yield);
    }

    fn admit_subscriber(&mut self, socket: TcpStream, peer: SocketAddr) {
        let stats = &mut self.world.stats;
        stats.total_requests += 1;
        stats.subscriber_connections_accepted += 1;
        if stats.current_subscribers as usize >= self.max_subscribers {
            stats.connections_refused += 1;
            subscriber::refuse(socket, &self.world.config, stats);
            info!(
                "{peer}: refused, {} subscribers connected",
                self.max_subscribers
            );
            return;
        }
        if let Err(e) = socket.set_nodelay(true) {
            debug!("{peer}: cannot set TCP_NODELAY: {e}");
        }
        let now = Instant::now();
        let sub = Subscriber::new(socket, peer, now, self.world.config.limits.head_timeout);
        if let Some(id) = self.register(Conn::Subscriber(sub), peer) {
            self.world.stats.current_subscribers += 1;
            debug!("{peer}: subscriber connected as {id}");
            // Starts its head timer.
            self.after(id, Step::Wait);
        }
    }

    fn admit_controller(&mut self, mut socket: TcpStream, peer: SocketAddr) {
        let stats = &mut self.world.stats;
        stats.total_requests += 1;
        stats.controller_connections_accepted += 1;
        let max = self.world.config.limits.controllers;
        if stats.current_controllers as usize >= max {
            stats.connections_refused += 1;
            stats.errors_served += 1;
            let _ = socket.write(b"ERR Too many connections\r\n");
            info!("{peer}: controller refused, {max} connected");
            return;
        }
        // Replies are small and answer requests one by one: never delay them.
        if let Err(e) = socket.set_nodelay(true) {
            debug!("{peer}: cannot set TCP_NODELAY: {e}");
        }
        let locked = self.world.config.controller_password.is_some();
        let controller = Controller::new(socket, peer, locked, Instant::now());
        if let Some(id) = self.register(Conn::Controller(controller), peer) {
            self.world.stats.current_controllers += 1;
            info!("{peer}: controller connected");
            // Starts its first-command timer.
            self.after(id, Step::Wait);
        }
    }

    /// Stores an accepted connection, registered for reading and writing.
    fn register(&mut self, conn: Conn, peer: SocketAddr) -> Option<ConnId> {
        let interest = Interest::READABLE | Interest::WRITABLE;
        match self.conns.register(self.poll.registry(), interest, conn) {
            Ok(id) => Some(id),
            Err(e) => {
                info!("{peer}: cannot register the connection: {e}");
                None
            }
        }
    }
}
