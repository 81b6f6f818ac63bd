//! Layout constraints and random-fit requests for `machvm-aslr`, checked for the invariants
//! every result must hold: regions inside their windows, aligned, disjoint from each other and
//! from the reserved ranges, entropy equal to `log2(positions)` and at or above the policy
//! floors; random-fit placements inside a gap, aligned, counted like a reference count. Any
//! error must be one of the documented ones for the input; nothing may panic.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use machvm_addr::VirtAddr;
use machvm_aslr::layout::SUPPORTED;
use machvm_aslr::{
    AslrError, AslrRng, EntropyBits, FitRequest, LayoutBuilder, LayoutConfig, Personality, Policy,
    RegionKind, VaRange,
};

/// A size or design-bits override for one region.
#[derive(Arbitrary, Debug)]
enum Tweak {
    /// `with_size(kind % 7, pages * page)`.
    Size { kind: u8, pages: u32 },
    /// `with_bits(kind % 7, bits)`.
    Bits { kind: u8, bits: u8 },
    /// `with_threads(count, stack_pages * page, guard_pages * page)`.
    Threads {
        count: u8,
        stack_pages: u8,
        guard_pages: u8,
    },
    /// `with_guard_gap(pages * page)`.
    Guard { pages: u32 },
}

/// A reserved range: `start` is scaled into a half, `len` in pages.
#[derive(Arbitrary, Debug)]
struct Reserve {
    upper: bool,
    start: u64,
    pages: u32,
}

/// One free gap for random fit: the distance from the previous gap and the length, in bytes.
#[derive(Arbitrary, Debug)]
struct Gap {
    skip: u32,
    len: u32,
}

#[derive(Arbitrary, Debug)]
struct Input {
    config: u8,
    tweaks: Vec<Tweak>,
    reserved: Vec<Reserve>,
    no_randomize: bool,
    kaslr_off: bool,
    strict: bool,
    seed: [u8; 32],
    gaps: Vec<Gap>,
    fit_size: u32,
    fit_align_shift: u8,
}

fn check_layout(input: &Input, rng: &mut AslrRng) {
    let (arch, va, page) = SUPPORTED[usize::from(input.config) % SUPPORTED.len()];
    let mut config = LayoutConfig::new(arch, va, page).expect("supported");
    let p = page.bytes();
    for t in &input.tweaks {
        let next = match *t {
            Tweak::Size { kind, pages } => {
                config.with_size(RegionKind::ALL[usize::from(kind) % 7], u64::from(pages) * p)
            }
            Tweak::Bits { kind, bits } => {
                config.with_bits(RegionKind::ALL[usize::from(kind) % 7], bits)
            }
            Tweak::Threads {
                count,
                stack_pages,
                guard_pages,
            } => config.with_threads(
                u32::from(count),
                u64::from(stack_pages) * p,
                u64::from(guard_pages) * p,
            ),
            Tweak::Guard { pages } => config.with_guard_gap(u64::from(pages) * p),
        };
        match next {
            Ok(c) => config = c,
            Err(
                AslrError::ZeroSize
                | AslrError::UnalignedSize { .. }
                | AslrError::BadRegionSetting { .. },
            ) => {}
            Err(e) => panic!("unexpected config error {e:?}"),
        }
    }
    let half = va.half_size();
    let mut builder = LayoutBuilder::new(config);
    let mut reserved = Vec::new();
    for r in input.reserved.iter().take(20) {
        let offset = r.start % half;
        let start = if r.upper {
            half.wrapping_neg() + offset
        } else {
            offset
        };
        let len = (u64::from(r.pages) + 1) * p;
        let Ok(range) = VaRange::new(VirtAddr::new_truncate(start, va), len) else {
            continue;
        };
        match builder.reserve(range) {
            Ok(b) => {
                builder = b;
                reserved.push(range);
            }
            Err(AslrError::TooManyReserved { .. }) => break,
            Err(e) => panic!("unexpected reserve error {e:?}"),
        }
    }
    if input.no_randomize {
        builder = builder.personality(Personality::NoRandomize);
    }
    builder = builder.kaslr(!input.kaslr_off);
    let policy = if input.strict {
        Policy::default_for(&config)
    } else {
        Policy::none()
    };
    builder = builder.policy(policy);
    let layout = match builder.build(rng) {
        Ok(l) => l,
        Err(
            AslrError::LayoutDoesNotFit { .. }
            | AslrError::RegionBlocked { .. }
            | AslrError::BelowPolicy { .. },
        ) => return,
        Err(e) => panic!("unexpected build error {e:?}"),
    };
    let regions = layout.regions();
    for (i, r) in regions.iter().enumerate() {
        assert!(
            r.window().contains_range(r.range()),
            "{r:?} outside its window"
        );
        assert_eq!(r.anchor().as_u64() % r.align(), 0, "{r:?} unaligned");
        assert_eq!(r.bits(), EntropyBits::from_positions(r.positions()));
        assert!(r.slot() <= r.positions() || !r.is_randomized() || !reserved.is_empty());
        if r.is_randomized() {
            assert!(r.slot() >= 1, "zero slide while randomised: {r:?}");
            if let Some(floor) = policy.floor(r.kind()) {
                assert!(r.positions() >= 1 << floor, "{r:?} below {floor}");
            }
        } else {
            assert_eq!(r.positions(), 1);
        }
        for res in &reserved {
            assert!(!r.range().overlaps(*res), "{r:?} overlaps reserved {res:?}");
        }
        for other in &regions[i + 1..] {
            assert!(
                !r.range().overlaps(other.range()),
                "{r:?} overlaps {other:?}"
            );
        }
        let in_half = if r.kind().is_kernel() {
            r.range().start().as_u64() >= half.wrapping_neg()
        } else {
            r.range().last().as_u64() < half
        };
        assert!(in_half, "{r:?} outside its half");
    }
    let top = layout.stack_top().as_u64();
    assert_eq!(top % 16, 0);
    let stack = layout.region(RegionKind::MainStack).range();
    assert!(top > stack.start().as_u64() && top <= stack.last().as_u64() + 1);
    let (count, _, _) = layout.config().threads();
    let area = layout.region(RegionKind::ThreadStacks).range();
    for i in [0, count - 1] {
        let s = layout.thread_stack(i).expect("index below count");
        assert!(area.contains_range(s));
    }
    assert!(layout.thread_stack(count).is_none());
    let _ = layout.to_string();
}

fn check_fit(input: &Input, rng: &mut AslrRng) {
    let mut gaps = Vec::new();
    let mut cursor: u64 = 0x1000;
    for g in input.gaps.iter().take(64) {
        let start = cursor + u64::from(g.skip);
        let len = u64::from(g.len) + 1;
        let Ok(gap) = VaRange::new(VirtAddr::new(start), len) else {
            break;
        };
        gaps.push(gap);
        cursor = start + len;
    }
    let align = 1u64 << (input.fit_align_shift % 24);
    let size = u64::from(input.fit_size);
    let req = match FitRequest::new(size, align) {
        Ok(r) => r,
        Err(AslrError::ZeroSize) => return,
        Err(e) => panic!("unexpected request error {e:?}"),
    };
    // Reference count in u128.
    let mut want: u128 = 0;
    for g in &gaps {
        let s = u128::from(g.start().as_u64());
        let e = s + u128::from(g.len());
        let lo = s.div_ceil(u128::from(align)) * u128::from(align);
        if lo + u128::from(size) <= e {
            want += (e - u128::from(size) - lo) / u128::from(align) + 1;
        }
    }
    assert_eq!(req.positions(gaps.iter().copied()), Ok(want as u64));
    match req.place(gaps.iter().copied(), rng) {
        Ok(p) => {
            assert_eq!(u128::from(p.positions()), want);
            assert_eq!(p.base().as_u64() % align, 0);
            assert!(gaps.iter().any(|g| g.contains_range(p.range())));
        }
        Err(AslrError::NoFit { .. }) => assert_eq!(want, 0),
        Err(e) => panic!("unexpected placement error {e:?}"),
    }
}

fuzz_target!(|input: Input| {
    let mut rng = AslrRng::from_seed(input.seed);
    check_layout(&input, &mut rng);
    check_fit(&input, &mut rng);
});
