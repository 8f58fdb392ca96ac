//! The loop's connections: one enum whose variants are the kinds of socket
//! the loop owns, kept in a slab under identities that are never reused.

use crate::cluster::link::Link;
use crate::conn::ConnId;
use crate::controller::Controller;
use crate::subscriber::Subscriber;
use mio::event::Source;
use mio::net::{TcpListener, UdpSocket, UnixStream};
use mio::{Interest, Registry, Token};
use slab::Slab;
use std::io;
use std::time::Instant;

/// Which port a listener accepts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Subscribers,
    Controllers,
}

/// One socket of the loop.
pub enum Conn {
    /// Accepts browsers or publishers.
    Listener(TcpListener, Port),
    /// The read end of the signal self-pipe.
    Signals(UnixStream),
    /// Takes one `ADDMESSAGE` per datagram.
    Udp(UdpSocket),
    Controller(Controller),
    Subscriber(Subscriber),
    /// A link to Redis, when this node is one of several.
    Redis(Link),
}

impl Conn {
    fn source(&mut self) -> &mut dyn Source {
        match self {
            Conn::Listener(l, _) => l,
            Conn::Signals(s) => s,
            Conn::Udp(u) => u,
            Conn::Controller(c) => &mut c.socket,
            Conn::Subscriber(s) => &mut s.socket,
            Conn::Redis(r) => &mut r.socket,
        }
    }

    /// Whether it is a client the server waits for when draining.
    pub fn is_client(&self) -> bool {
        matches!(self, Conn::Controller(_) | Conn::Subscriber(_))
    }
}

/// A connection in the slab, with its identity and the deadline it has
/// in the loop's timer index.
pub struct Slot {
    pub id: ConnId,
    pub timer: Option<Instant>,
    /// On the loop's pending list: it yielded with work left and is driven
    /// once, before the next poll; until then readiness adds nothing.
    pub pending: bool,
    pub conn: Conn,
}

/// Every connection of the loop.
#[derive(Default)]
pub struct Conns {
    slab: Slab<Slot>,
    /// The serial of the last connection stored.
    serial: u64,
}

impl Conns {
    /// Stores a connection and registers its socket under its slot as the
    /// poll token. Readable and writable interest are edge-triggered, so
    /// writable events only come after a write would block.
    pub fn register(
        &mut self,
        registry: &Registry,
        interest: Interest,
        conn: Conn,
    ) -> io::Result<ConnId> {
        self.serial += 1;
        let entry = self.slab.vacant_entry();
        let id = ConnId::new(entry.key(), self.serial);
        let slot = entry.insert(Slot {
            id,
            timer: None,
            pending: false,
            conn,
        });
        if let Err(e) = registry.register(slot.conn.source(), Token(id.slot()), interest) {
            self.slab.remove(id.slot());
            return Err(e);
        }
        Ok(id)
    }

    /// The connection named by `id`, if it is still there.
    pub fn get(&mut self, id: ConnId) -> Option<&mut Slot> {
        self.slab.get_mut(id.slot()).filter(|s| s.id == id)
    }

    /// The identity of whatever sits under a poll token now.
    pub fn at(&self, token: Token) -> Option<ConnId> {
        self.slab.get(token.0).map(|s| s.id)
    }

    /// Takes a connection out; its socket closes when it is dropped.
    pub fn remove(&mut self, id: ConnId) -> Option<Slot> {
        self.get(id)?;
        self.slab.try_remove(id.slot())
    }

    /// Deregisters a socket that is being removed while the process may
    /// still hold another descriptor for it (listeners, the signal pipe,
    /// UDP, Redis). Client sockets need no deregistration: closing their
    /// only descriptor removes them from epoll, which saves a system call
    /// on every long-poll cycle.
    pub fn deregister(registry: &Registry, conn: &mut Conn) {
        if !conn.is_client() {
            let _ = registry.deregister(conn.source());
        }
    }

    /// Identities of the client connections (controllers, subscribers).
    pub fn clients(&self) -> Vec<ConnId> {
        self.slab
            .iter()
            .filter(|(_, s)| s.conn.is_client())
            .map(|(_, s)| s.id)
            .collect()
    }
}
