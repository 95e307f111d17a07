//! Strict anti-replay: the sliding bitmap window of RFC 6479.
//!
//! The check is split in two so that nothing an attacker sends can move the window:
//! [`ReplayWindow::check`] is read-only and runs before the MAC; [`ReplayWindow::commit`]
//! runs only for packets whose MAC verified.

/// How far behind the newest accepted sequence number a packet may arrive and still be
/// accepted (once).
pub const REPLAY_WINDOW: u32 = 8192;

const BLOCK_BITS: u32 = u64::BITS;
/// One block more than the window needs, so the block being filled never overlaps the
/// oldest block still inside the window (RFC 6479, section 2).
const BLOCKS: u32 = REPLAY_WINDOW / BLOCK_BITS + 1;

/// Why the window refuses a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// Seen before.
    Replayed,
    /// Older than the window: cannot be told apart from a replay.
    TooOld,
}

/// The receive window of one key epoch.
#[derive(Clone)]
pub struct ReplayWindow {
    /// Highest accepted sequence number, `None` before the first packet.
    top: Option<u32>,
    bitmap: [u64; BLOCKS as usize],
}

impl core::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplayWindow").field("top", &self.top).finish_non_exhaustive()
    }
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

/// Ring slot of the block holding bit number `block * 64 .. block * 64 + 63`.
fn slot(block: u32) -> usize {
    (block % BLOCKS) as usize
}

fn block_of(seq: u32) -> usize {
    slot(seq / BLOCK_BITS)
}

fn bit_of(seq: u32) -> u64 {
    1 << (seq % BLOCK_BITS)
}

impl ReplayWindow {
    /// An empty window: every sequence number is acceptable once.
    pub fn new() -> Self {
        Self { top: None, bitmap: [0; BLOCKS as usize] }
    }

    /// The highest sequence number committed so far.
    pub fn top(&self) -> Option<u32> {
        self.top
    }

    /// Whether `seq` would be accepted. Changes nothing.
    pub fn check(&self, seq: u32) -> Result<(), ReplayError> {
        let Some(top) = self.top else { return Ok(()) };
        if seq > top {
            return Ok(());
        }
        if top - seq >= REPLAY_WINDOW {
            return Err(ReplayError::TooOld);
        }
        if self.bitmap[block_of(seq)] & bit_of(seq) != 0 {
            return Err(ReplayError::Replayed);
        }
        Ok(())
    }

    /// Records `seq` as received. Call only after [`Self::check`] passed and the packet
    /// authenticated.
    pub fn commit(&mut self, seq: u32) {
        match self.top {
            Some(top) if seq <= top => {}
            Some(top) => {
                // Clear the blocks the window slides over, at most the whole ring.
                let old_block = top / BLOCK_BITS;
                let new_block = seq / BLOCK_BITS;
                let steps = (new_block - old_block).min(BLOCKS);
                for step in 1..=steps {
                    self.bitmap[slot(old_block + step)] = 0;
                }
                self.top = Some(seq);
            }
            None => {
                self.top = Some(seq);
            }
        }
        self.bitmap[block_of(seq)] |= bit_of(seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn accept(w: &mut ReplayWindow, seq: u32) -> Result<(), ReplayError> {
        w.check(seq)?;
        w.commit(seq);
        Ok(())
    }

    #[test]
    fn duplicates_are_refused() {
        let mut w = ReplayWindow::new();
        assert_eq!(accept(&mut w, 0), Ok(()));
        assert_eq!(accept(&mut w, 0), Err(ReplayError::Replayed));
        assert_eq!(accept(&mut w, 5), Ok(()));
        assert_eq!(accept(&mut w, 5), Err(ReplayError::Replayed));
        assert_eq!(accept(&mut w, 3), Ok(()));
        assert_eq!(accept(&mut w, 3), Err(ReplayError::Replayed));
    }

    #[test]
    fn window_edges() {
        let mut w = ReplayWindow::new();
        let top = 100_000;
        accept(&mut w, top).expect("fresh");
        // The oldest acceptable sequence number is top - (WINDOW - 1).
        let oldest = top - (REPLAY_WINDOW - 1);
        assert_eq!(w.check(oldest - 1), Err(ReplayError::TooOld));
        assert_eq!(accept(&mut w, oldest), Ok(()));
        assert_eq!(accept(&mut w, oldest), Err(ReplayError::Replayed));
        assert_eq!(accept(&mut w, oldest + 1), Ok(()));
        assert_eq!(accept(&mut w, top - 1), Ok(()));
        assert_eq!(accept(&mut w, top + 1), Ok(()));
        // The window moved by one: the former oldest is now too old, its successor is
        // the oldest and already seen.
        assert_eq!(w.check(oldest), Err(ReplayError::TooOld));
        assert_eq!(w.check(oldest + 1), Err(ReplayError::Replayed));
        assert_eq!(w.check(oldest + 2), Ok(()));
    }

    #[test]
    fn check_alone_never_moves_the_window() {
        let mut w = ReplayWindow::new();
        accept(&mut w, 10).expect("fresh");
        for seq in [u32::MAX, 1 << 31, 10_000_000, 11] {
            assert_eq!(w.check(seq), Ok(()));
        }
        assert_eq!(w.top(), Some(10));
        assert_eq!(accept(&mut w, 9), Ok(()));
        assert_eq!(accept(&mut w, 10), Err(ReplayError::Replayed));
    }

    #[test]
    fn large_jump_clears_stale_bits() {
        let mut w = ReplayWindow::new();
        for seq in 0..200 {
            accept(&mut w, seq).expect("fresh");
        }
        // Jump far ahead: everything old is out of the window, and the bits that alias
        // into the ring must not make new numbers look replayed.
        accept(&mut w, 1_000_000).expect("fresh");
        for seq in (1_000_000 - (REPLAY_WINDOW - 1))..1_000_000 {
            assert_eq!(w.check(seq), Ok(()), "seq {seq}");
        }
    }

    #[test]
    fn top_of_sequence_space() {
        let mut w = ReplayWindow::new();
        accept(&mut w, u32::MAX - 1).expect("fresh");
        accept(&mut w, u32::MAX).expect("fresh");
        assert_eq!(accept(&mut w, u32::MAX), Err(ReplayError::Replayed));
        assert_eq!(accept(&mut w, u32::MAX - REPLAY_WINDOW + 1), Ok(()));
        assert_eq!(w.check(u32::MAX - REPLAY_WINDOW), Err(ReplayError::TooOld));
    }

    proptest! {
        /// Against a model that remembers every accepted number: the window accepts a
        /// number exactly when the model has not seen it and it is inside the window.
        #[test]
        fn matches_a_model(seqs in proptest::collection::vec(
            prop_oneof![0u32..20_000, any::<u32>()], 1..500)) {
            let mut w = ReplayWindow::new();
            let mut seen = std::collections::BTreeSet::new();
            for seq in seqs {
                let top = seen.iter().next_back().copied();
                let expected = match top {
                    Some(top) if seq <= top && top - seq >= REPLAY_WINDOW => Err(ReplayError::TooOld),
                    _ if seen.contains(&seq) => Err(ReplayError::Replayed),
                    _ => Ok(()),
                };
                prop_assert_eq!(accept(&mut w, seq), expected);
                if expected.is_ok() {
                    seen.insert(seq);
                }
            }
        }
    }
}
