//! Unit tests of the `TLBI` encoders and plans, checked against the Arm ARM field layouts.

use alloc::vec::Vec;

use super::*;

const GRANULES: [Granule; 3] = [Granule::Size4KiB, Granule::Size16KiB, Granule::Size64KiB];

fn enc(granule: Granule) -> TlbiEncoder {
    TlbiEncoder::new(granule, 16).unwrap()
}

// --- by-VA operands (Arm ARM, TLBI VAE1IS: ASID [63:48], TTL [47:44], VA[55:12] [43:0]) ---

#[test]
fn va_operand_is_in_4k_units_for_every_granule() {
    let a = Asid::new(0x42);
    // 4K: VA 0x7fff_1234_5000 -> VA[55:12] = 0x7_fff1_2345.
    let op = enc(Granule::Size4KiB)
        .va_operand(a, VirtAddr::new(0x7fff_1234_5000))
        .unwrap();
    assert_eq!(op, 0x0042_0007_fff1_2345);
    // 16K and 64K: the same 4K-unit field, never the address shifted by the granule.
    let va = VirtAddr::new(0x7fff_1234_0000);
    for g in [Granule::Size16KiB, Granule::Size64KiB] {
        let op = enc(g).va_operand(a, va).unwrap();
        assert_eq!(op, 0x0042_0007_fff1_2340, "{g}");
        assert_ne!(op & VA_FIELD_MASK, va.as_u64() >> g.shift());
    }
    // One 64K page: field 0x10 (16 x 4K), not 0x1.
    let op = enc(Granule::Size64KiB)
        .va_operand(Asid::KERNEL, VirtAddr::new(0x1_0000))
        .unwrap();
    assert_eq!(op, 0x10);
}

#[test]
fn va_operand_of_upper_half_keeps_bits_55_to_12() {
    // 0xffff_8000_0000_1000: VA[55:48] = 0xff, VA[47:12] = 0x8_0000_0001.
    let op = enc(Granule::Size4KiB)
        .va_operand(Asid::KERNEL, VirtAddr::new(0xffff_8000_0000_1000))
        .unwrap();
    assert_eq!(op, 0x0000_0ff8_0000_0001);
}

#[test]
fn va_operand_rejects_addresses_not_aligned_to_the_granule() {
    for g in GRANULES {
        let res = enc(g).va_operand(Asid::KERNEL, VirtAddr::new(0x1000 + g.bytes()));
        if g == Granule::Size4KiB {
            assert!(res.is_ok());
        } else {
            assert_eq!(
                res,
                Err(ArchError::Misaligned {
                    addr: 0x1000 + g.bytes(),
                    align: g.bytes()
                })
            );
        }
    }
}

#[test]
fn asid_goes_to_bits_63_to_48_and_respects_the_width() {
    let e16 = enc(Granule::Size4KiB);
    assert_eq!(
        e16.asid_operand(Asid::new(0xabcd)),
        Ok(0xabcd_0000_0000_0000)
    );
    let e8 = TlbiEncoder::new(Granule::Size4KiB, 8).unwrap();
    assert_eq!(e8.asid_operand(Asid::new(0xff)), Ok(0x00ff_0000_0000_0000));
    assert_eq!(
        e8.asid_operand(Asid::new(0x100)),
        Err(ArchError::AsidTooWide {
            asid: Asid::new(0x100),
            bits: 8
        })
    );
    assert_eq!(
        e8.va_operand(Asid::new(0x100), VirtAddr::new(0x1000)),
        Err(ArchError::AsidTooWide {
            asid: Asid::new(0x100),
            bits: 8
        })
    );
    assert_eq!(
        TlbiEncoder::new(Granule::Size4KiB, 12),
        Err(ArchError::BadAsidWidth { bits: 12 })
    );
}

// --- TTL hints (Arm ARM, TLBI VAE1IS, TTL field; TLBI RVAE1IS, TTL field) ---

#[test]
fn ttl_hints_encode_granule_and_level() {
    let cases = [
        (Granule::Size4KiB, PageSize::Size4KiB, 3, 0b0111),
        (Granule::Size4KiB, PageSize::Size2MiB, 2, 0b0110),
        (Granule::Size4KiB, PageSize::Size1GiB, 1, 0b0101),
        (Granule::Size16KiB, PageSize::Size16KiB, 3, 0b1011),
        (Granule::Size16KiB, PageSize::Size32MiB, 2, 0b1010),
        (Granule::Size64KiB, PageSize::Size64KiB, 3, 0b1111),
        (Granule::Size64KiB, PageSize::Size512MiB, 2, 0b1110),
    ];
    for (g, leaf, level, field) in cases {
        let hint = TtlHint::for_leaf(g, leaf).unwrap();
        assert_eq!(hint.level(), level);
        assert_eq!(hint.va_field(), field);
        assert_eq!(hint.range_field(), level as u64);
        assert_eq!(hint.leaf_size(), leaf);
    }
    assert_eq!(
        TtlHint::for_leaf(Granule::Size64KiB, PageSize::Size2MiB),
        Err(ArchError::BadLeafSize {
            granule: Granule::Size64KiB,
            size: PageSize::Size2MiB
        })
    );
}

#[test]
fn va_operand_with_ttl_sets_bits_47_to_44() {
    let e = enc(Granule::Size4KiB);
    let hint = TtlHint::for_leaf(Granule::Size4KiB, PageSize::Size2MiB).unwrap();
    let op = e
        .va_operand_with_ttl(Asid::new(1), VirtAddr::new(0x20_0000), hint)
        .unwrap();
    assert_eq!(op, 0x0001_6000_0000_0200);
    let other = TtlHint::for_leaf(Granule::Size64KiB, PageSize::Size64KiB).unwrap();
    assert!(matches!(
        e.va_operand_with_ttl(Asid::new(1), VirtAddr::new(0x20_0000), other),
        Err(ArchError::GranuleMismatch { .. })
    ));
}

// --- range operands (Arm ARM, TLBI RVAE1IS: ASID [63:48], TG [47:46], SCALE [45:44],
//     NUM [43:39], TTL [38:37], BaseADDR [36:0] in granule units) ---

#[test]
fn range_operand_packs_every_field() {
    let op = enc(Granule::Size4KiB)
        .range_operand(Asid::new(5), VirtAddr::new(0x4000_0000), 3, 1, None)
        .unwrap();
    // 5 << 48 | TG 0b01 << 46 | SCALE 1 << 44 | NUM 3 << 39 | 0x4000_0000 >> 12.
    assert_eq!(op, 0x0005_5180_0004_0000);
}

#[test]
fn range_base_is_in_granule_units() {
    let base = VirtAddr::new(0x4000_0000);
    let expect = [
        (Granule::Size4KiB, 0x4_0000),
        (Granule::Size16KiB, 0x1_0000),
        (Granule::Size64KiB, 0x4000),
    ];
    for (g, field) in expect {
        let op = enc(g)
            .range_operand(Asid::KERNEL, base, 0, 0, None)
            .unwrap();
        assert_eq!(op & BADDR_MASK, field, "{g}");
        assert_eq!(op >> TG_SHIFT & 0b11, g.tg_code());
    }
}

#[test]
fn range_base_of_upper_half_is_truncated_to_37_bits() {
    // VA[48:12] of 0xffff_ffff_ffe0_0000: bit 48 set marks the upper half.
    let op = enc(Granule::Size4KiB)
        .range_operand(
            Asid::KERNEL,
            VirtAddr::new(0xffff_ffff_ffe0_0000),
            7,
            1,
            None,
        )
        .unwrap();
    assert_eq!(op & BADDR_MASK, 0x1f_ffff_fe00);
}

#[test]
fn range_operand_under_lpa2_uses_64k_units() {
    let e = enc(Granule::Size4KiB).with_lpa2(true);
    let op = e
        .range_operand(Asid::KERNEL, VirtAddr::new(0x4001_0000), 0, 0, None)
        .unwrap();
    assert_eq!(op & BADDR_MASK, 0x4001);
    assert_eq!(
        e.range_operand(Asid::KERNEL, VirtAddr::new(0x4000_1000), 0, 0, None),
        Err(ArchError::Misaligned {
            addr: 0x4000_1000,
            align: 0x1_0000
        })
    );
}

#[test]
fn range_operand_checks_fields_and_ttl_alignment() {
    let e = enc(Granule::Size4KiB);
    let base = VirtAddr::new(0x20_0000);
    assert_eq!(
        e.range_operand(Asid::KERNEL, base, 32, 0, None),
        Err(ArchError::RangeField { num: 32, scale: 0 })
    );
    assert_eq!(
        e.range_operand(Asid::KERNEL, base, 0, 4, None),
        Err(ArchError::RangeField { num: 0, scale: 4 })
    );
    let l2 = TtlHint::for_leaf(Granule::Size4KiB, PageSize::Size2MiB).unwrap();
    // Arm ARM: with TTL = 0b10 and the 4K granule, BaseADDR[20:12] must be zero.
    assert_eq!(
        e.range_operand(Asid::KERNEL, VirtAddr::new(0x10_0000), 0, 0, Some(l2)),
        Err(ArchError::Misaligned {
            addr: 0x10_0000,
            align: 0x20_0000
        })
    );
    let op = e.range_operand(Asid::KERNEL, base, 0, 0, Some(l2)).unwrap();
    assert_eq!(op >> RANGE_TTL_SHIFT & 0b11, 0b10);
}

#[test]
fn max_range_is_2_pow_21_pages() {
    assert_eq!(MAX_RANGE_PAGES_PER_OP, 1 << 21);
    assert_eq!(range_pages(0, 0), 2);
    assert_eq!(range_pages(31, 0), 64);
    assert_eq!(range_pages(0, 1), 64);
}

// --- plans ---

fn kinds_and_pages(plan: TlbiPlan) -> Vec<(TlbiStepKind, u64)> {
    plan.map(|s| (s.kind(), s.pages())).collect()
}

#[test]
fn plan_splits_odd_and_long_ranges() {
    use TlbiStepKind::{Range, Va};
    let e = enc(Granule::Size4KiB);
    let a = Asid::new(9);
    let p = |pages: u64| {
        e.plan(
            a,
            VirtAddr::new(0x1000),
            pages << 12,
            PageSize::Size4KiB,
            true,
        )
        .unwrap()
    };
    assert_eq!(kinds_and_pages(p(1)), [(Va, 1)]);
    assert_eq!(kinds_and_pages(p(3)), [(Range, 2), (Va, 1)]);
    assert_eq!(kinds_and_pages(p(64)), [(Range, 64)]);
    assert_eq!(kinds_and_pages(p(65)), [(Range, 64), (Va, 1)]);
    assert_eq!(kinds_and_pages(p(63)), [(Range, 62), (Va, 1)]);
    assert_eq!(
        kinds_and_pages(p((1 << 22) + 64 + 1)),
        [(Range, 1 << 21), (Range, 1 << 21), (Range, 64), (Va, 1)]
    );
    // 2^21 + 2^16 + 2048 + 2 pages: two ops at scale 3 (32 units, then 1 unit of 2^16),
    // one at scale 2 (1 unit of 2048), one at scale 0 (1 unit of 2).
    assert_eq!(
        kinds_and_pages(p((1 << 21) + (1 << 16) + 2048 + 2)),
        [
            (Range, 1 << 21),
            (Range, 1 << 16),
            (Range, 2048),
            (Range, 2)
        ]
    );
}

#[test]
fn plan_without_range_steps_by_stride() {
    let e = enc(Granule::Size4KiB);
    let steps: Vec<_> = e
        .plan(
            Asid::new(1),
            VirtAddr::new(0x4000_0000),
            0x60_0000,
            PageSize::Size2MiB,
            false,
        )
        .unwrap()
        .collect();
    assert_eq!(steps.len(), 3);
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(s.kind(), TlbiStepKind::Va);
        assert_eq!(s.pages(), 512);
        assert_eq!(s.start().as_u64(), 0x4000_0000 + i as u64 * 0x20_0000);
        assert_eq!(s.operand(), (1 << 48) | (s.start().as_u64() >> 12));
    }
}

#[test]
fn plan_rejects_misaligned_and_overflowing_ranges() {
    let e = enc(Granule::Size16KiB);
    let a = Asid::KERNEL;
    assert_eq!(
        e.plan(a, VirtAddr::new(0x1000), 0x4000, PageSize::Size4KiB, true)
            .err(),
        Some(ArchError::Misaligned {
            addr: 0x1000,
            align: 0x4000
        })
    );
    assert_eq!(
        e.plan(a, VirtAddr::new(0x4000), 0x5000, PageSize::Size16KiB, true)
            .err(),
        Some(ArchError::Misaligned {
            addr: 0x5000,
            align: 0x4000
        })
    );
    // Crossing from the top of the lower half into the non-canonical hole.
    let top = VirtAddr::new(0x00ff_ffff_ffff_c000);
    assert_eq!(
        e.plan(a, top, 0x8000, PageSize::Size16KiB, true).err(),
        Some(ArchError::RangeOverflow {
            start: top.as_u64(),
            len: 0x8000
        })
    );
    // Wrapping past 2^64.
    let last = VirtAddr::new(0xffff_ffff_ffff_c000);
    assert!(matches!(
        e.plan(a, last, 0x8000, PageSize::Size16KiB, true),
        Err(ArchError::RangeOverflow { .. })
    ));
    // Ending exactly at 2^64 is fine.
    assert_eq!(
        e.plan(a, last, 0x4000, PageSize::Size16KiB, true)
            .unwrap()
            .count(),
        1
    );
    assert!(
        e.plan(a, top, 0, PageSize::Size16KiB, true)
            .unwrap()
            .is_empty()
    );
}

/// xorshift64*: a small deterministic generator, so the property check needs no crate and
/// stays fast under miri.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Checks one plan against the Arm ARM rules, decoding each operand independently.
fn check_plan(
    e: TlbiEncoder,
    asid: Asid,
    start: u64,
    len: u64,
    stride: u64,
    ttl: Option<TtlHint>,
    use_range: bool,
) {
    let g = e.granule();
    let plan = match ttl {
        Some(hint) => e.plan_with_ttl(asid, VirtAddr::new(start), len, hint, use_range),
        None => e.plan(
            asid,
            VirtAddr::new(start),
            len,
            PageSize::from_bytes(stride).unwrap(),
            use_range,
        ),
    }
    .unwrap();
    let total_pages = len >> g.shift();
    let mut next = start;
    let mut covered = 0u64;
    let mut ops = 0u64;
    for step in plan {
        ops += 1;
        let op = step.operand();
        assert_eq!(step.start().as_u64(), next, "steps must be contiguous");
        assert_eq!(op >> 48, asid.as_u16() as u64, "asid field");
        match step.kind() {
            TlbiStepKind::Va => {
                assert_eq!(op & VA_FIELD_MASK, (next >> 12) & VA_FIELD_MASK);
                let want_ttl = ttl.map_or(0, TtlHint::va_field);
                assert_eq!(op >> 44 & 0xf, want_ttl);
                let want = if use_range {
                    1
                } else {
                    stride.max(g.bytes()) >> g.shift()
                };
                assert_eq!(step.pages(), want);
            }
            TlbiStepKind::Range => {
                assert!(use_range);
                let tg = op >> 46 & 0b11;
                let scale = op >> 44 & 0b11;
                let num = op >> 39 & 0b1_1111;
                let rttl = op >> 37 & 0b11;
                let base = op & BADDR_MASK;
                assert_eq!(tg, g.tg_code());
                assert!(num <= 31 && scale <= 3);
                assert_eq!(step.pages(), (num + 1) << (5 * scale + 1));
                assert_eq!(rttl, ttl.map_or(0, TtlHint::range_field));
                let unit = if e.is_lpa2() {
                    16.max(g.shift())
                } else {
                    g.shift()
                };
                assert_eq!(next & ((1 << unit) - 1), 0, "base aligned to its unit");
                assert_eq!(base, (next >> unit) & BADDR_MASK);
                if let Some(hint) = ttl {
                    assert_eq!(next % hint.leaf_size().bytes(), 0, "ttl base alignment");
                }
            }
        }
        covered += step.pages();
        next = next.wrapping_add(step.len_bytes());
    }
    assert_eq!(covered, total_pages, "exact coverage");
    if use_range {
        let lead = if e.is_lpa2() { 15 } else { 0 };
        let bound = total_pages.div_ceil(MAX_RANGE_PAGES_PER_OP) + 3 + 1 + lead;
        assert!(ops <= bound, "{ops} ops for {total_pages} pages");
    } else {
        assert_eq!(ops, len / stride.max(g.bytes()));
    }
}

#[test]
fn plans_cover_exactly_and_respect_the_architectural_limits() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let iterations = if cfg!(miri) { 60 } else { 4000 };
    for _ in 0..iterations {
        let g = GRANULES[rng.below(3) as usize];
        let e = enc(g).with_lpa2(rng.below(4) == 0);
        let use_range = rng.below(4) != 0;
        let ttl = if rng.below(3) == 0 {
            let leaves: &[PageSize] = match g {
                Granule::Size4KiB => &[PageSize::Size4KiB, PageSize::Size2MiB, PageSize::Size1GiB],
                Granule::Size16KiB => &[PageSize::Size16KiB, PageSize::Size32MiB],
                Granule::Size64KiB => &[PageSize::Size64KiB, PageSize::Size512MiB],
            };
            let leaf = leaves[rng.below(leaves.len() as u64) as usize];
            Some(TtlHint::for_leaf(g, leaf).unwrap())
        } else {
            None
        };
        let stride = match ttl {
            Some(hint) => hint.leaf_size().bytes(),
            None => {
                // Any page size at least the granule (also sizes that are no leaf of it:
                // the plan only needs the stride as an alignment and step).
                let sizes: Vec<u64> = PageSize::ALL
                    .iter()
                    .map(|s| s.bytes())
                    .filter(|&b| b >= g.bytes())
                    .collect();
                sizes[rng.below(sizes.len() as u64) as usize]
            }
        };
        // Mostly short ranges, sometimes very long ones (without range ops the plan
        // has one step per stride, so keep those bounded).
        let max_units = if use_range && rng.below(8) == 0 {
            1 << 24
        } else {
            700
        };
        let units = rng.below(max_units).min((1 << 46) / stride);
        let len = units * stride;
        let upper = rng.below(2) == 0;
        let room = (1u64 << 47) - len;
        let mut start = (rng.below(room) / stride) * stride;
        if upper {
            start |= 0xffff_8000_0000_0000;
        }
        let asid = Asid::new(rng.below(1 << 16) as u16);
        check_plan(e, asid, start, len, stride, ttl, use_range);
    }
}

#[test]
fn lpa2_plans_lead_with_single_pages_until_64k_aligned() {
    let e = enc(Granule::Size4KiB).with_lpa2(true);
    let steps: Vec<_> = e
        .plan(
            Asid::KERNEL,
            VirtAddr::new(0x1_d000),
            0x20_0000,
            PageSize::Size4KiB,
            true,
        )
        .unwrap()
        .collect();
    // 0x1d000 -> 0x20000 takes 3 by-VA pages, then the rest is range-encodable.
    assert!(steps[..3].iter().all(|s| s.kind() == TlbiStepKind::Va));
    assert_eq!(steps[3].start().as_u64(), 0x2_0000);
    assert_eq!(steps[3].kind(), TlbiStepKind::Range);
    check_plan(e, Asid::KERNEL, 0x1_d000, 0x20_0000, 0x1000, None, true);
}

#[test]
fn features_decode_id_registers() {
    // ID_AA64ISAR0_EL1.TLB [59:56]: 0b0001 = outer shareable only, 0b0010 = also range.
    assert!(!A64Features::from_id_regs(0b0001 << 56, 0, 0).has_range());
    assert!(A64Features::from_id_regs(0b0010 << 56, 0, 0).has_range());
    // ID_AA64MMFR0_EL1.ASIDBits [7:4]: 0b0000 = 8 bits, 0b0010 = 16 bits.
    assert_eq!(A64Features::from_id_regs(0, 0, 0).max_asid_bits(), 8);
    assert_eq!(
        A64Features::from_id_regs(0, 0b0010 << 4, 0).max_asid_bits(),
        16
    );
    // ID_AA64MMFR2_EL1.TTL [51:48].
    assert!(A64Features::from_id_regs(0, 0, 1 << 48).has_ttl());
    // Other fields do not leak in.
    let noise = A64Features::from_id_regs(!(0xf << 56), !(0xf << 4), !(0xf << 48));
    assert_eq!(noise, A64Features::new(false, false, false));
}
