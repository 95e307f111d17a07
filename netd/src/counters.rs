//! Why packets are dropped or refused, and how much traffic went each way.

pub use yavipin_ipc::reasons::{DropReason, SealError};

/// Packets and inner bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Packets.
    pub packets: u64,
    /// Inner bytes (the tun packet, or the control message), before compression.
    pub bytes: u64,
}

impl Traffic {
    pub(crate) fn add(&mut self, bytes: usize) {
        self.packets += 1;
        self.bytes += bytes as u64;
    }
}

/// Everything the data plane counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Sealed and handed out for sending.
    pub sent: Traffic,
    /// Opened and handed out for delivery.
    pub received: Traffic,
    /// Sent packets that were compressed, and the bytes compression saved on them.
    pub compressed: Traffic,
    drops: [u64; DropReason::ALL.len()],
    refused: [u64; SealError::ALL.len()],
}

impl Counters {
    /// Datagrams dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    /// Packets not sent because of `error`.
    pub fn refused(&self, error: SealError) -> u64 {
        self.refused[error.index()]
    }

    /// All drops, whatever the reason.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().sum()
    }

    pub(crate) fn count_drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }

    pub(crate) fn count_refusal(&mut self, error: SealError) {
        self.refused[error.index()] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_order_matches_declaration() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        for (i, e) in SealError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
        let names: std::collections::HashSet<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), DropReason::ALL.len());
    }
}
