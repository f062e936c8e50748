//! The allocator, and giving freed memory back to the operating system.
//!
//! A dispatcher's memory has two lives. The data plane's state (routes,
//! subscription workers, metric handles) lives as long as the configuration
//! does, a few kilobytes per channel. Loading a configuration allocates in
//! bulk for a moment: a ten-thousand-channel manifest set is parsed into
//! YAML values, compiled and diffed, tens of megabytes freed once the
//! contract is applied. With glibc's allocator the second kind leaves holes
//! between pieces of the first, freed pages stay resident, and each reload
//! ratchets the resident set up (measured: +100 % after five edits of a
//! 10,000-channel file) until a container's memory limit kills the process.
//!
//! So every binary linking the engine allocates with jemalloc (size-class
//! slabs keep long- and short-lived objects apart), configured to hand
//! unused pages back one second after they are freed, from a background
//! thread (`dirty_decay_ms:1000,muzzy_decay_ms:0,background_thread:true`;
//! `_RJEM_MALLOC_CONF` in the environment overrides it). Loads also run on a
//! blocking thread and the data plane keeps its own copies of what it
//! applies (`crate::dataplane`), so nothing long-lived points into the
//! parser's pages. C libraries (librdkafka) keep glibc's allocator;
//! [`release_free_memory`] trims it after each load.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it initialises (see the module doc).
// A symbol jemalloc looks up by name: exporting it is the documented way to
// configure the allocator at build time.
#[allow(unsafe_code)]
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Return freed memory to the kernel now rather than over the next
/// second: jemalloc's dirty pages of every arena, and the free pages of the
/// C allocator (used by C libraries). Called after each configuration load.
// The engine's unsafe calls: foreign functions taking a constant name or
// nothing.
#[allow(unsafe_code)]
pub fn release_free_memory() {
    // "arena.<MALLCTL_ARENAS_ALL>.purge": every arena's unused dirty pages.
    const PURGE_ALL: &[u8] = b"arena.4096.purge\0";
    // SAFETY: a NUL-terminated control name, and no value read or written,
    // as this control requires.
    let failed = unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if failed != 0 {
        tracing::debug!(error = failed, "jemalloc purge refused");
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists; it
        // is thread-safe and has no preconditions.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn purging_is_accepted() {
        // Allocate and free something, then purge: no error, no crash.
        drop(vec![0u8; 1 << 20]);
        super::release_free_memory();
    }

    #[test]
    fn the_options_are_one_c_string() {
        let conf = super::MALLOC_CONF;
        assert_eq!(conf.last(), Some(&0));
        assert!(!conf[..conf.len() - 1].contains(&0));
    }
}
