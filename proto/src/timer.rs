//! Timers as data: each sans-IO core names its timers in a closed enum and keeps their
//! deadlines in one table; the earliest deadline is the core's poll timeout.

use std::time::Instant;

/// A closed set of timers: every variant listed once in [`Timer::ALL`], in index order.
pub trait Timer: Copy + Eq + core::fmt::Debug + 'static {
    /// Every timer, `ALL[t.index()] == t`.
    const ALL: &'static [Self];
    /// Position in the table.
    fn index(self) -> usize;
}

/// Deadlines of a core's timers. `N` must equal `T::ALL.len()`.
#[derive(Debug, Clone)]
pub struct TimerTable<T: Timer, const N: usize> {
    deadlines: [Option<Instant>; N],
    _timers: core::marker::PhantomData<T>,
}

impl<T: Timer, const N: usize> Default for TimerTable<T, N> {
    fn default() -> Self {
        assert_eq!(T::ALL.len(), N, "timer table size must match the timer enum");
        Self { deadlines: [None; N], _timers: core::marker::PhantomData }
    }
}

impl<T: Timer, const N: usize> TimerTable<T, N> {
    /// Arms `timer` to fire at `at`, replacing any earlier setting.
    pub fn set(&mut self, timer: T, at: Instant) {
        self.deadlines[timer.index()] = Some(at);
    }

    /// Disarms `timer`.
    pub fn stop(&mut self, timer: T) {
        self.deadlines[timer.index()] = None;
    }

    /// When `timer` fires, if armed.
    pub fn get(&self, timer: T) -> Option<Instant> {
        self.deadlines[timer.index()]
    }

    /// The earliest armed deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Disarms and returns the first timer whose deadline is at or before `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<T> {
        let index = self.deadlines.iter().position(|d| d.is_some_and(|d| d <= now))?;
        self.deadlines[index] = None;
        Some(T::ALL[index])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum T {
        A,
        B,
    }
    impl Timer for T {
        const ALL: &'static [Self] = &[T::A, T::B];
        fn index(self) -> usize {
            self as usize
        }
    }

    #[test]
    fn earliest_deadline_and_expiry() {
        let t0 = Instant::now();
        let mut table = TimerTable::<T, 2>::default();
        assert_eq!(table.next_deadline(), None);
        table.set(T::B, t0 + Duration::from_secs(2));
        table.set(T::A, t0 + Duration::from_secs(5));
        assert_eq!(table.next_deadline(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(table.pop_expired(t0 + Duration::from_secs(1)), None);
        assert_eq!(table.pop_expired(t0 + Duration::from_secs(2)), Some(T::B));
        assert_eq!(table.pop_expired(t0 + Duration::from_secs(9)), Some(T::A));
        assert_eq!(table.pop_expired(t0 + Duration::from_secs(9)), None);
        table.set(T::A, t0);
        table.stop(T::A);
        assert_eq!(table.get(T::A), None);
    }
}
