//! The process's allocator, tuned for training loops.

/// Asks glibc's allocator to keep freed memory for reuse; call it once at the start of `main`,
/// before the CPU kernels' threads start (the `difftune` binary does).
///
/// A training step frees and allocates its activations again every step. By default glibc
/// hands blocks of a few MiB back to the system once freed (they are mapped on their own, or
/// trimmed off the heap's top), and each thread allocates from an arena of its own that grows
/// in heaps of at most 64 MiB, unmapped as soon as they empty: each step then pays fresh pages,
/// page faults and the kernel zeroing them. With this, blocks under 32 MiB come from the heap,
/// which is trimmed only past 1 GiB of free space at its top, and all threads share one arena.
/// A 60-step U-Net run on two cores went from 975,000 to 81,000 page faults and 10% less CPU
/// time (BENCHMARKS.md). Elsewhere (another libc) this does nothing.
///
/// ```
/// tensor::keep_freed_memory();
/// let x = tensor::Tensor::from_vec(vec![1f32, 2., 3.], &[3]).unwrap();
/// assert_eq!(tensor::on_cpu_workers(|| x.exp()).unwrap().shape(), [3]);
/// ```
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::c_int;
        // From glibc's <malloc.h>.
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_THRESHOLD: c_int = -3;
        const M_ARENA_MAX: c_int = -8;
        extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        // SAFETY: mallopt only sets the allocator's tuning parameters, under its own lock.
        unsafe {
            mallopt(M_TRIM_THRESHOLD, 1 << 30);
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_ARENA_MAX, 1);
        }
    }
}
