//! Giving freed memory back to the operating system.
//!
//! Loading a configuration is the one moment a dispatcher allocates in bulk:
//! a ten-thousand-channel manifest set is parsed into YAML values, compiled
//! and diffed, tens of megabytes that are all freed once the contract is
//! applied. glibc's allocator keeps freed pages mapped for reuse, and pages
//! fragmented by the long-lived objects allocated meanwhile stay in the
//! resident set for good: each reload ratchets RSS up until a container's
//! memory limit kills the process. After each load the dispatcher asks the
//! allocator to return every whole free page (`malloc_trim(0)` walks all
//! arenas and `madvise`s free pages away, not only the top of the heap).

/// Return free heap pages to the kernel. A no-op where the C library is
/// not glibc.
// The one unsafe call of the engine: a foreign function with no arguments
// to get wrong.
#[allow(unsafe_code)]
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists; it
        // is thread-safe and has no preconditions.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
