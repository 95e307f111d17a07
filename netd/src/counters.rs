//! Why packets are dropped or refused, and how much traffic went each way.

/// Why a received datagram was dropped. Every drop is counted under exactly one reason;
/// none of them is ever answered on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than header plus tag.
    TooShort,
    /// Reserved header bits set.
    BadHeader,
    /// No receive key for the packet's epoch (never installed, or already erased).
    UnknownEpoch,
    /// Sequence number already accepted.
    Replayed,
    /// Sequence number behind the replay window.
    TooOld,
    /// Authentication tag did not verify.
    BadMac,
    /// Larger than the configured maximum, before or after decompression.
    TooLarge,
    /// Marked compressed but not a valid deflate stream.
    Decompress,
    /// Authentic but malformed inside (an "other" packet without its ethertype, an empty
    /// control message).
    Malformed,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [Self; 9] = [
        Self::TooShort,
        Self::BadHeader,
        Self::UnknownEpoch,
        Self::Replayed,
        Self::TooOld,
        Self::BadMac,
        Self::TooLarge,
        Self::Decompress,
        Self::Malformed,
    ];

    /// Stable name for logs and status output.
    pub fn name(self) -> &'static str {
        match self {
            Self::TooShort => "too-short",
            Self::BadHeader => "bad-header",
            Self::UnknownEpoch => "unknown-epoch",
            Self::Replayed => "replayed",
            Self::TooOld => "too-old",
            Self::BadMac => "bad-mac",
            Self::TooLarge => "too-large",
            Self::Decompress => "decompress",
            Self::Malformed => "malformed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why a packet from the tun device was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SealError {
    /// No send key installed yet.
    #[error("no send key")]
    NoKey,
    /// The send key reached a hard limit (volume, sequence numbers or age) and its
    /// successor has not arrived.
    #[error("send key exhausted")]
    KeyExhausted,
    /// The packet exceeds the configured maximum inner size.
    #[error("packet too large")]
    TooLarge,
    /// The output buffer cannot hold the sealed packet.
    #[error("output buffer too small")]
    BufferTooSmall,
}

impl SealError {
    /// Every error, in counter order.
    pub const ALL: [Self; 4] = [Self::NoKey, Self::KeyExhausted, Self::TooLarge, Self::BufferTooSmall];

    /// Stable name for logs and status output.
    pub fn name(self) -> &'static str {
        match self {
            Self::NoKey => "no-key",
            Self::KeyExhausted => "key-exhausted",
            Self::TooLarge => "too-large",
            Self::BufferTooSmall => "buffer-too-small",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

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
