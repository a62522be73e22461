//! A counting global allocator: std's `System` allocator plus per-thread
//! bookkeeping, so a test can measure what one decode allocated while other
//! tests run on other threads.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// `System`, counting the bytes each thread holds while it [`measure`]s.
pub struct Counting;

thread_local! {
    // `const` initializers and `Copy` contents: no lazy initialization and no
    // destructor, so touching them from inside the allocator cannot allocate.
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    static PEAK_BYTES: Cell<isize> = const { Cell::new(0) };
    static LARGEST_BYTES: Cell<usize> = const { Cell::new(0) };
}

/// What a measured closure allocated.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Most bytes held at once beyond what was held at the start.
    pub peak_bytes: usize,
    /// The largest single allocation (or reallocation's new size).
    pub largest_bytes: usize,
}

/// Runs `f` and reports its allocations on this thread.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, Usage) {
    LIVE_BYTES.set(0);
    PEAK_BYTES.set(0);
    LARGEST_BYTES.set(0);
    MEASURING.set(true);
    let result = f();
    MEASURING.set(false);
    let usage = Usage { peak_bytes: PEAK_BYTES.get().max(0) as usize, largest_bytes: LARGEST_BYTES.get() };
    (result, usage)
}

/// Notes an allocation of `size` bytes (`delta` = change of bytes held).
fn record(delta: isize, size: usize) {
    // `try_with`: the allocator also runs while a thread's locals are torn down.
    let _ = MEASURING.try_with(|measuring| {
        if measuring.get() {
            let live = LIVE_BYTES.get() + delta;
            LIVE_BYTES.set(live);
            PEAK_BYTES.set(PEAK_BYTES.get().max(live));
            LARGEST_BYTES.set(LARGEST_BYTES.get().max(size));
        }
    });
}

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping
// neither allocates nor unwinds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size() as isize, layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size() as isize, layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        record(-(layout.size() as isize), 0);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size as isize - layout.size() as isize, new_size);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
