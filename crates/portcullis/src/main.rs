//! The `portcullis` binary. Everything happens in [`portcullis::run`]; the binary chooses the allocator.

/// jemalloc on Linux, with its background purging on: memory freed when connections and SSE streams
/// close goes back to the system within seconds (glibc's allocator keeps it in its per-thread arenas for
/// good).
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    #[cfg(target_os = "linux")]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!("warning: the allocator's background purging could not be started: {e}");
    }
    portcullis::run()
}
