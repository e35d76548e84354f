//! The allocator of writ's binaries and benchmarks.
//!
//! glibc's malloc/free measured over a quarter of the apply worker's CPU:
//! small per-record allocations (headers, JSON values, status events) freed
//! on other threads than the one that allocated them, arena locks, and the
//! consolidation of freed batches. jemalloc's per-thread caches took the
//! worker from ~40 to ~22 µs of CPU per command (README, "Apply throughput").
//! A `#[global_allocator]` belongs to the final binary, so each binary (and
//! each benchmark that runs a service in-process) calls [`install!`] once.

#[doc(hidden)]
pub use tikv_jemallocator::Jemalloc;

/// jemalloc's options for writ, read before `main`; the `_RJEM_MALLOC_CONF`
/// environment variable still overrides them at run time. Two arenas (glibc
/// was limited to two as well) and freed pages returned within a second keep
/// peak RSS at glibc's level: jemalloc's defaults (four arenas per core,
/// ten-second decay) measured ~25 MiB more in the apply benchmark.
pub const MALLOC_CONF: &std::ffi::CStr = c"narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0";

/// A C string pointer, as jemalloc reads `const char *malloc_conf`.
#[doc(hidden)]
#[repr(transparent)]
pub struct MallocConf(pub *const std::ffi::c_char);

// SAFETY: the pointer is to an immutable C string in static memory.
unsafe impl Sync for MallocConf {}

/// Makes jemalloc, configured with [`MALLOC_CONF`], the global allocator of
/// the binary that calls it (once, at the crate root).
#[macro_export]
macro_rules! install {
    () => {
        #[global_allocator]
        static WRIT_GLOBAL_ALLOCATOR: $crate::Jemalloc = $crate::Jemalloc;

        #[export_name = "_rjem_malloc_conf"]
        static WRIT_MALLOC_CONF: $crate::MallocConf =
            $crate::MallocConf($crate::MALLOC_CONF.as_ptr());
    };
}
