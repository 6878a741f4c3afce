//! Keeps freed memory in the process for reuse instead of returning it to the kernel.
//!
//! A training step allocates every activation of the graph and then the gradients beside them,
//! frees them all, and does the same again. With glibc's defaults, blocks above 128 KiB (growing
//! dynamically up to 32 MiB) are mapped and unmapped per allocation, and the top of the heap is
//! trimmed whenever 128 KiB lie free, so each step faults in and zeroes fresh pages: ~240,000
//! page faults per step of the 2D benchmark UNet and 28% of its CPU samples in the kernel
//! (`docs/performance.md`). Raising the mapping threshold to glibc's maximum and never trimming
//! keeps the pages: the same bench then takes a fifth less time per step. The cost is a resident
//! size that stays at the step's peak, which training reaches on every step anyway.

/// glibc's largest `M_MMAP_THRESHOLD` on 64-bit targets (`DEFAULT_MMAP_THRESHOLD_MAX`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_MAX: libc::c_int = 32 << 20;

/// Tunes the allocator for training (see the module documentation); call once at start-up. A
/// no-op where the C library is not glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}
