//! Keeping freed memory for reuse.
//!
//! A training step allocates and frees the same large arrays every time (activations, caches,
//! gradients: tens of MB). With glibc's defaults, blocks of that size are mapped from the system
//! on allocation and unmapped on free, so every step pays a page fault and a zero fill per 4 KiB
//! page, which costs as much as the arithmetic of a small model. [`keep_freed_memory`] tells
//! glibc's allocator to serve blocks up to 32 MiB from its heap and not to give freed memory
//! back, as PyTorch's caching allocator does for its tensors. It changes no result.
//!
//! The `skipgate` binary calls it at start; programs using the library may call it too.

/// Asks the C allocator to keep freed memory for reuse (glibc on Linux; elsewhere nothing).
/// Call it once, early, before large allocations.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // From glibc's <malloc.h>.
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: mallopt only sets allocator tunables; both values are within glibc's limits
        // (the mmap threshold may be at most 32 MiB on 64-bit systems).
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}
