//! Giving freed memory back to the system.

/// glibc's allocator keeps what the process freed for its later allocations unless asked to give
/// it back, so a long-running process whose peaks are brief (a reconcile's release records and
/// rendered values, a dashboard refresh's list of every pod) would keep its last peak as its
/// size while it idles.
pub fn give_back_freed() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory to the system; no pointer is touched.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}
