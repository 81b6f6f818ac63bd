//! Property tests of `machvm-addr` against plain reference models.
//!
//! Properties:
//! - canonical checks agree with `u128` interval math for every width `16..=56`, with inputs
//!   concentrated at the boundaries `2^h ± d` and `2^64 - 2^h ± d`;
//! - `align_up` / `align_down` / `checked_add` / `checked_sub` of `VirtAddr` and `PhysAddr`
//!   agree with `u128` arithmetic (never wrap, fail exactly when the result is invalid);
//! - `PageRange` construction, `len_*`, `last`, `contains` and mixed front/back iteration agree
//!   with a `Vec` of page starts, including ranges at the top of the address space;
//! - `SimPhysMemory`'s allocator, driven by a weighted op sequence, matches a `BTreeMap` of live
//!   allocations: first-fit results, alignment, no overlap (also checked through memory tags),
//!   counters, typed errors that leave state unchanged, and fault injection.

extern crate alloc;

use machvm_addr::{AddrError, Page, PageRange, PageSize, PhysAddr, Size4KiB, VaWidth, VirtAddr};
use proptest::prelude::*;

const TWO64: u128 = 1 << 64;

fn ref_canonical(raw: u64, h: u8) -> bool {
    let r = u128::from(raw);
    r < 1 << h || r >= TWO64 - (1 << h)
}

/// Addresses near every canonical boundary, plus uniform ones.
fn boundary_addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        (16u8..=56, any::<bool>(), -4i64..=4).prop_map(|(h, upper, d)| {
            let b = if upper {
                (1u64 << h).wrapping_neg()
            } else {
                1u64 << h
            };
            b.wrapping_add_signed(d)
        }),
        (-8i64..=8).prop_map(|d| 0u64.wrapping_add_signed(d)),
        (0u64..1 << 20, 0u32..64).prop_map(|(x, s)| x << s),
    ]
}

fn canonical_addr() -> impl Strategy<Value = VirtAddr> {
    boundary_addr().prop_map(|r| VirtAddr::new_truncate(r, VaWidth::WIDEST))
}

proptest! {
    #[test]
    fn canonical_check_matches_reference(raw in boundary_addr(), h in 16u8..=56) {
        let w = VaWidth::new(h).unwrap();
        let ok = ref_canonical(raw, h);
        prop_assert_eq!(VirtAddr::try_new_in(raw, w).is_ok(), ok);
        prop_assert_eq!(VirtAddr::try_new(raw).is_ok(), ref_canonical(raw, 56));
        let t = VirtAddr::new_truncate(raw, w);
        prop_assert!(ref_canonical(t.as_u64(), h));
        prop_assert_eq!(t.as_u64() & ((1 << h) - 1), raw & ((1 << h) - 1));
        if ok {
            prop_assert_eq!(t.as_u64(), raw);
            let a = VirtAddr::new(raw);
            prop_assert_eq!(a.is_lower_half(w), u128::from(raw) < 1 << h);
            prop_assert_eq!(a.is_upper_half(w), !a.is_lower_half(w));
        }
    }

    #[test]
    fn virt_alignment_matches_reference(a in canonical_addr(), k in 0u32..64) {
        let align = 1u64 << k;
        let r = u128::from(a.as_u64());
        let up = r.div_ceil(u128::from(align)) * u128::from(align);
        let expect_up = (up < TWO64 && ref_canonical(up as u64, 56)).then_some(up as u64);
        prop_assert_eq!(a.align_up(align).ok().map(VirtAddr::as_u64), expect_up);
        if expect_up.is_none() {
            prop_assert_eq!(a.align_up(align), Err(AddrError::Overflow));
        }
        let down = a.as_u64() & !(align - 1);
        let expect_down = ref_canonical(down, 56).then_some(down);
        prop_assert_eq!(a.align_down(align).ok().map(VirtAddr::as_u64), expect_down);
        prop_assert_eq!(a.is_aligned(align), a.as_u64() % align == 0);
        prop_assert_eq!(a.align_up(align | 6), Err(AddrError::BadAlignment { align: align | 6 }));
        for size in PageSize::ALL {
            prop_assert_eq!(a.align_down_to(size).as_u64(), a.as_u64() / size.bytes() * size.bytes());
            prop_assert_eq!(a.align_up_to(size), a.align_up(size.bytes()).ok());
            prop_assert_eq!(a.page_offset(size), a.as_u64() % size.bytes());
        }
    }

    #[test]
    fn virt_checked_arithmetic_matches_reference(a in canonical_addr(), b in canonical_addr(), n in boundary_addr()) {
        let r = u128::from(a.as_u64());
        let sum = r + u128::from(n);
        let expect = (sum < TWO64 && ref_canonical(sum as u64, 56)).then_some(sum as u64);
        prop_assert_eq!(a.checked_add(n).map(VirtAddr::as_u64), expect);
        let expect = r.checked_sub(u128::from(n)).filter(|&d| ref_canonical(d as u64, 56)).map(|d| d as u64);
        prop_assert_eq!(a.checked_sub(n).map(VirtAddr::as_u64), expect);
        prop_assert_eq!(a.checked_offset_from(b), a.as_u64().checked_sub(b.as_u64()));
    }

    #[test]
    fn phys_arithmetic_matches_reference(raw in boundary_addr(), n in boundary_addr(), k in 0u32..64) {
        const LIMIT: u128 = 1 << 52;
        prop_assert_eq!(PhysAddr::try_new(raw).is_ok(), u128::from(raw) < LIMIT);
        let a = PhysAddr::new_truncate(raw);
        prop_assert_eq!(a.as_u64(), raw % (1 << 52));
        let r = u128::from(a.as_u64());
        let sum = r + u128::from(n);
        prop_assert_eq!(a.checked_add(n).map(PhysAddr::as_u64), (sum < LIMIT).then_some(sum as u64));
        prop_assert_eq!(a.checked_sub(n).map(PhysAddr::as_u64), a.as_u64().checked_sub(n));
        let align = 1u64 << k;
        let up = r.div_ceil(u128::from(align)) * u128::from(align);
        prop_assert_eq!(a.align_up(align).ok().map(PhysAddr::as_u64), (up < LIMIT).then_some(up as u64));
        prop_assert_eq!(a.align_down(align).map(PhysAddr::as_u64), Ok(a.as_u64() & !(align - 1)));
    }
}

/// Page starts near the top of each half, near zero, or anywhere.
fn page_start() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0u64..64).prop_map(|i| 0u64.wrapping_sub((i + 1) * 0x1000)),
        (0u64..64).prop_map(|i| (1u64 << 56).wrapping_sub((i + 1) * 0x1000)),
        (0u64..64).prop_map(|i| (1u64 << 56).wrapping_neg() + i * 0x1000),
        (0u64..64).prop_map(|i| i * 0x1000),
        boundary_addr().prop_map(|r| VirtAddr::new_truncate(r, VaWidth::WIDEST).as_u64() & !0xfff),
    ]
}

proptest! {
    #[test]
    fn page_range_matches_model(
        start in page_start(),
        count in 0u64..48,
        steps in proptest::collection::vec(any::<bool>(), 0..64),
        probe in 0u64..64,
    ) {
        let first: Page<Size4KiB> = Page::from_start_address(VirtAddr::new(start)).unwrap();
        let model: Vec<u128> = (0..count).map(|i| u128::from(start) + u128::from(i) * 0x1000).collect();
        let valid = model.iter().all(|&p| p < TWO64 && ref_canonical(p as u64, 56));
        let range = PageRange::from_start_and_count(first, count);
        prop_assert_eq!(range.is_ok(), valid);
        if !valid {
            prop_assert_eq!(range, Err(AddrError::Overflow));
            return Ok(());
        }
        let range = range.unwrap();
        let model: Vec<u64> = model.into_iter().map(|p| p as u64).collect();
        prop_assert_eq!(range.len_pages(), count);
        prop_assert_eq!(range.len_bytes(), count * 0x1000);
        prop_assert_eq!(range.is_empty(), count == 0);
        prop_assert_eq!(range.last().map(|p| p.start_address().as_u64()), model.last().copied());
        let starts = |it: &mut dyn Iterator<Item = Page>| it.map(|p| p.start_address().as_u64()).collect::<Vec<_>>();
        prop_assert_eq!(starts(&mut range.iter()), model.clone());
        let mut rev = model.clone();
        rev.reverse();
        prop_assert_eq!(starts(&mut range.iter().rev()), rev);
        // Mixed front/back iteration against a deque model.
        let mut it = range.iter();
        let (mut lo, mut hi) = (0usize, model.len());
        for front in steps {
            prop_assert_eq!(it.len(), hi - lo);
            prop_assert_eq!(it.size_hint(), (hi - lo, Some(hi - lo)));
            let got = if front { it.next() } else { it.next_back() };
            let want = if lo == hi {
                None
            } else if front {
                lo += 1;
                Some(model[lo - 1])
            } else {
                hi -= 1;
                Some(model[hi])
            };
            prop_assert_eq!(got.map(|p| p.start_address().as_u64()), want);
        }
        // contains() for pages around the range.
        let probe_addr = u128::from(start) + u128::from(probe) * 0x1000;
        if probe_addr < TWO64 && ref_canonical(probe_addr as u64, 56) {
            let p = Page::from_start_address(VirtAddr::new(probe_addr as u64)).unwrap();
            prop_assert_eq!(range.contains(p), probe < count);
        }
        // Equivalent constructors.
        if count > 0 {
            let last = range.last().unwrap();
            prop_assert_eq!(PageRange::new_inclusive(first, last), Ok(range));
            if let Some(end) = range.end() {
                prop_assert_eq!(PageRange::new(first, end), Ok(range));
            }
            let cov = PageRange::covering(VirtAddr::new(start + 1), count * 0x1000 - 1);
            prop_assert_eq!(cov, Ok(range));
        }
    }
}

// ---- SimPhysMemory allocator model -------------------------------------------------------

#[cfg(feature = "test-util")]
mod sim_model {
    use machvm_addr::FrameRequest;
    use machvm_addr::testing::AllocModel;

    use super::*;

    const SIM_BASE: u64 = 0x4000_0000;
    const SIM_SIZE: u64 = 2 << 20;

    #[derive(Clone, Debug)]
    enum Op {
        Alloc {
            size: PageSize,
            count: u64,
            align: PageSize,
        },
        Free {
            pick: usize,
        },
        DoubleFree {
            pick: usize,
        },
        BadFree {
            offset: i64,
        },
        FailAfter(Option<u64>),
    }

    fn op() -> impl Strategy<Value = Op> {
        let size = prop_oneof![
            8 => Just(PageSize::Size4KiB),
            3 => Just(PageSize::Size16KiB),
            2 => Just(PageSize::Size64KiB),
            1 => Just(PageSize::Size2MiB),
        ];
        let alloc = (size, 1u64..6, 0usize..3).prop_map(|(size, count, extra)| {
            let align = PageSize::ALL
                .into_iter()
                .filter(|a| *a >= size)
                .nth(extra)
                .unwrap_or(size);
            Op::Alloc {
                size,
                count: if size == PageSize::Size2MiB { 1 } else { count },
                align,
            }
        });
        prop_oneof![
            10 => alloc,
            6 => any::<usize>().prop_map(|pick| Op::Free { pick }),
            2 => any::<usize>().prop_map(|pick| Op::DoubleFree { pick }),
            2 => (-0x4000i64..0x21_0000).prop_map(|o| Op::BadFree { offset: o & !0x7ff }),
            1 => proptest::option::of(0u64..4).prop_map(Op::FailAfter),
        ]
    }

    fn check_counters(
        sim: &machvm_addr::SimPhysMemory,
        m: &AllocModel,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(sim.frames_in_use(), m.in_use);
        prop_assert_eq!(sim.peak_frames_in_use(), m.peak);
        prop_assert_eq!(sim.allocations(), m.allocations);
        prop_assert_eq!(sim.deallocations(), m.deallocations);
        prop_assert_eq!(sim.live_allocations(), m.live.len());
        Ok(())
    }

    fn free_and_check(
        sim: &machvm_addr::SimPhysMemory,
        m: &mut AllocModel,
        start: u64,
        req: FrameRequest,
    ) -> Result<(), TestCaseError> {
        let pa = PhysAddr::new(start);
        let expect_ok = m.live.get(&start).is_some_and(|r| r.bytes() == req.bytes());
        if expect_ok {
            // The tag written at allocation must have survived: no other allocation overlapped it.
            prop_assert_eq!(sim.read_u64(pa), Ok(start ^ 0xa5a5));
        }
        // SAFETY: the test never accesses frames after freeing them.
        let got = unsafe { sim.deallocate(pa, req) };
        if expect_ok {
            prop_assert_eq!(got, Ok(()));
            m.live.remove(&start);
            m.in_use -= req.bytes() / 0x1000;
            m.deallocations += 1;
            m.freed.push((start, req));
        } else {
            prop_assert!(got.is_err(), "free of {:#x} should fail", start);
            let err = got.unwrap_err();
            let misaligned = start % req.size().bytes() != 0;
            let outside = start < SIM_BASE || start + req.bytes() > SIM_BASE + SIM_SIZE;
            let want = if misaligned {
                AddrError::Misaligned {
                    addr: start,
                    align: req.size().bytes(),
                }
            } else if outside {
                AddrError::OutOfRange {
                    addr: start,
                    len: req.bytes(),
                }
            } else {
                AddrError::NotAllocated { addr: start }
            };
            prop_assert_eq!(err, want);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn sim_allocator_matches_model(ops in proptest::collection::vec(op(), 1..48)) {
            let sim = machvm_addr::SimPhysMemory::builder()
                .size_bytes(SIM_SIZE)
                .base(PhysAddr::new(SIM_BASE))
                .build()
                .unwrap();
            let mut m = AllocModel::new(SIM_BASE, SIM_SIZE);
            for op in ops {
                match op {
                    Op::Alloc { size, count, align } => {
                        let req = FrameRequest::new(size, count).unwrap().with_align(align).unwrap();
                        let got = sim.allocate(req);
                        if m.budget == Some(0) {
                            prop_assert_eq!(got, Err(AddrError::InjectedFailure));
                        } else if let Some(want) = m.first_fit(req) {
                            let pa = got.unwrap().as_u64();
                            prop_assert_eq!(pa, want);
                            prop_assert_eq!(pa % req.align().bytes(), 0);
                            prop_assert!(!m.overlaps(pa, req.bytes()));
                            // Zeroed on allocation, then tagged.
                            prop_assert_eq!(sim.read_u64(PhysAddr::new(pa + req.bytes() - 8)), Ok(0));
                            sim.write_u64(PhysAddr::new(pa), pa ^ 0xa5a5).unwrap();
                            m.live.insert(pa, req);
                            m.in_use += req.bytes() / 0x1000;
                            m.peak = m.peak.max(m.in_use);
                            m.allocations += 1;
                            m.budget = m.budget.map(|b| b - 1);
                        } else {
                            prop_assert_eq!(got, Err(AddrError::OutOfFrames));
                        }
                    }
                    Op::Free { pick } => {
                        if !m.live.is_empty() {
                            let (&start, &req) = m.live.iter().nth(pick % m.live.len()).unwrap();
                            free_and_check(&sim, &mut m, start, req)?;
                        }
                    }
                    Op::DoubleFree { pick } => {
                        if !m.freed.is_empty() {
                            let (start, req) = m.freed[pick % m.freed.len()];
                            free_and_check(&sim, &mut m, start, req)?;
                        }
                    }
                    Op::BadFree { offset } => {
                        let start = SIM_BASE.wrapping_add_signed(offset);
                        free_and_check(&sim, &mut m, start, FrameRequest::single(PageSize::Size4KiB))?;
                    }
                    Op::FailAfter(n) => {
                        sim.fail_after(n);
                        m.budget = n;
                    }
                }
                check_counters(&sim, &m)?;
            }
        }
    }
}
