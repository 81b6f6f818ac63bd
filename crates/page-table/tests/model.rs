//! Property tests: random operation sequences on a real table over `SimPhysMemory`, checked
//! against a plain interval-map model after every operation (the model and harness are
//! `machvm_page_table::testing`, shared with the `page_table_ops` fuzz target).
//!
//! Properties:
//! - the table's mappings (merged into runs, with attributes and accessed/dirty state) equal
//!   the model after every operation, including operations that fail;
//! - a failed operation (conflict, injected allocation failure) changes nothing and leaks no
//!   frame;
//! - `translate` agrees with the model at random addresses, mapped or not;
//! - `unmap` of a page or block the table reports removes exactly that leaf, and
//!   `unmap_range_with` and `harvest` report exactly the leaves the model predicts;
//! - after unmapping everything and finishing the flush, only the root frame is allocated, and
//!   after tearing the table down, no frame is.
//!
//! Sizes are engine levels resolved per format (`Format::leaf_size`), so the same strategy
//! drives the x86_64 formats (4K/2M/1G) and the aarch64 ones (4K/2M/1G, 16K/32M).

// Host test: std is the natural choice.
#![allow(clippy::std_instead_of_alloc)]

use machvm_addr::{PhysAddr, PhysMapper, SimPhysMemory};
use machvm_page_table::testing::{Op, WINDOW, run_ops};
use machvm_page_table::{
    A64Granule4K39, A64Granule4K48, A64Granule16K47, A64Granule16K48, A64Granule64K42,
    A64Granule64K48, Region, X86Pml4, X86Pml5,
};
use proptest::prelude::*;

const G1: u64 = 1 << 30;

/// A unit level, weighted towards small pages: granule, first block level, second.
fn unit() -> impl Strategy<Value = u8> {
    prop_oneof![4 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (unit(), 0..600u64, 1..40u64, 0..8u64, 0..4u8, 0..3u8, any::<bool>()).prop_map(
            |(unit, idx, count, pa_idx, attrs, largest, contiguous)| Op::MapRange { unit, idx, count, pa_idx, attrs, largest, contiguous }),
        2 => (0..3u8, 0..700u64, 0..8u64, 0..4u8).prop_map(|(size, idx, pa_idx, attrs)| Op::Map { size, idx, pa_idx, attrs }),
        3 => (unit(), 0..600u64, 1..40u64, any::<bool>()).prop_map(|(unit, idx, count, visit)| Op::UnmapRange { unit, idx, count, visit }),
        1 => (unit(), 0..600u64).prop_map(|(unit, idx)| Op::UnmapLeaf { unit, idx }),
        2 => (unit(), 0..600u64, 1..40u64, 0..4u8).prop_map(|(unit, idx, count, attrs)| Op::Protect { unit, idx, count, attrs }),
        1 => (unit(), 0..600u64, 1..40u64, 0..4u8).prop_map(|(unit, idx, count, clear)| Op::Harvest { unit, idx, count, clear }),
        2 => (0..WINDOW).prop_map(|offset| Op::Translate { offset: offset & !7 }),
        1 => (0..3u64).prop_map(|after| Op::FailNext { after }),
        2 => (unit(), 0..700u64, 1..40u64, 0..8u64, 0..4u8, 0..6u8).prop_map(
            |(size, idx, count, pa_idx, attrs, mode)| Op::Cursor { size, idx, count, pa_idx, attrs, mode }),
    ]
}

/// 64 cases unless `PROPTEST_CASES` says otherwise (miri runs set it low).
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 64;
    }
    config
}

proptest! {
    #![proptest_config(config())]

    #[test]
    #[cfg_attr(miri, ignore = "op sequences over GiB-sized ranges are too slow under miri; basic.rs covers the unsafe paths")]
    fn x86_pml4_lower_half_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        run_ops::<X86Pml4>(Region::Both, 0x40_0000_0000, &ops);
    }

    #[test]
    #[cfg_attr(miri, ignore = "op sequences over GiB-sized ranges are too slow under miri; basic.rs covers the unsafe paths")]
    fn x86_pml4_upper_half_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        run_ops::<X86Pml4>(Region::Both, 0xffff_8000_0000_0000, &ops);
    }

    #[test]
    #[cfg_attr(miri, ignore = "op sequences over GiB-sized ranges are too slow under miri; basic.rs covers the unsafe paths")]
    fn x86_pml5_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        run_ops::<X86Pml5>(Region::Both, 0x00ff_0000_0000_0000 - 8 * G1, &ops);
    }

    #[test]
    #[cfg_attr(miri, ignore = "op sequences over GiB-sized ranges are too slow under miri; basic.rs covers the unsafe paths")]
    fn a64_4k48_lower_half_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        run_ops::<A64Granule4K48>(Region::Lower, 0x40_0000_0000, &ops);
    }

    #[test]
    #[cfg_attr(miri, ignore = "op sequences over GiB-sized ranges are too slow under miri; basic.rs covers the unsafe paths")]
    fn a64_4k48_upper_half_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        run_ops::<A64Granule4K48>(Region::Upper, 0xffff_8000_0000_0000, &ops);
    }

    #[test]
    #[cfg_attr(miri, ignore = "op sequences over GiB-sized ranges are too slow under miri; basic.rs covers the unsafe paths")]
    fn a64_16k47_lower_half_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        run_ops::<A64Granule16K47>(Region::Lower, 0x40_0000_0000, &ops);
    }

    #[test]
    #[cfg_attr(miri, ignore = "op sequences over GiB-sized ranges are too slow under miri; basic.rs covers the unsafe paths")]
    fn a64_4k39_top_of_lower_half_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        // The last 4 GiB of the 39-bit region: ranges that run past it must be refused.
        run_ops::<A64Granule4K39>(Region::Lower, (1 << 39) - WINDOW, &ops);
    }

    #[test]
    #[cfg_attr(miri, ignore = "op sequences over GiB-sized ranges are too slow under miri; basic.rs covers the unsafe paths")]
    fn a64_16k48_upper_half_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        run_ops::<A64Granule16K48>(Region::Upper, WINDOW.wrapping_neg(), &ops);
    }

    #[test]
    #[cfg_attr(miri, ignore = "op sequences over GiB-sized ranges are too slow under miri; basic.rs covers the unsafe paths")]
    fn a64_64k42_lower_half_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        run_ops::<A64Granule64K42>(Region::Lower, 0x100_0000_0000, &ops);
    }

    #[test]
    #[cfg_attr(miri, ignore = "op sequences over GiB-sized ranges are too slow under miri; basic.rs covers the unsafe paths")]
    fn a64_64k48_upper_half_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        run_ops::<A64Granule64K48>(Region::Upper, 0xffff_8000_0000_0000, &ops);
    }
}

#[test]
fn sim_mapper_reaches_tables() {
    let sim = SimPhysMemory::builder()
        .size_bytes(1 << 20)
        .build()
        .unwrap();
    assert!(sim.phys_to_ptr(PhysAddr::new(0), 4096).is_ok());
}
