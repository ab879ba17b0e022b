//! A tiny bounded LRU map for the recommender's mood vectors.
//!
//! At most `cap` entries; inserting past it evicts the least recently used
//! (`get` refreshes). O(cap) per operation, which is fine for the few hundred
//! entries it is meant for (a linear scan of short keys beats hashing plus
//! list bookkeeping at this size). `cap == 0` stores nothing.

#[derive(Debug)]
pub(crate) struct Lru<K, V> {
    cap: usize,
    tick: u64,
    entries: Vec<(K, V, u64)>,
}

impl<K: PartialEq, V: Clone> Lru<K, V> {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            tick: 0,
            entries: Vec::with_capacity(cap.min(1024)),
        }
    }

    pub(crate) fn get(&mut self, k: &K) -> Option<V> {
        self.tick += 1;
        let t = self.tick;
        self.entries.iter_mut().find(|e| &e.0 == k).map(|e| {
            e.2 = t;
            e.1.clone()
        })
    }

    pub(crate) fn put(&mut self, k: K, v: V) {
        if self.cap == 0 {
            return;
        }
        self.tick += 1;
        if let Some(e) = self.entries.iter_mut().find(|e| e.0 == k) {
            e.1 = v;
            e.2 = self.tick;
            return;
        }
        if self.entries.len() >= self.cap {
            if let Some(oldest) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.2)
                .map(|(i, _)| i)
            {
                self.entries.swap_remove(oldest);
            }
        }
        self.entries.push((k, v, self.tick));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Lru;

    #[test]
    fn evicts_least_recently_used() {
        let mut l = Lru::new(2);
        l.put("a", 1);
        l.put("b", 2);
        assert_eq!(l.get(&"a"), Some(1));
        l.put("c", 3);
        assert_eq!(l.get(&"b"), None);
        assert_eq!(l.get(&"a"), Some(1));
        assert_eq!(l.get(&"c"), Some(3));
        assert_eq!(l.len(), 2);
        let mut z: Lru<&str, i32> = Lru::new(0);
        z.put("a", 1);
        assert_eq!(z.get(&"a"), None);
    }
}
