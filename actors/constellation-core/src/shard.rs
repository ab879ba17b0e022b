//! Which node serves which device.
//!
//! Devices map to a fixed number of *virtual shards* by a stable hash of the
//! device id ([`shard_of`]: FNV-1a 64 with a splitmix64 finalizer, fixed
//! forever: it is not std's per-process randomized hasher, so every node and
//! every run agree). Each shard is owned by exactly one live node, chosen by
//! rendezvous (highest-random-weight) hashing over the membership
//! ([`ShardMap::owner`]): the node whose `weight(node, shard)` is highest wins,
//! ties broken by the smaller node id.
//!
//! Invariants (tested): with a non-empty membership every shard has exactly
//! one owner; when a node leaves, only the shards it owned move; when a node
//! joins, only shards that the new node now owns move. The shard count is
//! fixed for the life of a cluster (changing it remaps most devices).
//!
//! Limits: [`MAX_SHARDS`] shards, [`MAX_MEMBERS`] nodes (owner lookup is
//! O(members), a full assignment O(shards × members)); constructors refuse
//! more with [`ShardError`].

use std::collections::BTreeSet;

use omega_protocol::DeviceId;

/// Default number of virtual shards.
pub const DEFAULT_SHARDS: u32 = 256;
/// Most virtual shards a map may have.
pub const MAX_SHARDS: u32 = 65_536;
/// Most nodes a membership may have.
pub const MAX_MEMBERS: usize = 1024;
/// Longest node id, in bytes.
pub const MAX_NODE_ID_LEN: usize = 128;

/// Why a shard map or node id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// The shard count is 0 or above [`MAX_SHARDS`].
    #[error("shard count {0} is outside 1..={MAX_SHARDS}")]
    BadShardCount(u32),
    /// More than [`MAX_MEMBERS`] nodes.
    #[error("{0} members exceed the limit of {MAX_MEMBERS}")]
    TooManyMembers(usize),
    /// A node id is empty, longer than [`MAX_NODE_ID_LEN`] or has control
    /// characters.
    #[error("invalid node id {0:?}")]
    BadNodeId(String),
}

/// A node's stable identity in the membership (e.g. its certificate name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(String);

impl NodeId {
    /// Validates a node id: 1..=[`MAX_NODE_ID_LEN`] bytes, no control characters.
    pub fn new(id: impl Into<String>) -> Result<Self, ShardError> {
        let id = id.into();
        if id.is_empty() || id.len() > MAX_NODE_ID_LEN || id.chars().any(char::is_control) {
            return Err(ShardError::BadNodeId(id.chars().take(80).collect()));
        }
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A virtual shard number, below the map's shard count.
pub type ShardId = u32;

/// FNV-1a 64 followed by the splitmix64 finalizer: stable across builds,
/// platforms and processes.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    stable_hash_parts(&[bytes])
}

/// [`stable_hash`] of the concatenation of `parts`, without building it.
pub fn stable_hash_parts(parts: &[&[u8]]) -> u64 {
    let mut h = omega_protocol::hash::Fnv1a::new();
    for p in parts {
        h.write(p);
    }
    mix(h.finish())
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The virtual shard of a device among `shards` (which must be non-zero;
/// 0 is treated as 1).
pub fn shard_of(device: &DeviceId, shards: u32) -> ShardId {
    (stable_hash(device.as_str().as_bytes()) % u64::from(shards.max(1))) as ShardId
}

/// Rendezvous weight of `node` for `shard`.
fn weight(node_hash: u64, shard: ShardId) -> u64 {
    mix(node_hash ^ mix(u64::from(shard).wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

/// The shard count and the live membership; answers who owns what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    shards: u32,
    /// Members with their precomputed hashes, in id order.
    members: Vec<(NodeId, u64)>,
}

impl ShardMap {
    /// A map of `shards` virtual shards over `members` (duplicates collapse).
    pub fn new(shards: u32, members: impl IntoIterator<Item = NodeId>) -> Result<Self, ShardError> {
        if shards == 0 || shards > MAX_SHARDS {
            return Err(ShardError::BadShardCount(shards));
        }
        let set: BTreeSet<NodeId> = members.into_iter().collect();
        if set.len() > MAX_MEMBERS {
            return Err(ShardError::TooManyMembers(set.len()));
        }
        let members = set
            .into_iter()
            .map(|n| {
                let h = stable_hash(n.as_str().as_bytes());
                (n, h)
            })
            .collect();
        Ok(Self { shards, members })
    }

    /// The number of virtual shards.
    pub fn shard_count(&self) -> u32 {
        self.shards
    }

    /// The live members, in id order.
    pub fn members(&self) -> impl Iterator<Item = &NodeId> {
        self.members.iter().map(|(n, _)| n)
    }

    /// The same shard count over a new membership.
    pub fn with_members(
        &self,
        members: impl IntoIterator<Item = NodeId>,
    ) -> Result<Self, ShardError> {
        Self::new(self.shards, members)
    }

    /// The shard of a device.
    pub fn shard_of(&self, device: &DeviceId) -> ShardId {
        shard_of(device, self.shards)
    }

    /// The owner of a shard; `None` when the membership is empty.
    pub fn owner(&self, shard: ShardId) -> Option<&NodeId> {
        self.members
            .iter()
            .max_by(|(a, ha), (b, hb)| {
                weight(*ha, shard)
                    .cmp(&weight(*hb, shard))
                    // Equal weights: the smaller id wins (so it compares greater).
                    .then_with(|| b.cmp(a))
            })
            .map(|(n, _)| n)
    }

    /// The node that serves a device.
    pub fn owner_of(&self, device: &DeviceId) -> Option<&NodeId> {
        self.owner(self.shard_of(device))
    }

    /// The owner of every shard, indexed by shard.
    pub fn assignments(&self) -> Vec<Option<&NodeId>> {
        (0..self.shards).map(|s| self.owner(s)).collect()
    }

    /// The shards `node` owns.
    pub fn shards_of<'a>(&'a self, node: &'a NodeId) -> impl Iterator<Item = ShardId> + 'a {
        (0..self.shards).filter(move |s| self.owner(*s) == Some(node))
    }

    /// Shards whose owner differs between `self` and `next` (same shard count
    /// assumed; shards beyond the smaller count are all reported).
    pub fn moved_shards(&self, next: &ShardMap) -> Vec<ShardId> {
        (0..self.shards.max(next.shards))
            .filter(|s| *s >= self.shards.min(next.shards) || self.owner(*s) != next.owner(*s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: usize) -> NodeId {
        NodeId::new(format!("node-{i}")).expect("valid")
    }

    fn map(n: usize) -> ShardMap {
        ShardMap::new(DEFAULT_SHARDS, (0..n).map(node)).expect("valid map")
    }

    #[test]
    fn the_hash_is_stable() {
        // Pinned values: changing the hash remaps every device in production.
        assert_eq!(stable_hash(b""), mix(0xcbf2_9ce4_8422_2325));
        assert_eq!(
            stable_hash_parts(&[b"tv-1", &[0], &7u64.to_le_bytes()]),
            stable_hash(b"tv-1\x00\x07\x00\x00\x00\x00\x00\x00\x00")
        );
        let d = DeviceId::new("tv-00001").expect("valid");
        let s = shard_of(&d, DEFAULT_SHARDS);
        assert_eq!(s, shard_of(&d, DEFAULT_SHARDS));
        assert_eq!(s, (stable_hash(b"tv-00001") % 256) as u32);
        assert_eq!(stable_hash(b"tv-00001"), 0xf584_9412_f6da_064d);
        assert_eq!(s, 77);
    }

    #[test]
    fn devices_spread_over_shards() {
        let mut counts = vec![0u32; DEFAULT_SHARDS as usize];
        for i in 0..25_600 {
            let d = DeviceId::new(format!("tv-{i}")).expect("valid");
            counts[shard_of(&d, DEFAULT_SHARDS) as usize] += 1;
        }
        // Expect 100 per shard; a stable hash keeps all within a loose band.
        assert!(counts.iter().all(|c| (50..=160).contains(c)), "{counts:?}");
    }

    #[test]
    fn every_shard_has_one_owner_and_load_is_balanced() {
        let m = map(4);
        let owners = m.assignments();
        assert!(owners.iter().all(Option::is_some));
        for i in 0..4 {
            let n = m.shards_of(&node(i)).count();
            assert!((32..=100).contains(&n), "node {i} owns {n} shards");
        }
        assert!(ShardMap::new(DEFAULT_SHARDS, [])
            .expect("valid")
            .owner(0)
            .is_none());
    }

    #[test]
    fn losing_a_node_moves_only_its_shards() {
        let before = map(5);
        let lost = node(2);
        let after = before
            .with_members(
                before
                    .members()
                    .filter(|n| **n != lost)
                    .cloned()
                    .collect::<Vec<_>>(),
            )
            .expect("valid");
        let moved = before.moved_shards(&after);
        let owned: Vec<ShardId> = before.shards_of(&lost).collect();
        assert_eq!(moved, owned);
        assert!(!moved.is_empty());
        for s in moved {
            assert_ne!(after.owner(s), Some(&lost));
        }
    }

    #[test]
    fn adding_a_node_moves_only_shards_to_it() {
        let before = map(4);
        let after = map(5);
        let moved = before.moved_shards(&after);
        assert!(!moved.is_empty());
        for s in &moved {
            assert_eq!(after.owner(*s), Some(&node(4)), "shard {s}");
        }
        assert_eq!(moved, after.shards_of(&node(4)).collect::<Vec<_>>());
    }

    #[test]
    fn membership_order_does_not_matter() {
        let a = ShardMap::new(64, [node(3), node(1), node(2)]).expect("valid");
        let b = ShardMap::new(64, [node(2), node(3), node(1), node(1)]).expect("valid");
        assert_eq!(a.assignments(), b.assignments());
    }

    #[test]
    fn limits_are_enforced() {
        assert_eq!(ShardMap::new(0, []), Err(ShardError::BadShardCount(0)));
        assert!(ShardMap::new(MAX_SHARDS + 1, []).is_err());
        assert!(ShardMap::new(8, (0..=MAX_MEMBERS).map(node)).is_err());
        assert!(NodeId::new("").is_err());
        assert!(NodeId::new("a\nb").is_err());
        assert!(NodeId::new("x".repeat(MAX_NODE_ID_LEN + 1)).is_err());
    }
}
