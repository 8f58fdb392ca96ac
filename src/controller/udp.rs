//! Publishing by UDP datagram: one `ADDMESSAGE` per datagram, nothing sent
//! back, through the same hub as every other publish.

use super::Context;
use super::commands::{Command, parse};
use crate::conn::Step;
use crate::hub::Publish;
use crate::info;
use crate::io::COMMANDS_PER_TURN;
use mio::net::UdpSocket;
use std::io;

/// Publishes the datagrams waiting on `socket`, a turn's worth at a time.
pub fn receive(socket: &UdpSocket, ctx: &mut Context) -> Step {
    for _ in 0..COMMANDS_PER_TURN {
        let (n, peer) = match socket.recv_from(ctx.scratch) {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                info!("UDP receive failed: {e}");
                return Step::Wait;
            }
        };
        ctx.stats.total_inbound_bytes += n as u64;
        let limit = ctx.config.limits.udp_bytes;
        if n > limit {
            info!("{peer}: dropped a UDP datagram of {n} bytes (UDPMaxBytes {limit})");
            continue;
        }
        let datagram = &ctx.scratch[..n];
        let datagram = datagram
            .strip_suffix(b"\r\n")
            .or_else(|| datagram.strip_suffix(b"\n"))
            .unwrap_or(datagram);
        match parse(datagram) {
            Some(Command::AddMessage { channel, text })
                if channel.len() <= ctx.config.limits.channel_name_length =>
            {
                match ctx.hub.publish(ctx.stats, None, channel, text, ctx.now_ms) {
                    Publish::Done(_) | Publish::Pending => {}
                    Publish::Unavailable => {
                        info!("{peer}: UDP publish dropped: the backend is unavailable")
                    }
                    Publish::StorageUnavailable => {
                        info!("{peer}: UDP publish dropped: the state file cannot be written")
                    }
                    Publish::Refused(refused) => info!("{peer}: UDP publish refused: {refused}"),
                }
            }
            _ => info!("{peer}: ignored a UDP datagram that is not a valid ADDMESSAGE"),
        }
    }
    Step::Yield
}
