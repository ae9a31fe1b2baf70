//! The last few results of the per-call preparations (the pieces of a
//! half-precision forward, the tables of a gradient), by what they were
//! made from: a training loop calls the same quantizers step after step,
//! and making them again cost a tenth of a pass at 2^24 elements (mostly
//! the page faults of fresh buffers).

use std::sync::{Arc, Mutex};

/// How many results each cache keeps.
const KEPT: usize = 8;

pub(crate) struct Recent<K, V> {
    /// Most recently used first.
    entries: Mutex<Vec<(K, Arc<V>)>>,
}

impl<K: PartialEq, V> Recent<K, V> {
    pub(crate) const fn new() -> Self {
        Recent {
            entries: Mutex::new(Vec::new()),
        }
    }

    /// The value kept for `key`, or `make()`'s, kept from now on. Keys that
    /// never equal themselves (a NaN parameter) are made every time.
    pub(crate) fn get(&self, key: K, make: impl FnOnce() -> V) -> Arc<V> {
        if let Some(v) = self.find(&key) {
            return v;
        }
        // Made without the lock: two threads may both make it, which
        // costs time but gives the same value.
        let v = Arc::new(make());
        let mut entries = self.lock();
        entries.insert(0, (key, Arc::clone(&v)));
        entries.truncate(KEPT);
        v
    }

    fn find(&self, key: &K) -> Option<Arc<V>> {
        let mut entries = self.lock();
        let i = entries.iter().position(|(k, _)| k == key)?;
        let entry = entries.remove(i);
        let v = Arc::clone(&entry.1);
        entries.insert(0, entry);
        Some(v)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(K, Arc<V>)>> {
        // The entries are whole values whatever a panicking thread did.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recent_and_makes_the_rest() {
        let cache = Recent::<u32, u32>::new();
        let made = std::cell::Cell::new(0);
        let get = |k| {
            *cache.get(k, || {
                made.set(made.get() + 1);
                k * 10
            })
        };
        assert_eq!(get(1), 10);
        assert_eq!(get(1), 10);
        for k in 2..=KEPT as u32 {
            assert_eq!(get(k), k * 10);
        }
        // 1 is the oldest of KEPT: still there, and now the newest.
        assert_eq!(get(1), 10);
        assert_eq!(get(100), 1000);
        // 2 was then the oldest, pushed out by 100.
        assert_eq!(get(2), 20);
        assert_eq!(made.get(), KEPT + 2);
        let nan = Recent::<f32, u32>::new();
        let mut made = 0;
        for _ in 0..2 {
            nan.get(f32::NAN, || {
                made += 1;
                0
            });
        }
        assert_eq!(made, 2);
    }
}
