//! TLB flush planning checked for exact coverage: the aarch64 `TLBI` plans of
//! `machvm_tlb::arch::TlbiEncoder` and the batched flushes of `machvm_tlb::FlushGather`.

use std::cell::RefCell;
use std::collections::BTreeSet;

use arbitrary::Arbitrary;
use machvm_addr::{PageSize, VirtAddr};
use machvm_tlb::arch::{Granule, MAX_RANGE_PAGES_PER_OP, TlbiEncoder, TlbiStepKind};
use machvm_tlb::gather::MAX_RANGES;
use machvm_tlb::{Asid, FlushGather, FlushRecord, TlbCaps, TlbOps};

/// One `TLBI` plan request.
#[derive(Arbitrary, Debug, Clone)]
pub struct PlanCase {
    /// Granule choice (`% 3`: 4K, 16K, 64K).
    pub granule: u8,
    /// First page, in granules (kept below 2^47 bytes).
    pub start_page: u32,
    /// Pages to invalidate, `1 + pages`.
    pub pages: u16,
    /// Whether the CPU has range `TLBI`s.
    pub use_range: bool,
    /// 16-bit ASIDs (else 8-bit).
    pub asid16: bool,
    /// The ASID (reduced to the width).
    pub asid: u16,
}

/// One changed range, in 4 KiB pages.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Rec {
    /// First page (`% 4096`).
    pub page: u16,
    /// Pages, `1 + pages % 64`.
    pub pages: u8,
}

/// A fuzz input: plans to check and a batch of records to gather and flush.
#[derive(Arbitrary, Debug, Clone)]
pub struct Input {
    /// `TLBI` plans.
    pub plans: Vec<PlanCase>,
    /// Records for one gather.
    pub records: Vec<Rec>,
    /// The gather's ceiling, `1 + ceiling % 64`.
    pub ceiling: u8,
    /// Whether the flushing CPU has range operations.
    pub range_ops: bool,
}

/// Runs one input, panicking on any plan or flush that covers the wrong pages.
pub fn run(input: &Input) {
    for case in &input.plans {
        check_plan(case);
    }
    check_gather(input);
}

fn check_plan(case: &PlanCase) {
    let granule =
        [Granule::Size4KiB, Granule::Size16KiB, Granule::Size64KiB][usize::from(case.granule % 3)];
    let g = granule.page_size().bytes();
    let bits = if case.asid16 { 16 } else { 8 };
    let enc = TlbiEncoder::new(granule, bits).expect("8 and 16 are valid widths");
    let asid = Asid::new(if case.asid16 {
        case.asid
    } else {
        case.asid & 0xff
    });
    let start = (u64::from(case.start_page) % ((1 << 47) / g - 0x1_0000)) * g;
    let pages = 1 + u64::from(case.pages);
    let plan = enc
        .plan(
            asid,
            VirtAddr::new(start),
            pages * g,
            granule.page_size(),
            case.use_range,
        )
        .expect("an aligned range in the lower half is always plannable");
    let mut next = start;
    for step in plan {
        assert_eq!(
            step.start().as_u64(),
            next,
            "steps must be contiguous and in order"
        );
        assert!(step.pages() > 0);
        match step.kind() {
            TlbiStepKind::Va => assert_eq!(step.pages(), 1, "a by-VA step covers one page"),
            TlbiStepKind::Range => {
                assert!(case.use_range, "range step without range support");
                assert!(step.pages() <= MAX_RANGE_PAGES_PER_OP);
            }
            _ => panic!("unknown step kind"),
        }
        // The VA operand is in 4 KiB units whatever the granule, ASID in bits 63:48.
        if step.kind() == TlbiStepKind::Va {
            assert_eq!(
                step.operand() & ((1 << 44) - 1),
                (next >> 12) & ((1 << 44) - 1)
            );
            assert_eq!(step.operand() >> 48, u64::from(asid.as_u16()));
        }
        next += step.pages() * g;
    }
    assert_eq!(
        next,
        start + pages * g,
        "the plan must cover exactly the range"
    );
}

/// Records what a gather's flush invalidated.
#[derive(Default)]
struct Recorder {
    range: bool,
    pages: RefCell<Vec<u64>>,
    ranges: RefCell<Vec<(u64, u64)>>,
    full: RefCell<bool>,
}

impl TlbOps for Recorder {
    fn caps(&self) -> TlbCaps {
        TlbCaps::new(false, self.range, true, 16)
    }
    fn sync(&self) {}
    fn invalidate_page(&self, _asid: Asid, va: VirtAddr, _leaf_only: bool) {
        self.pages.borrow_mut().push(va.as_u64());
    }
    fn invalidate_range(
        &self,
        _asid: Asid,
        start: VirtAddr,
        len: u64,
        _stride: PageSize,
        _leaf_only: bool,
    ) {
        self.ranges.borrow_mut().push((start.as_u64(), len));
    }
    fn invalidate_asid(&self, _asid: Asid) {
        *self.full.borrow_mut() = true;
    }
    fn invalidate_all(&self) {
        *self.full.borrow_mut() = true;
    }
    fn complete(&self) {}
}

fn check_gather(input: &Input) {
    const BASE: u64 = 0x4000_0000;
    let ceiling = 1 + u64::from(input.ceiling % 64);
    let mut gather = FlushGather::with_ceiling(Asid::new(5), ceiling);
    let mut want = BTreeSet::new();
    // Whether the gather ever had more distinct ranges than it keeps (it then covers them
    // with one range, gaps included).
    let mut collapsed = false;
    for r in &input.records {
        let first = u64::from(r.page % 4096);
        let n = 1 + u64::from(r.pages % 64);
        gather.add(FlushRecord::new(
            VirtAddr::new(BASE + first * 0x1000),
            n * 0x1000,
            PageSize::Size4KiB,
        ));
        want.extend(first..first + n);
        collapsed |= runs(&want) > MAX_RANGES;
    }
    if collapsed {
        assert!(gather.pages() >= want.len() as u64);
    } else {
        assert_eq!(
            gather.pages(),
            want.len() as u64,
            "merged ranges count each page once"
        );
        assert_eq!(gather.ranges().len(), runs(&want));
    }
    let planned = gather.pages();
    let ops = Recorder {
        range: input.range_ops,
        ..Recorder::default()
    };
    let out = gather.flush(&ops);
    assert!(gather.is_empty());
    let pages = ops.pages.borrow();
    let ranges = ops.ranges.borrow();
    let full = *ops.full.borrow();
    assert_eq!(out.pages, pages.len() as u64);
    assert_eq!(out.ranges, ranges.len() as u64);
    if want.is_empty() {
        assert_eq!(out.operations(), 0);
        return;
    }
    if planned <= ceiling {
        // Page by page, each page once, nothing else.
        assert!(!full && ranges.is_empty());
        let got: BTreeSet<u64> = pages.iter().map(|va| (va - BASE) / 0x1000).collect();
        assert_eq!(got.len(), pages.len(), "a page was invalidated twice");
        assert!(want.is_subset(&got), "a changed page was not invalidated");
        if !collapsed {
            assert_eq!(got, want);
        }
    } else {
        assert!(
            pages.is_empty(),
            "above the ceiling nothing goes page by page"
        );
        for p in &want {
            let va = BASE + p * 0x1000;
            assert!(
                full || ranges.iter().any(|&(s, l)| va >= s && va < s + l),
                "page {p} not invalidated"
            );
        }
    }
}

/// Returns the number of maximal runs of consecutive pages in `pages`.
fn runs(pages: &BTreeSet<u64>) -> usize {
    let mut n = 0;
    let mut prev = None;
    for &p in pages {
        if prev.is_none_or(|q: u64| q + 1 != p) {
            n += 1;
        }
        prev = Some(p);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_inputs_pass() {
        let plans = (0..3u8)
            .flat_map(|granule| {
                [(0, 0), (1, 40), (31, 2047), (u32::MAX, u16::MAX)].map(|(start_page, pages)| {
                    PlanCase {
                        granule,
                        start_page,
                        pages,
                        use_range: pages % 2 == 0,
                        asid16: granule == 1,
                        asid: 0x1234,
                    }
                })
            })
            .collect();
        let mut records = vec![
            Rec { page: 3, pages: 2 },
            Rec { page: 5, pages: 0 },
            Rec {
                page: 4000,
                pages: 63,
            },
        ];
        // Ten distinct ranges: more than the gather keeps.
        records.extend((0..10).map(|i| Rec {
            page: 100 + 10 * i,
            pages: 1,
        }));
        for ceiling in [0, 5, 63] {
            for range_ops in [false, true] {
                run(&Input {
                    plans: Vec::clone(&plans),
                    records: records.clone(),
                    ceiling,
                    range_ops,
                });
            }
        }
    }

    #[test]
    fn decodes_from_bytes() {
        let bytes: Vec<u8> = (0..=255).cycle().take(2048).collect();
        let mut u = arbitrary::Unstructured::new(&bytes);
        let input: Input = u.arbitrary().expect("decodes");
        run(&input);
    }
}
