//! Property tests of slides, random-fit placement and layouts.
//!
//! Properties:
//! - a slide is non-zero, aligned, keeps the region inside its window, and its entropy is
//!   `log2` of the reference count of positions;
//! - a random-fit placement is aligned, inside one gap, and chosen among exactly the positions
//!   a reference count finds;
//! - a layout (any supported configuration, reserved ranges, personality) has every region
//!   inside its window and half, aligned, disjoint from the others and from every reserved
//!   range, and at or above the policy floors; a layout that fails to build fails with a
//!   documented reason (too little room, or below the floors).

// A host test: std is the natural choice.
#![allow(clippy::std_instead_of_core)]

use machvm_addr::{VaWidth, VirtAddr};
use machvm_aslr::layout::SUPPORTED;
use machvm_aslr::{
    AslrError, AslrRng, EntropyBits, FitRequest, LayoutBuilder, LayoutConfig, Personality, Policy,
    RegionKind, SlideRequest, VaRange,
};
use proptest::prelude::*;

fn cases() -> ProptestConfig {
    ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 256 })
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn slides_are_nonzero_aligned_and_inside(
        start in 0u64..(1 << 47),
        len in 1u64..(1 << 40),
        size in 1u64..(1 << 32),
        shift in 0u32..22,
        seed in any::<[u8; 32]>(),
    ) {
        let align = 1u64 << shift;
        let window = VaRange::new(VirtAddr::new(start), len).unwrap();
        // Reference count in u128: aligned bases b >= start with b + size <= start + len.
        let lo = u128::from(start).div_ceil(u128::from(align)) * u128::from(align);
        let end = u128::from(start) + u128::from(len);
        let all = if lo + u128::from(size) <= end {
            (end - u128::from(size) - lo) / u128::from(align) + 1
        } else {
            0
        };
        match SlideRequest::new(window, size, align) {
            Ok(req) => {
                prop_assert_eq!(u128::from(req.positions()), all - 1);
                let s = req.slide(&mut AslrRng::from_seed(seed)).unwrap();
                prop_assert!(s.offset() > 0);
                prop_assert_eq!(s.offset() % align, 0);
                prop_assert_eq!(s.base().as_u64() % align, 0);
                prop_assert!(window.contains_range(s.range()));
                prop_assert_eq!(s.bits(), EntropyBits::from_positions(all as u64 - 1));
            }
            Err(AslrError::NoRoom { .. }) => prop_assert!(all < 2),
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
        }
    }

    #[test]
    fn random_fit_places_inside_a_gap_among_all_positions(
        layout in prop::collection::vec((0u64..(1 << 24), 1u64..(1 << 24)), 0..40),
        size in 1u64..(1 << 22),
        shift in 0u32..16,
        seed in any::<[u8; 32]>(),
    ) {
        let align = 1u64 << shift;
        let mut gaps = Vec::new();
        let mut cursor = 0x1000u64;
        for (skip, len) in layout {
            let start = cursor + skip;
            gaps.push(VaRange::new(VirtAddr::new(start), len).unwrap());
            cursor = start + len;
        }
        let mut want = 0u64;
        for g in &gaps {
            let s = g.start().as_u64();
            let lo = s.div_ceil(align) * align;
            if lo + size <= s + g.len() {
                want += (s + g.len() - size - lo) / align + 1;
            }
        }
        let req = FitRequest::new(size, align).unwrap();
        match req.place(gaps.iter().copied(), &mut AslrRng::from_seed(seed)) {
            Ok(p) => {
                prop_assert_eq!(p.positions(), want);
                prop_assert_eq!(p.base().as_u64() % align, 0);
                prop_assert!(gaps.iter().any(|g| g.contains_range(p.range())));
            }
            Err(AslrError::NoFit { .. }) => prop_assert_eq!(want, 0),
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
        }
    }

    #[test]
    fn layouts_never_overlap_and_meet_their_floors(
        config in 0..SUPPORTED.len(),
        reserved in prop::collection::vec((any::<bool>(), any::<u64>(), 1u64..(1 << 40)), 0..8),
        no_randomize in any::<bool>(),
        kaslr in any::<bool>(),
        exe_pages in 1u64..(1 << 16),
        seed in any::<[u8; 32]>(),
    ) {
        let (arch, va, page) = SUPPORTED[config];
        let half = va.half_size();
        let c = LayoutConfig::new(arch, va, page)
            .unwrap()
            .with_size(RegionKind::Executable, exe_pages * page.bytes())
            .unwrap();
        let mut b = LayoutBuilder::new(c)
            .kaslr(kaslr)
            .personality(if no_randomize { Personality::NoRandomize } else { Personality::Randomize });
        let mut res = Vec::new();
        for (upper, at, len) in reserved {
            let start = if upper { half.wrapping_neg() + at % half } else { at % half };
            let len = len.min(half - at % half);
            let r = VaRange::new(VirtAddr::new_truncate(start, VaWidth::WIDEST), len).unwrap();
            b = b.reserve(r).unwrap();
            res.push(r);
        }
        let policy = Policy::default_for(&c);
        let layout = match b.build(&mut AslrRng::from_seed(seed)) {
            Ok(l) => l,
            Err(AslrError::RegionBlocked { .. } | AslrError::BelowPolicy { .. }) => {
                prop_assert!(!res.is_empty(), "default windows always fit");
                return Ok(());
            }
            Err(e) => return Err(TestCaseError::fail(format!("unexpected {e:?}"))),
        };
        let regions = layout.regions();
        for (i, r) in regions.iter().enumerate() {
            prop_assert!(r.window().contains_range(r.range()));
            prop_assert_eq!(r.anchor().as_u64() % r.align(), 0);
            if r.kind().is_kernel() {
                prop_assert!(r.range().start().as_u64() >= half.wrapping_neg());
            } else {
                prop_assert!(r.range().last().as_u64() < half);
            }
            for x in &res {
                prop_assert!(!r.range().overlaps(*x), "{:?} overlaps {:?}", r, x);
            }
            for o in &regions[i + 1..] {
                prop_assert!(!r.range().overlaps(o.range()));
            }
            if r.is_randomized() {
                prop_assert!(r.slot() > 0);
                if let Some(floor) = policy.floor(r.kind()) {
                    prop_assert!(r.bits() >= EntropyBits::whole(floor));
                }
            } else {
                prop_assert_eq!(r.bits(), EntropyBits::ZERO);
            }
        }
        prop_assert_eq!(layout.check(&policy), Ok(()));
    }
}
