//! The server's counters, reported by `SHOWSTATS`.

use std::time::Instant;

/// Live counters; each is updated where the event it counts happens.
#[derive(Debug)]
pub struct Stats {
    /// When the server started, for `uptime`.
    pub started: Instant,
    pub total_requests: u64,
    pub current_subscribers: u64,
    pub subscriber_connections_accepted: u64,
    pub current_controllers: u64,
    pub controller_connections_accepted: u64,
    pub unique_messages: u64,
    pub messages_served: u64,
    pub total_inbound_bytes: u64,
    pub total_outbound_bytes: u64,
    pub documents_served: u64,
    pub documents_not_found: u64,
    pub errors_served: u64,
    /// Subscribers dropped because they fell behind what their channel holds
    /// or stopped reading for `WriteTimeout` (wire contract B3).
    pub slow_consumers_dropped: u64,
    /// Connections refused because a connection table was full.
    pub connections_refused: u64,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            started: Instant::now(),
            total_requests: 0,
            current_subscribers: 0,
            subscriber_connections_accepted: 0,
            current_controllers: 0,
            controller_connections_accepted: 0,
            unique_messages: 0,
            messages_served: 0,
            total_inbound_bytes: 0,
            total_outbound_bytes: 0,
            documents_served: 0,
            documents_not_found: 0,
            errors_served: 0,
            slow_consumers_dropped: 0,
            connections_refused: 0,
        }
    }
}

impl Stats {
    /// The classic counters, in `SHOWSTATS` order (exactly these twelve:
    /// publishers' scripts parse them).
    pub fn counters(&self) -> [(&'static str, u64); 12] {
        [
            ("total_requests", self.total_requests),
            ("current_subscribers", self.current_subscribers),
            (
                "subscriber_connections_accepted",
                self.subscriber_connections_accepted,
            ),
            ("current_controllers", self.current_controllers),
            (
                "controller_connections_accepted",
                self.controller_connections_accepted,
            ),
            ("unique_messages", self.unique_messages),
            ("messages_served", self.messages_served),
            ("total_inbound_bytes", self.total_inbound_bytes),
            ("total_outbound_bytes", self.total_outbound_bytes),
            ("documents_served", self.documents_served),
            ("documents_not_found", self.documents_not_found),
            ("errors_served", self.errors_served),
        ]
    }

    /// Our counters beyond the classic ones (HTTP `/stats` and `/metrics`).
    pub fn extra_counters(&self) -> [(&'static str, u64); 2] {
        [
            ("slow_consumers_dropped", self.slow_consumers_dropped),
            ("connections_refused", self.connections_refused),
        ]
    }
}
