//! The allocator of every binary here (`webhooks`, the five Lambdas, the
//! benchmarks), and the one setting each process makes for it at start.
//!
//! mimalloc: glibc's malloc was 26-29 % of the pipeline's CPU
//! (BENCHMARKS.md, issue 14). Each `main` declares it:
//!
//! ```text
//! #[global_allocator]
//! static GLOBAL: webhooks_alloc::MiMalloc = webhooks_alloc::MiMalloc;
//!
//! fn main() {
//!     webhooks_alloc::small_pages();
//!     // ...
//! }
//! ```

pub use mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process, as
/// `MIMALLOC_ALLOW_THP=0` would if it were set before the process started.
///
/// mimalloc 3 asks the kernel for huge pages on all its memory
/// (`madvise(MADV_HUGEPAGE)`). Where the kernel honours that (the common
/// `enabled=madvise` and `defrag=madvise` settings), the first touch of
/// each 2 MiB of the heap zeroes all 2 MiB at once and may compact memory
/// to find them. While a process's heap grows (every `webhooks dev`,
/// every Lambda environment's first invocations, each pass of the e2e
/// benchmark) that zeroing was about a tenth of the pipeline's CPU time;
/// with 4 KiB pages it all but disappears (BENCHMARKS.md, "Stop 40").
///
/// Call it first thing in `main`: it covers every page touched after it,
/// including those of memory mimalloc already reserved. Best effort: a
/// kernel or sandbox that refuses the setting leaves the default.
pub fn small_pages() {
    #[cfg(target_os = "linux")]
    {
        let _ = nix::sys::prctl::set_thp_disable(true);
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    #[test]
    fn the_process_no_longer_takes_huge_pages() {
        super::small_pages();
        assert_eq!(nix::sys::prctl::get_thp_disable(), Ok(true));
    }
}
