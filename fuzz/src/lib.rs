//! Decoding and checking logic for the machvm fuzz targets; the targets in `fuzz_targets/` only
//! forward to [`addr_ops::run`], [`sim_frames::run`], [`page_table_ops::run`],
//! [`tlb_flush::run`], [`shootdown_ops::run`], [`zone_ops::run`] and [`vm_object_ops::run`]. Each panics
//! only on a real mismatch between a machvm crate and a reference model.

pub mod page_table_ops;
pub mod shootdown_ops;
pub mod tlb_flush;
pub mod vm_object_ops;
pub mod zone_ops;

pub mod addr_ops {
    //! Address and page-range operations checked against `u128` reference arithmetic.

    use arbitrary::Arbitrary;
    use machvm_addr::{AddrError, Page, PageRange, PhysAddr, Size4KiB, VaWidth, VirtAddr};

    const TWO64: u128 = 1 << 64;

    fn canonical(raw: u64, h: u8) -> bool {
        let r = u128::from(raw);
        r < 1 << h || r >= TWO64 - (1 << h)
    }

    /// One operation; raw inputs are arbitrary and may be invalid.
    #[derive(Arbitrary, Debug, Clone)]
    pub enum AddrOp {
        /// Canonical check and truncation in a width (bits taken modulo the valid range).
        Canonical { raw: u64, bits: u8 },
        /// `align_up` / `align_down` by `1 << (shift % 64)`.
        Align { raw: u64, shift: u8 },
        /// `checked_add` / `checked_sub`.
        Arith { raw: u64, n: u64 },
        /// Physical address construction, arithmetic and alignment.
        Phys { raw: u64, n: u64, shift: u8 },
        /// A 4 KiB page range of `count` pages iterated from both ends by `pattern`'s bits.
        Range { start: u64, count: u8, pattern: u64 },
    }

    /// Runs `ops`, panicking on the first disagreement with the reference.
    pub fn run(ops: &[AddrOp]) {
        for op in ops {
            check(op);
        }
    }

    fn check(op: &AddrOp) {
        match *op {
            AddrOp::Canonical { raw, bits } => {
                let h = 16 + bits % 41;
                let w = VaWidth::new(h).expect("16..=56 is valid");
                assert_eq!(VirtAddr::try_new_in(raw, w).is_ok(), canonical(raw, h));
                assert_eq!(VirtAddr::try_new(raw).is_ok(), canonical(raw, 56));
                let t = VirtAddr::new_truncate(raw, w).as_u64();
                assert!(canonical(t, h));
                assert_eq!(t & ((1 << h) - 1), raw & ((1 << h) - 1));
            }
            AddrOp::Align { raw, shift } => {
                let a = VirtAddr::new_truncate(raw, VaWidth::WIDEST);
                let align = 1u64 << (shift % 64);
                let r = u128::from(a.as_u64());
                let up = r.div_ceil(u128::from(align)) * u128::from(align);
                let want = (up < TWO64 && canonical(up as u64, 56)).then_some(up as u64);
                assert_eq!(a.align_up(align).ok().map(VirtAddr::as_u64), want);
                let down = a.as_u64() & !(align - 1);
                assert_eq!(
                    a.align_down(align).ok().map(VirtAddr::as_u64),
                    canonical(down, 56).then_some(down)
                );
                let bad = align | 6;
                if !bad.is_power_of_two() {
                    assert_eq!(a.align_up(bad), Err(AddrError::BadAlignment { align: bad }));
                }
            }
            AddrOp::Arith { raw, n } => {
                let a = VirtAddr::new_truncate(raw, VaWidth::WIDEST);
                let r = u128::from(a.as_u64());
                let sum = r + u128::from(n);
                let want = (sum < TWO64 && canonical(sum as u64, 56)).then_some(sum as u64);
                assert_eq!(a.checked_add(n).map(VirtAddr::as_u64), want);
                let want = a.as_u64().checked_sub(n).filter(|&d| canonical(d, 56));
                assert_eq!(a.checked_sub(n).map(VirtAddr::as_u64), want);
            }
            AddrOp::Phys { raw, n, shift } => {
                const LIMIT: u128 = 1 << 52;
                assert_eq!(PhysAddr::try_new(raw).is_ok(), u128::from(raw) < LIMIT);
                let a = PhysAddr::new_truncate(raw);
                let sum = u128::from(a.as_u64()) + u128::from(n);
                assert_eq!(
                    a.checked_add(n).map(PhysAddr::as_u64),
                    (sum < LIMIT).then_some(sum as u64)
                );
                let align = 1u64 << (shift % 64);
                let up = u128::from(a.as_u64()).div_ceil(u128::from(align)) * u128::from(align);
                assert_eq!(
                    a.align_up(align).ok().map(PhysAddr::as_u64),
                    (up < LIMIT).then_some(up as u64)
                );
            }
            AddrOp::Range {
                start,
                count,
                pattern,
            } => check_range(start, u64::from(count), pattern),
        }
    }

    fn check_range(start: u64, count: u64, pattern: u64) {
        let first: Page<Size4KiB> =
            Page::containing_address(VirtAddr::new_truncate(start, VaWidth::WIDEST));
        let s = first.start_address().as_u64();
        let model: Vec<u128> = (0..count)
            .map(|i| u128::from(s) + u128::from(i) * 0x1000)
            .collect();
        let valid = model.iter().all(|&p| p < TWO64 && canonical(p as u64, 56));
        let range = PageRange::from_start_and_count(first, count);
        assert_eq!(range.is_ok(), valid, "start {s:#x} count {count}");
        let Ok(range) = range else { return };
        assert_eq!(range.len_bytes(), count * 0x1000);
        let mut it = range.iter();
        let (mut lo, mut hi) = (0usize, model.len());
        for bit in 0..64 {
            assert_eq!(it.len(), hi - lo);
            let front = pattern >> bit & 1 == 1;
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
            assert_eq!(got.map(|p| u128::from(p.start_address().as_u64())), want);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn boundary_sequences_pass() {
            run(&[
                AddrOp::Canonical {
                    raw: 1 << 47,
                    bits: 31,
                },
                AddrOp::Canonical {
                    raw: u64::MAX,
                    bits: 0,
                },
                AddrOp::Align {
                    raw: u64::MAX,
                    shift: 12,
                },
                AddrOp::Align {
                    raw: 0xff00_0000_0000_0000,
                    shift: 63,
                },
                AddrOp::Arith {
                    raw: 0x00ff_ffff_ffff_ffff,
                    n: 1,
                },
                AddrOp::Arith {
                    raw: 0,
                    n: u64::MAX,
                },
                AddrOp::Phys {
                    raw: u64::MAX,
                    n: 1,
                    shift: 52,
                },
                AddrOp::Range {
                    start: u64::MAX,
                    count: 1,
                    pattern: 0,
                },
                AddrOp::Range {
                    start: u64::MAX - 0x4000,
                    count: 6,
                    pattern: 0x5,
                },
                AddrOp::Range {
                    start: (1 << 56) - 0x3000,
                    count: 3,
                    pattern: u64::MAX,
                },
            ]);
        }

        #[test]
        fn decodes_from_bytes() {
            let bytes: Vec<u8> = (0..=255).collect();
            let mut u = arbitrary::Unstructured::new(&bytes);
            let ops: Vec<AddrOp> = u.arbitrary().expect("decodes");
            run(&ops);
        }
    }
}

pub mod sim_frames {
    //! An op sequence on `SimPhysMemory`'s allocator checked against a map of live allocations.

    use arbitrary::Arbitrary;
    use machvm_addr::testing::AllocModel;
    use machvm_addr::{AddrError, FrameRequest, PageSize, PhysAddr, SimPhysMemory};

    const BASE: u64 = 0x10_0000;
    const SIZE: u64 = 1 << 20;

    /// One allocator operation.
    #[derive(Arbitrary, Debug, Clone)]
    pub enum FrameOp {
        /// Allocate `1 + count % 8` frames of size index `size % 3`, alignment raised by `extra % 3`.
        Alloc { size: u8, count: u8, extra: u8 },
        /// Free the `pick`-th live allocation.
        Free { pick: u16 },
        /// Free the `pick`-th previously freed allocation again.
        DoubleFree { pick: u16 },
        /// Free a single 4 KiB frame at `BASE + offset * 0x800 - 0x2000`.
        Stray { offset: u16 },
        /// Arm (`Some(n % 4)`) or disarm fault injection.
        FailAfter(Option<u8>),
    }

    const SIZES: [PageSize; 3] = [PageSize::Size4KiB, PageSize::Size16KiB, PageSize::Size64KiB];

    /// Runs `ops` on a fresh 1 MiB simulation, panicking on the first disagreement.
    pub fn run(ops: &[FrameOp]) {
        let sim = SimPhysMemory::builder()
            .size_bytes(SIZE)
            .base(PhysAddr::new(BASE))
            .build()
            .expect("valid simulation");
        let mut m = AllocModel::new(BASE, SIZE);
        for op in ops {
            match *op {
                FrameOp::Alloc { size, count, extra } => {
                    let size = SIZES[usize::from(size % 3)];
                    let align = PageSize::ALL
                        .into_iter()
                        .filter(|a| *a >= size)
                        .nth(usize::from(extra % 3))
                        .unwrap_or(size);
                    let req = FrameRequest::new(size, 1 + u64::from(count % 8))
                        .and_then(|r| r.with_align(align))
                        .expect("valid request");
                    let got = sim.allocate(req);
                    if m.budget == Some(0) {
                        assert_eq!(got, Err(AddrError::InjectedFailure));
                    } else if let Some(want) = m.first_fit(req) {
                        let pa = got.expect("a fit exists").as_u64();
                        assert_eq!(pa, want);
                        assert_eq!(sim.read_u64(PhysAddr::new(pa)), Ok(0), "zeroed");
                        sim.write_u64(PhysAddr::new(pa), !pa).expect("in bounds");
                        m.live.insert(pa, req);
                        m.in_use += req.bytes() / 0x1000;
                        m.peak = m.peak.max(m.in_use);
                        m.allocations += 1;
                        m.budget = m.budget.map(|b| b - 1);
                    } else {
                        assert_eq!(got, Err(AddrError::OutOfFrames));
                    }
                }
                FrameOp::Free { pick } => {
                    if let Some((&s, &r)) =
                        m.live.iter().nth(usize::from(pick) % m.live.len().max(1))
                    {
                        free(&sim, &mut m, s, r);
                    }
                }
                FrameOp::DoubleFree { pick } => {
                    if !m.freed.is_empty() {
                        let (s, r) = m.freed[usize::from(pick) % m.freed.len()];
                        free(&sim, &mut m, s, r);
                    }
                }
                FrameOp::Stray { offset } => {
                    let s = (BASE + u64::from(offset) * 0x800).wrapping_sub(0x2000);
                    free(&sim, &mut m, s, FrameRequest::single(PageSize::Size4KiB));
                }
                FrameOp::FailAfter(n) => {
                    let n = n.map(|n| u64::from(n % 4));
                    sim.fail_after(n);
                    m.budget = n;
                }
            }
            assert_eq!(sim.frames_in_use(), m.in_use);
            assert_eq!(sim.peak_frames_in_use(), m.peak);
            assert_eq!(sim.allocations(), m.allocations);
            assert_eq!(sim.deallocations(), m.deallocations);
            assert_eq!(sim.live_allocations(), m.live.len());
        }
    }

    fn free(sim: &SimPhysMemory, m: &mut AllocModel, start: u64, req: FrameRequest) {
        let ok = m.live.get(&start).is_some_and(|r| r.bytes() == req.bytes());
        let Ok(pa) = PhysAddr::try_new(start) else {
            return;
        };
        if ok {
            assert_eq!(
                sim.read_u64(pa),
                Ok(!start),
                "tag overwritten: allocations overlapped"
            );
        }
        // SAFETY: the model never touches frames after freeing them.
        let got = unsafe { sim.deallocate(pa, req) };
        if ok {
            assert_eq!(got, Ok(()));
            m.live.remove(&start);
            m.in_use -= req.bytes() / 0x1000;
            m.deallocations += 1;
            m.freed.push((start, req));
        } else {
            let want = if !start.is_multiple_of(req.size().bytes()) {
                AddrError::Misaligned {
                    addr: start,
                    align: req.size().bytes(),
                }
            } else if start < BASE || start + req.bytes() > BASE + SIZE {
                AddrError::OutOfRange {
                    addr: start,
                    len: req.bytes(),
                }
            } else {
                AddrError::NotAllocated { addr: start }
            };
            assert_eq!(got, Err(want));
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn fixed_sequence_passes() {
            run(&[
                FrameOp::Alloc {
                    size: 0,
                    count: 0,
                    extra: 0,
                },
                FrameOp::Alloc {
                    size: 2,
                    count: 7,
                    extra: 2,
                },
                FrameOp::Stray { offset: 0 },
                FrameOp::Stray { offset: 5 },
                FrameOp::Free { pick: 0 },
                FrameOp::DoubleFree { pick: 0 },
                FrameOp::FailAfter(Some(1)),
                FrameOp::Alloc {
                    size: 1,
                    count: 3,
                    extra: 1,
                },
                FrameOp::Alloc {
                    size: 1,
                    count: 3,
                    extra: 1,
                },
                FrameOp::FailAfter(None),
                FrameOp::Alloc {
                    size: 0,
                    count: 255,
                    extra: 0,
                },
                FrameOp::Free { pick: 1 },
            ]);
        }

        #[test]
        fn exhausting_memory_is_out_of_frames() {
            let ops: Vec<FrameOp> = (0..40)
                .map(|_| FrameOp::Alloc {
                    size: 2,
                    count: 0,
                    extra: 0,
                })
                .collect();
            run(&ops);
        }
    }
}
