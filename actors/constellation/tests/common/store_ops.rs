//! The reference-model proptest's operations, shared by the store tests
//! (`#[path = "common/store_ops.rs"] mod store_ops;`).

use omega_constellation::store::suite::{Op, MODEL_DEVICES, MODEL_REGIONS};
use proptest::prelude::*;

/// Random store operations on a few devices, regions and items, so that
/// they collide often.
pub fn op() -> impl Strategy<Value = Op> {
    let dev = 0..MODEL_DEVICES;
    let reg = 0..MODEL_REGIONS;
    prop_oneof![
        4 => (
            dev.clone(),
            reg.clone(),
            0..6u64,
            prop::bool::weighted(0.2),
            prop::collection::vec((0..6u8, 0..20u64, 1..5u32), 0..4),
            prop::collection::vec(0..6u8, 0..3),
        )
            .prop_map(|(device, region, version, reset, upserts, removals)| Op::Sync {
                device,
                region,
                version,
                reset,
                upserts,
                removals,
            }),
        1 => dev.prop_map(Op::Forget),
        2 => (
            reg,
            0..8u64,
            prop::collection::btree_map(0..8u8, 0..4u64, 0..4),
            prop::collection::vec(0..5u8, 0..3),
        )
            .prop_map(|(region, version, patterns, trends)| Op::Publish {
                region,
                version,
                patterns: patterns.into_iter().collect(),
                trends,
            }),
        2 => prop::collection::vec((0..6u8, 0..4u64), 0..4).prop_map(Op::UpsertCatalog),
        1 => prop::collection::vec(0..6u8, 0..3).prop_map(Op::RemoveCatalog),
    ]
}
