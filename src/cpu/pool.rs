//! The rayon pool the CPU path runs on, and what happens to it across
//! `fork()`.
//!
//! A forked child has one thread, the one that called `fork`: the worker
//! threads of a pool the parent started are not there, so a parallel call
//! would wait for them forever. PyTorch's DataLoader forks its workers after
//! the parent has quantized, so this is the common case, not a corner.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rayon::ThreadPool;

use crate::error::{Error, Result};

/// The process that first ran lowbit on rayon's global pool: only in that
/// process are the global pool's workers known to be alive (0 until then).
static GLOBAL_POOL_PID: AtomicU32 = AtomicU32::new(0);

/// The pool of a forked process, and which process built it: a grandchild
/// sees a pid that is not its own and builds its own.
static FORKED_POOL: Mutex<Option<(u32, Arc<ThreadPool>)>> = Mutex::new(None);

/// Runs `f`, whose parallel iterators then run on a pool whose threads
/// exist in this process: the caller's, when it calls from inside a rayon
/// pool; rayon's global pool in the process that started it; a pool of its
/// own in a process forked after that.
pub(crate) fn run<R: Send>(f: impl FnOnce() -> R + Send) -> Result<R> {
    // A worker thread runs in this process, so its pool does too (the
    // caller chose it, e.g. to set the thread count).
    if rayon::current_thread_index().is_some() {
        return Ok(f());
    }
    let pid = std::process::id();
    let owner = match GLOBAL_POOL_PID.compare_exchange(0, pid, Ordering::AcqRel, Ordering::Acquire)
    {
        Ok(_) => pid,
        Err(owner) => owner,
    };
    if owner == pid {
        return Ok(f());
    }
    Ok(forked_pool(pid)?.install(f))
}

/// This forked process's pool, built on its first call.
fn forked_pool(pid: u32) -> Result<Arc<ThreadPool>> {
    let mut slot = FORKED_POOL.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((owner, pool)) = slot.as_ref()
        && *owner == pid
    {
        return Ok(pool.clone());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("lowbit-{i}"))
        .build()
        .map_err(|e| Error::ThreadPool(e.to_string()))?;
    let pool = Arc::new(pool);
    // A pool inherited from the process that forked this one has no
    // threads here: dropping it would signal threads that do not exist.
    std::mem::forget(slot.replace((pid, pool.clone())));
    Ok(pool)
}
