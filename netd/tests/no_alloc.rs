//! The data plane allocates nothing per packet: a counting global allocator watches 1000
//! seal+open round trips at 1400 bytes, with and without compression, after setup.
//!
//! Counting is per thread (the test harness and other tests allocate on their own threads)
//! and only while a test has switched it on. The first allocation seen while counting
//! records a backtrace, so a failure names what allocated.

use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use yavipin_netd::{Classic, DataConfig, DataPlane, Delivery, Inner};
use yavipin_proto::{Epoch, EpochKey, TrafficSecret};

/// Counts the calls that obtain memory on the calling thread, when switched on.
struct CountingAlloc;

thread_local! {
    /// Whether this thread's allocations are being counted.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Allocations (alloc, alloc_zeroed, realloc) counted on this thread.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    /// Size and backtrace of the first allocation counted on this thread.
    static FIRST: RefCell<Option<String>> = const { RefCell::new(None) };
}

impl CountingAlloc {
    fn record(layout: Layout) {
        // `try_with`: the allocator also runs while thread-locals are being torn down.
        let counting = COUNTING.try_with(Cell::get).unwrap_or(false);
        if !counting {
            return;
        }
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // Capturing allocates: stop counting meanwhile so the allocator does not recurse
        // into this branch.
        COUNTING.with(|c| c.set(false));
        if FIRST.with_borrow(Option::is_none) {
            let first = format!("allocation of {} bytes at\n{}", layout.size(), Backtrace::force_capture());
            FIRST.set(Some(first));
        }
        COUNTING.with(|c| c.set(true));
    }
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the `GlobalAlloc`
// contract; the bookkeeping around it touches only thread-locals and never hands out or
// frees memory itself.
#[allow(unsafe_code)] // A global allocator cannot be written without `unsafe`.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::record(layout);
        // SAFETY: the caller's obligations for `layout` are passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::record(layout);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::record(Layout::from_size_align(new_size, layout.align()).unwrap_or(layout));
        // SAFETY: `ptr` was allocated by this allocator, that is by `System`, with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator, that is by `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// Runs `f` with this thread's allocations counted; returns how many there were and the
/// backtrace of the first.
fn count_allocations(f: impl FnOnce()) -> (u64, Option<String>) {
    // Touched here first, outside the allocator, so that registering the thread-local's
    // destructor happens before counting starts.
    FIRST.set(None);
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    (ALLOCATIONS.with(Cell::get), FIRST.take())
}

const ROUND_TRIPS: u32 = 1000;
const SIZE: usize = 1400;
const ETHERTYPE_IPV4: u16 = 0x0800;

fn config(compression: bool) -> DataConfig {
    DataConfig {
        compression,
        rekey_after_bytes: u64::MAX,
        reject_after_bytes: u64::MAX,
        rekey_after_packets: u32::MAX,
        reject_after_packets: u32::MAX,
        rekey_after_time: Duration::from_secs(3600),
        reject_after_time: Duration::from_secs(3600),
        ..DataConfig::default()
    }
}

fn key() -> EpochKey {
    EpochKey { epoch: Epoch(1), secret: TrafficSecret::new([7; 32]) }
}

/// Sets up a sender and a receiver, then counts the allocations of `ROUND_TRIPS` round
/// trips of `packet`. Every packet is checked to arrive intact (outside the counted part,
/// the check itself allocates nothing either).
fn round_trips(compression: bool, packet: &[u8]) -> (u64, Option<String>, u64) {
    let now = Instant::now();
    let mut sender = DataPlane::<Classic>::new(config(compression));
    let mut receiver = DataPlane::<Classic>::new(config(compression));
    sender.install_send_key(now, key()).expect("send key");
    receiver.install_recv_key(key()).expect("receive key");
    let mut wire = vec![0u8; sender.max_datagram_len()];
    let mut out = vec![0u8; 1500];
    let mut intact = true;

    let (allocations, first) = count_allocations(|| {
        for _ in 0..ROUND_TRIPS {
            let inner = Inner::Packet { ethertype: ETHERTYPE_IPV4, payload: packet };
            let len = sender.seal(now, inner, &mut wire).expect("sealed");
            let opened = receiver.open(now, &wire[..len], &mut out).expect("opened");
            intact &= opened.kind == Delivery::Packet { ethertype: ETHERTYPE_IPV4 } && out[opened.range] == *packet;
        }
    });
    assert!(intact, "a packet did not round-trip intact");
    assert_eq!(sender.counters().sent.packets, u64::from(ROUND_TRIPS));
    assert_eq!(receiver.counters().received.packets, u64::from(ROUND_TRIPS));
    (allocations, first, sender.counters().compressed.packets)
}

fn assert_no_allocations(what: &str, allocations: u64, first: Option<&str>) {
    assert!(
        allocations == 0,
        "{what}: {allocations} heap allocations in {ROUND_TRIPS} round trips; the first:\n{}",
        first.unwrap_or("(no backtrace)")
    );
}

#[test]
fn seal_open_allocates_nothing() {
    // Incompressible-looking bytes; compression is off anyway.
    let packet: Vec<u8> = (0..SIZE).map(|i| u8::try_from((i * 167 + 13) % 256).expect("byte")).collect();
    let (allocations, first, _) = round_trips(false, &packet);
    assert_no_allocations("uncompressed", allocations, first.as_deref());
}

#[test]
fn compressed_seal_open_allocates_nothing() {
    // Text-like, highly compressible: every packet goes out compressed.
    let packet: Vec<u8> =
        b"GET /index.html HTTP/1.1\r\nHost: example.invalid\r\n\r\n".iter().copied().cycle().take(SIZE).collect();
    let (allocations, first, compressed) = round_trips(true, &packet);
    assert_eq!(compressed, u64::from(ROUND_TRIPS), "every packet should have been compressed");
    assert_no_allocations("compressed", allocations, first.as_deref());
}

/// The counter itself works: an allocation inside the counted part is seen and traced.
#[test]
fn counter_sees_allocations() {
    let (allocations, first) = count_allocations(|| {
        std::hint::black_box(Vec::<u8>::with_capacity(1400));
    });
    assert_eq!(allocations, 1);
    assert!(first.is_some_and(|trace| trace.contains("allocation of 1400 bytes")));
}
