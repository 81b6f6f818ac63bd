//! Property tests: random operation sequences on a real table over `SimPhysMemory`, checked
//! against a plain interval-map model after every operation.
//!
//! Properties:
//! - the table's mappings (merged into runs) equal the model after every operation, including
//!   operations that fail;
//! - a failed operation (conflict, injected allocation failure) changes nothing;
//! - `translate` agrees with the model at random addresses;
//! - `unmap` of a page or block the table reports removes exactly that leaf;
//! - after unmapping everything and finishing the flush, only the root frame is allocated, and
//!   after tearing the table down, no frame is.

// Host test: std is the natural choice.
#![allow(clippy::std_instead_of_alloc)]

use std::collections::BTreeMap;

use machvm_addr::{PageSize, PhysAddr, PhysMapper, SimPhysMemory, VirtAddr, VmProt};
use machvm_page_table::{
    CountingFlush, Format, NoFlush, PageAttrs, PageTable, PageTableError, Region, X86Pml4, X86Pml5,
};
use proptest::prelude::*;

const K4: u64 = 4 << 10;
const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;

/// Model: start -> (len, pa, attrs); intervals never overlap.
#[derive(Debug, Default, Clone)]
struct Model {
    map: BTreeMap<u64, (u64, u64, PageAttrs)>,
}

impl Model {
    fn overlaps(&self, start: u64, len: u64) -> Option<u64> {
        let end = start + len;
        if let Some((&s, &(l, _, _))) = self.map.range(..start).next_back()
            && s + l > start
        {
            return Some(start);
        }
        self.map.range(start..end).next().map(|(&s, _)| s)
    }

    fn insert(&mut self, start: u64, len: u64, pa: u64, attrs: PageAttrs) {
        self.map.insert(start, (len, pa, attrs));
    }

    /// Cuts the intervals so that `start` and `start + len` are boundaries.
    fn cut(&mut self, at: u64) {
        if let Some((&s, &(l, pa, a))) = self.map.range(..at).next_back()
            && s + l > at
        {
            self.map.insert(s, (at - s, pa, a));
            self.map.insert(at, (s + l - at, pa + (at - s), a));
        }
    }

    fn remove(&mut self, start: u64, len: u64) {
        self.cut(start);
        self.cut(start + len);
        let keys: Vec<u64> = self
            .map
            .range(start..start + len)
            .map(|(&k, _)| k)
            .collect();
        for k in keys {
            self.map.remove(&k);
        }
    }

    fn protect(&mut self, start: u64, len: u64, attrs: PageAttrs) {
        self.cut(start);
        self.cut(start + len);
        for (_, v) in self.map.range_mut(start..start + len) {
            v.2 = attrs;
        }
    }

    fn lookup(&self, va: u64) -> Option<(u64, PageAttrs)> {
        let (&s, &(l, pa, a)) = self.map.range(..=va).next_back()?;
        (va < s + l).then_some((pa + (va - s), a))
    }

    /// Merged runs: adjacent intervals with contiguous PAs and equal attributes join.
    fn runs(&self) -> Vec<(u64, u64, u64, PageAttrs)> {
        merge(self.map.iter().map(|(&s, &(l, pa, a))| (s, l, pa, a)))
    }
}

fn merge(it: impl Iterator<Item = (u64, u64, u64, PageAttrs)>) -> Vec<(u64, u64, u64, PageAttrs)> {
    let mut out: Vec<(u64, u64, u64, PageAttrs)> = Vec::new();
    for (s, l, pa, a) in it {
        if let Some(last) = out.last_mut()
            && last.0 + last.1 == s
            && last.2 + last.1 == pa
            && last.3 == a
        {
            last.1 += l;
            continue;
        }
        out.push((s, l, pa, a));
    }
    out
}

#[derive(Debug, Clone)]
enum Op {
    MapRange {
        unit: u64,
        idx: u64,
        count: u64,
        pa_idx: u64,
        attrs: u8,
        largest: u8,
    },
    Map {
        size: u8,
        idx: u64,
        pa_idx: u64,
        attrs: u8,
    },
    UnmapRange {
        unit: u64,
        idx: u64,
        count: u64,
    },
    UnmapLeaf {
        unit: u64,
        idx: u64,
    },
    Protect {
        unit: u64,
        idx: u64,
        count: u64,
        attrs: u8,
    },
    Translate {
        offset: u64,
    },
    FailNext {
        after: u64,
    },
}

fn unit() -> impl Strategy<Value = u64> {
    prop_oneof![4 => Just(K4), 2 => Just(M2), 1 => Just(G1)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (unit(), 0..600u64, 1..40u64, 0..8u64, 0..4u8, 0..3u8).prop_map(
            |(unit, idx, count, pa_idx, attrs, largest)| Op::MapRange { unit, idx, count, pa_idx, attrs, largest }),
        2 => (0..3u8, 0..700u64, 0..8u64, 0..4u8).prop_map(|(size, idx, pa_idx, attrs)| Op::Map { size, idx, pa_idx, attrs }),
        3 => (unit(), 0..600u64, 1..40u64).prop_map(|(unit, idx, count)| Op::UnmapRange { unit, idx, count }),
        1 => (unit(), 0..600u64).prop_map(|(unit, idx)| Op::UnmapLeaf { unit, idx }),
        2 => (unit(), 0..600u64, 1..40u64, 0..4u8).prop_map(|(unit, idx, count, attrs)| Op::Protect { unit, idx, count, attrs }),
        2 => (0..(4 * G1)).prop_map(|offset| Op::Translate { offset: offset & !7 }),
        1 => (0..3u64).prop_map(|after| Op::FailNext { after }),
    ]
}

fn attrs_of(k: u8) -> PageAttrs {
    match k % 4 {
        0 => PageAttrs::new(VmProt::READ),
        1 => PageAttrs::new(VmProt::READ | VmProt::WRITE).user(true),
        2 => PageAttrs::new(VmProt::READ | VmProt::EXECUTE).user(true),
        _ => PageAttrs::new(VmProt::READ | VmProt::WRITE).global(true),
    }
}

/// Clamps a (unit, idx, count) choice into the 4 GiB window, keeping big units sane.
fn range_of(unit: u64, idx: u64, count: u64) -> (u64, u64) {
    let window = 4 * G1;
    let count = if unit == G1 { count.min(2) } else { count };
    let start = (idx * unit) % window;
    let start = start - start % unit;
    let len = (count * unit).min(window - start);
    (start, len)
}

struct Harness<'a, F: Format> {
    pt: PageTable<F, &'a SimPhysMemory>,
    sim: &'a SimPhysMemory,
    base: u64,
    model: Model,
    fail_armed: bool,
}

impl<'a, F: Format> Harness<'a, F> {
    fn new(sim: &'a SimPhysMemory, region: Region, base: u64) -> Self {
        let pt = PageTable::<F, _>::new(region, sim, &mut sim.frame_allocator()).unwrap();
        Self {
            pt,
            sim,
            base,
            model: Model::default(),
            fail_armed: false,
        }
    }

    fn va(&self, off: u64) -> VirtAddr {
        VirtAddr::new(self.base.wrapping_add(off))
    }

    /// Applies `op` to table and model; returns the op's error if it failed.
    fn apply(&mut self, op: &Op) -> Result<(), PageTableError> {
        let mut alloc = self.sim.frame_allocator();
        let mut hook = CountingFlush::default();
        let pa_base = 0x10_0000_0000u64;
        let result = match *op {
            Op::FailNext { after } => {
                self.sim.fail_after(Some(after));
                self.fail_armed = true;
                return Ok(());
            }
            Op::Translate { offset } => {
                let got = self.pt.translate(self.va(offset));
                match (got, self.model.lookup(offset)) {
                    (Ok(t), Some((pa, a))) => {
                        assert_eq!(t.pa.as_u64(), pa_base + pa, "translate {offset:#x}");
                        assert_eq!(t.mapping().attrs, a);
                    }
                    (Err(PageTableError::NotMapped { .. }), None) => {}
                    (got, want) => panic!("translate {offset:#x}: table {got:?}, model {want:?}"),
                }
                return Ok(());
            }
            Op::MapRange {
                unit,
                idx,
                count,
                pa_idx,
                attrs,
                largest,
            } => {
                let (start, len) = range_of(unit, idx, count);
                // Keep runs of small pages short so every check stays fast.
                let len = len.min([16 << 20, G1, 4 * G1][usize::from(largest)]);
                let pa = pa_idx * unit;
                let largest = [PageSize::Size4KiB, PageSize::Size2MiB, PageSize::Size1GiB]
                    [usize::from(largest)];
                let a = attrs_of(attrs);
                let r = self.pt.map_range(
                    self.va(start),
                    PhysAddr::new(pa_base + pa),
                    len,
                    &a,
                    largest,
                    &mut alloc,
                );
                match r {
                    Ok(p) => {
                        assert!(
                            self.model.overlaps(start, len).is_none(),
                            "mapped over {start:#x}"
                        );
                        self.model.insert(start, len, pa, a);
                        Ok(p)
                    }
                    Err(e) => Err(e),
                }
            }
            Op::Map {
                size,
                idx,
                pa_idx,
                attrs,
            } => {
                let size =
                    [PageSize::Size4KiB, PageSize::Size2MiB, PageSize::Size1GiB][usize::from(size)];
                let len = size.bytes();
                let start = (idx * len) % (4 * G1);
                let a = attrs_of(attrs);
                match self.pt.map(
                    self.va(start),
                    PhysAddr::new(pa_base + pa_idx * len),
                    size,
                    &a,
                    &mut alloc,
                ) {
                    Ok(p) => {
                        assert!(self.model.overlaps(start, len).is_none());
                        self.model.insert(start, len, pa_idx * len, a);
                        Ok(p)
                    }
                    Err(e) => Err(e),
                }
            }
            Op::UnmapRange { unit, idx, count } => {
                let (start, len) = range_of(unit, idx, count);
                let r = self
                    .pt
                    .unmap_range(self.va(start), len, &mut hook, &mut alloc);
                if r.is_ok() {
                    self.model.remove(start, len);
                }
                r
            }
            Op::UnmapLeaf { unit, idx } => {
                let (start, _) = range_of(unit, idx, 1);
                let leaf = self.pt.translate(self.va(start)).ok().map(|t| t.mapping());
                match self.pt.unmap(self.va(start)) {
                    Ok((m, p)) => {
                        let leaf = leaf.expect("unmap succeeded where translate failed");
                        assert_eq!(leaf.va, m.va);
                        assert_eq!((m.pa, m.size), (leaf.pa, leaf.size));
                        self.model.remove(start, m.size.bytes());
                        Ok(p)
                    }
                    Err(PageTableError::NotMapped { .. }) => {
                        assert!(
                            leaf.is_none_or(|l| l.va.as_u64() != self.base.wrapping_add(start))
                        );
                        return Ok(());
                    }
                    Err(e) => Err(e),
                }
            }
            Op::Protect {
                unit,
                idx,
                count,
                attrs,
            } => {
                let (start, len) = range_of(unit, idx, count);
                let a = attrs_of(attrs);
                let r = self
                    .pt
                    .protect_range(self.va(start), len, &a, &mut hook, &mut alloc);
                if r.is_ok() {
                    self.model.protect(start, len, a);
                }
                r
            }
        };
        if self.fail_armed {
            self.sim.fail_after(None);
            self.fail_armed = false;
        }
        match result {
            Ok(pending) => {
                self.pt.finish(pending, &mut NoFlush, &mut alloc).unwrap();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn check(&self) {
        let runs = merge(self.pt.mappings(self.va(0), 4 * G1).unwrap().map(|m| {
            let off = m.va.as_u64().wrapping_sub(self.base);
            (off, m.size.bytes(), m.pa.as_u64() - 0x10_0000_0000, m.attrs)
        }));
        assert_eq!(runs, self.model.runs());
    }

    fn teardown(mut self) {
        let mut alloc = self.sim.frame_allocator();
        let p = self
            .pt
            .unmap_range(self.va(0), 4 * G1, &mut NoFlush, &mut alloc)
            .unwrap();
        self.pt.finish(p, &mut NoFlush, &mut alloc).unwrap();
        assert_eq!(self.sim.frames_in_use(), 1, "only the root is left");
        self.model = Model::default();
        self.check();
        let sim = self.sim;
        let freed = self.pt.into_freed_tables();
        freed.release(sim, &mut sim.frame_allocator()).unwrap();
        assert_eq!(sim.frames_in_use(), 0);
    }
}

fn run<F: Format>(region: Region, base: u64, ops: &[Op]) {
    let sim = SimPhysMemory::builder()
        .size_bytes(64 << 20)
        .build()
        .unwrap();
    let mut h = Harness::<F>::new(&sim, region, base);
    for op in ops {
        let before = h.model.clone();
        let frames_before = h.sim.frames_in_use();
        if let Err(e) = h.apply(op) {
            // Failed operations change nothing: same mappings, same frames.
            assert_eq!(h.model.map, before.map);
            assert_eq!(
                h.sim.frames_in_use(),
                frames_before,
                "{op:?} failed with {e} but leaked"
            );
            assert!(
                matches!(
                    e,
                    PageTableError::AlreadyMapped { .. } | PageTableError::FrameAllocation(_)
                ),
                "{op:?}: unexpected {e}"
            );
        }
        h.check();
    }
    h.teardown();
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
        run::<X86Pml4>(Region::Both, 0x40_0000_0000, &ops);
    }

    #[test]
    #[cfg_attr(miri, ignore = "op sequences over GiB-sized ranges are too slow under miri; basic.rs covers the unsafe paths")]
    fn x86_pml4_upper_half_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        run::<X86Pml4>(Region::Both, 0xffff_8000_0000_0000, &ops);
    }

    #[test]
    #[cfg_attr(miri, ignore = "op sequences over GiB-sized ranges are too slow under miri; basic.rs covers the unsafe paths")]
    fn x86_pml5_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        run::<X86Pml5>(Region::Both, 0x00ff_0000_0000_0000 - 8 * G1, &ops);
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
