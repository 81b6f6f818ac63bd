//! Unit tests of window carving, the free-gap walk, placement and policy.

use alloc::string::ToString;
use alloc::vec::Vec;

use machvm_addr::{PageSize, VaWidth};

use super::*;
use crate::AslrRng;

fn r(start: u64, len: u64) -> VaRange {
    VaRange::from_raw(start, len).unwrap()
}

fn all_configs() -> impl Iterator<Item = LayoutConfig> {
    SUPPORTED
        .iter()
        .map(|&(a, v, p)| LayoutConfig::new(a, v, p).unwrap())
}

#[test]
fn unsupported_configs_are_refused() {
    assert_eq!(
        LayoutConfig::x86_64(VaWidth::AARCH64_48),
        Err(AslrError::UnsupportedConfig {
            arch: Arch::X86_64,
            va_bits: 48,
            page: PageSize::Size4KiB
        })
    );
    assert!(LayoutConfig::aarch64(VaWidth::AARCH64_48, PageSize::Size2MiB).is_err());
    assert!(LayoutConfig::aarch64(VaWidth::AARCH64_52, PageSize::Size4KiB).is_err());
}

#[test]
fn windows_are_disjoint_in_their_halves_and_separated_by_guards() {
    for c in all_configs() {
        let w = c.windows().unwrap();
        let half = c.va().half_size();
        for kind in RegionKind::ALL {
            let win = w[kind.index()];
            if kind.is_kernel() {
                assert!(win.raw_start() >= half.wrapping_neg(), "{kind:?} {c:?}");
            } else {
                assert!(win.raw_start() >= USER_FLOOR);
                assert!(win.raw_last() < half);
            }
            assert_eq!(
                win.raw_start() % c.spec(kind).align(),
                0,
                "{kind:?} unaligned"
            );
        }
        let mut sorted: Vec<VaRange> = w.to_vec();
        sorted.sort();
        for pair in sorted.windows(2) {
            let gap = pair[1].raw_start() - pair[0].raw_last() - 1;
            assert!(gap >= c.guard_gap().min(c.page().bytes()), "{pair:?}");
        }
    }
}

#[test]
fn designed_windows_give_exactly_their_bits() {
    for c in all_configs() {
        let layout = LayoutBuilder::new(c)
            .build(&mut AslrRng::from_seed([4; 32]))
            .unwrap();
        for kind in RegionKind::ALL {
            let region = layout.region(kind);
            match c.spec(kind).design_bits() {
                Some(b) => assert_eq!(region.positions(), 1 << b, "{kind:?} {c:?}"),
                None => assert_eq!(region.positions(), 752),
            }
            assert!((1..=region.positions()).contains(&region.slot()));
        }
    }
}

#[test]
fn free_walk_skips_reserved_ranges() {
    let res = [
        r(0x0, 0x1000),
        r(0x3000, 0x1000),
        r(0x3800, 0x2000),
        r(0x9000, 0x10000),
    ];
    let gaps: Vec<VaRange> = FreeIn::new(0x1000, 0xafff, &res).collect();
    assert_eq!(gaps, [r(0x1000, 0x2000), r(0x5800, 0x3800)]);
    // A reserved range covering everything.
    assert_eq!(FreeIn::new(0x1000, 0x1fff, &[r(0, 0x4000)]).count(), 0);
    // Reserved ranges beyond the window.
    let gaps: Vec<VaRange> = FreeIn::new(0x1000, 0x1fff, &[r(0x8000, 0x10)]).collect();
    assert_eq!(gaps, [r(0x1000, 0x1000)]);
    // A reserved range ending at 2^64.
    let top = r(0xffff_ffff_ffff_0000, 0x1_0000);
    let gaps: Vec<VaRange> = FreeIn::new(0xffff_ffff_fff0_0000, u64::MAX, &[top]).collect();
    assert_eq!(gaps, [r(0xffff_ffff_fff0_0000, 0xf_0000)]);
}

#[test]
fn reserved_ranges_are_avoided_and_cost_entropy() {
    let c = LayoutConfig::x86_64(VaWidth::X86_64_4LEVEL).unwrap();
    let exe = c.windows().unwrap()[RegionKind::Executable.index()];
    // Reserve the upper half of the executable window.
    let half = r(exe.raw_start() + exe.len() / 2, exe.len() / 2);
    let b = LayoutBuilder::new(c).reserve(half).unwrap();
    let mut rng = AslrRng::from_seed([8; 32]);
    for _ in 0..if cfg!(miri) { 10 } else { 200 } {
        let l = b.build(&mut rng).unwrap();
        let e = l.region(RegionKind::Executable);
        assert!(!e.range().overlaps(half));
        assert!(e.positions() < 1 << 28 && e.positions() > 1 << 26);
    }
    // Reserve nearly all of it: below the 16-bit floor.
    let most = r(exe.raw_start(), exe.len() - (64 << 20) - (1 << 12) * 100);
    let err = LayoutBuilder::new(c)
        .reserve(most)
        .unwrap()
        .build(&mut rng)
        .unwrap_err();
    assert!(matches!(
        err,
        AslrError::BelowPolicy {
            region: RegionKind::Executable,
            floor: 16,
            ..
        }
    ));
    // All of it: blocked.
    assert_eq!(
        LayoutBuilder::new(c)
            .reserve(exe)
            .unwrap()
            .build(&mut rng)
            .unwrap_err(),
        AslrError::RegionBlocked {
            region: RegionKind::Executable
        }
    );
}

#[test]
fn reserve_capacity_is_bounded() {
    let c = LayoutConfig::x86_64(VaWidth::X86_64_4LEVEL).unwrap();
    let mut b = LayoutBuilder::new(c);
    for i in 0..MAX_RESERVED as u64 {
        b = b
            .reserve(r((MAX_RESERVED as u64 - i) << 12, 0x1000))
            .unwrap();
    }
    let starts: Vec<u64> = b.reserved().iter().map(|x| x.raw_start()).collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(
        b.reserve(r(0, 1)),
        Err(AslrError::TooManyReserved { max: MAX_RESERVED })
    );
}

#[test]
fn no_randomize_gives_zero_slides_and_zero_bits() {
    for c in all_configs() {
        let b = LayoutBuilder::new(c)
            .personality(Personality::NoRandomize)
            .kaslr(false);
        let a = b.build(&mut AslrRng::from_seed([1; 32])).unwrap();
        let z = b.build(&mut AslrRng::from_seed([2; 32])).unwrap();
        assert_eq!(a, z, "unrandomised layouts do not depend on the generator");
        for region in a.regions() {
            assert_eq!(region.slot(), 0);
            assert_eq!(region.bits(), EntropyBits::ZERO);
            assert!(!region.is_randomized());
        }
        assert_eq!(a.min_bits(), (None, None));
    }
    // User only: the kernel stays randomised.
    let c = LayoutConfig::x86_64(VaWidth::X86_64_4LEVEL).unwrap();
    let l = LayoutBuilder::new(c)
        .personality(Personality::NoRandomize)
        .build(&mut AslrRng::from_seed([1; 32]))
        .unwrap();
    assert!(l.region(RegionKind::KernelText).is_randomized());
    assert!(!l.region(RegionKind::Mmap).is_randomized());
}

#[test]
fn main_stack_top_is_16_byte_aligned_above_its_mapping() {
    let c = LayoutConfig::aarch64(VaWidth::AARCH64_48, PageSize::Size16KiB).unwrap();
    let mut rng = AslrRng::from_seed([6; 32]);
    let mut sub_page_offsets = alloc::collections::BTreeSet::new();
    // Fewer layouts under miri; the sub-page check scales with the count.
    let n = if cfg!(miri) { 30 } else { 300 };
    for _ in 0..n {
        let l = LayoutBuilder::new(c).build(&mut rng).unwrap();
        let top = l.stack_top().as_u64();
        let s = l.region(RegionKind::MainStack);
        assert_eq!(top % 16, 0);
        let map_end = s.range().raw_last() + 1;
        assert!(top <= map_end && map_end - top < 16 * 1024);
        assert_eq!(s.range().len(), (8 << 20) + c.stack_guard());
        assert!(s.window().contains_range(s.range()));
        sub_page_offsets.insert(top % (16 * 1024));
    }
    assert!(
        sub_page_offsets.len() > n * 5 / 6,
        "sub-page offset is random"
    );
}

#[test]
fn thread_stacks_tile_their_area_with_guards() {
    let c = LayoutConfig::x86_64(VaWidth::X86_64_4LEVEL)
        .unwrap()
        .with_threads(4, 0x10_0000, 0x4000)
        .unwrap();
    let l = LayoutBuilder::new(c)
        .build(&mut AslrRng::from_seed([3; 32]))
        .unwrap();
    let area = l.region(RegionKind::ThreadStacks).range();
    assert_eq!(area.len(), 4 * 0x10_4000);
    let s0 = l.thread_stack(0).unwrap();
    let s3 = l.thread_stack(3).unwrap();
    assert_eq!(s0.raw_start(), area.raw_start() + 0x4000);
    assert_eq!(s3.raw_last(), area.raw_last());
    assert_eq!(l.thread_stack(4), None);
    assert!(matches!(
        c.with_threads(0, 0x1000, 0x1000),
        Err(AslrError::BadRegionSetting { .. })
    ));
    assert!(matches!(
        c.with_threads(1, 0x1800, 0x1000),
        Err(AslrError::UnalignedSize { .. })
    ));
}

#[test]
fn oversized_settings_are_errors_not_overflows() {
    let c = LayoutConfig::aarch64(VaWidth::AARCH64_39, PageSize::Size4KiB).unwrap();
    assert_eq!(
        c.with_bits(RegionKind::Mmap, 40).unwrap().windows(),
        Err(AslrError::LayoutDoesNotFit {
            region: RegionKind::Mmap
        })
    );
    assert_eq!(
        c.with_bits(RegionKind::Mmap, 0),
        Err(AslrError::BadRegionSetting {
            region: RegionKind::Mmap
        })
    );
    assert_eq!(
        c.with_bits(RegionKind::Mmap, 57),
        Err(AslrError::BadRegionSetting {
            region: RegionKind::Mmap
        })
    );
    let huge = c.with_size(RegionKind::DirectMap, !0xfff).unwrap();
    assert_eq!(
        huge.windows(),
        Err(AslrError::LayoutDoesNotFit {
            region: RegionKind::DirectMap
        })
    );
    assert_eq!(
        c.with_size(RegionKind::MainStack, !0xfff),
        Err(AslrError::BadRegionSetting {
            region: RegionKind::MainStack
        })
    );
    assert_eq!(
        c.with_size(RegionKind::Executable, 0),
        Err(AslrError::ZeroSize)
    );
    assert!(c.with_guard_gap(0x1001).is_err());
    // Windows that collide with the stack at the top of a 39-bit half.
    assert_eq!(
        c.with_size(RegionKind::Mmap, 480 << 30).unwrap().windows(),
        Err(AslrError::LayoutDoesNotFit {
            region: RegionKind::Mmap
        })
    );
}

#[test]
fn x86_kernel_text_stays_in_the_top_two_gib() {
    let c = LayoutConfig::x86_64(VaWidth::X86_64_5LEVEL).unwrap();
    let mut rng = AslrRng::from_seed([2; 32]);
    for _ in 0..if cfg!(miri) { 10 } else { 100 } {
        let k = *LayoutBuilder::new(c)
            .build(&mut rng)
            .unwrap()
            .region(RegionKind::KernelText);
        assert!(k.range().raw_start() >= X86_64_KERNEL_TEXT_FLOOR);
        assert!(k.range().raw_last() < KERNEL_TOP_RESERVE.wrapping_neg());
        assert_eq!(k.range().raw_start() % (2 << 20), 0);
    }
    // A 600 MiB image leaves 468 slots (8.87 bits): below the 9-bit floor.
    let big = c.with_size(RegionKind::KernelText, 600 << 20).unwrap();
    assert!(matches!(
        LayoutBuilder::new(big).build(&mut rng),
        Err(AslrError::BelowPolicy {
            region: RegionKind::KernelText,
            floor: 9,
            ..
        })
    ));
    // Without the floor it builds, and says how little it has.
    let l = LayoutBuilder::new(big)
        .policy(Policy::default_for(&big).without_floor(RegionKind::KernelText))
        .build(&mut rng)
        .unwrap();
    assert_eq!(l.region(RegionKind::KernelText).positions(), 468);
    // More bits than the code model allows.
    assert_eq!(
        c.with_bits(RegionKind::KernelText, 10).unwrap().windows(),
        Err(AslrError::LayoutDoesNotFit {
            region: RegionKind::KernelText
        })
    );
}

#[test]
fn report_lists_every_region() {
    let c = LayoutConfig::x86_64(VaWidth::X86_64_4LEVEL).unwrap();
    let l = LayoutBuilder::new(c)
        .build(&mut AslrRng::from_seed([0; 32]))
        .unwrap();
    let text = l.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 + REGION_COUNT + 1);
    assert!(lines[0].starts_with("==== machvm layout: x86_64, 47-bit halves, 4KiB pages"));
    for (line, region) in lines[2..].iter().zip(l.regions()) {
        assert!(line.starts_with(region.kind().name()), "{line}");
        assert!(line.contains(&alloc::format!("{:016x}-", region.range().raw_start())));
        assert!(line.contains(&region.bits().to_string()));
        assert!(line.ends_with(&region.positions().to_string()));
    }
    // Columns line up: every row has the same length up to the positions column.
    let bracket: Vec<usize> = lines[1..=REGION_COUNT]
        .iter()
        .map(|l| l.find('[').unwrap())
        .collect();
    assert!(bracket.windows(2).all(|w| w[0] == w[1]), "{text}");
    assert!(
        lines
            .last()
            .unwrap()
            .contains("user 24.00 bits, kernel 9.55 bits"),
        "{text}"
    );
}
