//! Random sequences of paging operations on anonymous objects sharing one default pager with
//! swap, against a reference model of what every page must read as.
//!
//! Properties checked after every operation:
//! - every page reads what was last written to it (zeros if never, or since discarded),
//!   whatever went to the compressor, to swap, or back;
//! - the pool holds exactly the pages the objects' slot maps name (no slot leaks, none lost);
//! - the swap holds exactly the pool's swapped-out segments, and its usage adds up;
//! - destroying an object frees its slots, and at the end nothing is left anywhere.
// Host tests: std is the natural choice.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{PAGE, codec, dyn_memory, memory_of, noise, pattern, small_swap};
use machvm_addr::VmProt;
use machvm_compressor::pool::{PoolConfig, SegmentSize};
use machvm_pager::{CompressorPager, DefaultPager, MemorySwapBacking};
use machvm_vm_object::{ObjectError, ObjectRef, SimPageMemory, VmObject};
use proptest::prelude::*;

const OBJECTS: usize = 3;
const PAGES: u64 = 8;
const FRAMES: u64 = 12;

type Pager = DefaultPager<Arc<MemorySwapBacking>>;

#[derive(Clone, Debug)]
enum Op {
    Write(usize, u64, u16),
    Read(usize, u64),
    PageOut(usize, u64),
    Discard(usize, u64),
    Recreate(usize),
    SwapOutOldest,
    CompactMajor,
    Reclaim,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..OBJECTS, 0..PAGES, any::<u16>()).prop_map(|(o, p, s)| Op::Write(o, p, s)),
        6 => (0..OBJECTS, 0..PAGES).prop_map(|(o, p)| Op::Read(o, p)),
        5 => (0..OBJECTS, 0..PAGES).prop_map(|(o, p)| Op::PageOut(o, p)),
        1 => (0..OBJECTS, 0..PAGES).prop_map(|(o, p)| Op::Discard(o, p)),
        1 => (0..OBJECTS).prop_map(Op::Recreate),
        1 => Just(Op::SwapOutOldest),
        1 => Just(Op::CompactMajor),
        1 => Just(Op::Reclaim),
    ]
}

fn contents(seed: u16) -> Vec<u8> {
    if seed % 3 == 0 {
        noise(u64::from(seed), PAGE as usize)
    } else {
        pattern(u64::from(seed), PAGE as usize)
    }
}

struct World {
    m: Arc<SimPageMemory>,
    pager: Arc<Pager>,
    objects: Vec<ObjectRef>,
    /// Each object's compressor pager (attached when the object is made).
    pagers: Vec<Option<Arc<CompressorPager<Arc<MemorySwapBacking>>>>>,
    model: Vec<BTreeMap<u64, u16>>,
}

impl World {
    fn new_object(&self) -> ObjectRef {
        VmObject::anonymous(PAGES * PAGE, dyn_memory(&self.m)).unwrap()
    }

    /// Pages out some resident page of some object to free a frame.
    fn evict_any(&mut self) {
        for o in 0..OBJECTS {
            let mut resident = Vec::new();
            self.objects[o].for_each_page(|off, p| {
                if !p.is_busy() {
                    resident.push(off);
                }
            });
            for off in resident {
                if self.page_out(o, off / PAGE) {
                    return;
                }
            }
        }
        panic!("nothing could be evicted");
    }

    /// Pages out page `p` of object `o`; a failure must leave the page where it was.
    fn page_out(&mut self, o: usize, p: u64) -> bool {
        let object = &self.objects[o];
        let had = object.page(p * PAGE).unwrap().is_some();
        let ok = self.pager.page_out(object, p * PAGE).is_ok();
        if !ok && had {
            assert!(
                object.page(p * PAGE).unwrap().is_some(),
                "a failed page-out lost the page"
            );
        }
        ok
    }

    fn resolve(&mut self, o: usize, p: u64, access: VmProt) -> machvm_vm_object::ResolvedPage {
        loop {
            match VmObject::resolve(&self.objects[o], p * PAGE, access) {
                Ok(page) => return page,
                Err(ObjectError::NoMemory) => self.evict_any(),
                Err(e) => panic!("fault on object {o} page {p}: {e}"),
            }
        }
    }

    fn expected(&self, o: usize, p: u64) -> Vec<u8> {
        self.model[o]
            .get(&p)
            .map_or_else(|| vec![0; PAGE as usize], |s| contents(*s))
    }

    fn check_counts(&self) {
        let slots: u64 = self.pagers.iter().flatten().map(|c| c.slots_in_use()).sum();
        let st = self.pager.stats();
        assert_eq!(st.pool.pages_stored, slots, "pool pages vs slot maps");
        let swap = st.swap.unwrap();
        assert_eq!(
            swap.records, st.pool.segments_swapped,
            "swap records vs pool"
        );
        let usage = self.pager.swap_usage().unwrap();
        assert_eq!(usage.used_bytes + usage.free_bytes, usage.total_bytes);
    }
}

fn run(ops: Vec<Op>) {
    let m = memory_of(FRAMES * PAGE);
    // Segments of 4 pages, 2 in core: most pages end up in swap.
    let backing = Arc::new(MemorySwapBacking::new());
    let swap = small_swap(backing.clone(), 32);
    let config = PoolConfig::new(SegmentSize::K64)
        .max_slots(4)
        .max_in_core_segments(2)
        .max_segments(64)
        .max_pages(1024);
    let pager = DefaultPager::new(config, codec(), Some(swap)).unwrap();
    let mut w = World {
        m: m.clone(),
        pager: pager.clone(),
        objects: Vec::new(),
        pagers: vec![None; OBJECTS],
        model: vec![BTreeMap::new(); OBJECTS],
    };
    for o in 0..OBJECTS {
        let object = w.new_object();
        w.pagers[o] = Some(pager.attach(&object).unwrap());
        w.objects.push(object);
    }
    for op in ops {
        match op {
            Op::Write(o, p, s) => {
                let page = w.resolve(o, p, VmProt::WRITE);
                m.memory().write_bytes(page.frame, &contents(s)).unwrap();
                w.model[o].insert(p, s);
            }
            Op::Read(o, p) => {
                let page = w.resolve(o, p, VmProt::READ);
                let mut buf = vec![0u8; PAGE as usize];
                m.memory().read_bytes(page.frame, &mut buf).unwrap();
                assert!(buf == w.expected(o, p), "object {o} page {p} reads wrong");
            }
            Op::PageOut(o, p) => {
                w.page_out(o, p);
            }
            Op::Discard(o, p) => {
                w.objects[o].discard_range(p * PAGE, PAGE).unwrap();
                w.model[o].remove(&p);
            }
            Op::Recreate(o) => {
                let object = w.new_object();
                w.pagers[o] = Some(pager.attach(&object).unwrap());
                w.objects[o] = object;
                w.model[o].clear();
            }
            Op::SwapOutOldest => {
                let _ = pager.pool().swap_out_oldest();
            }
            Op::CompactMajor => {
                pager.pool().compact_major();
            }
            Op::Reclaim => {
                let report = pager.reclaim_swap();
                assert_eq!(report.unreadable_records + report.io_errors, 0);
            }
        }
        w.check_counts();
    }
    // Everything reads right at the end, then everything is released.
    for o in 0..OBJECTS {
        for p in 0..PAGES {
            let page = w.resolve(o, p, VmProt::READ);
            let mut buf = vec![0u8; PAGE as usize];
            m.memory().read_bytes(page.frame, &mut buf).unwrap();
            assert!(buf == w.expected(o, p), "final: object {o} page {p}");
        }
    }
    w.objects.clear();
    w.pagers.clear();
    assert_eq!(pager.stats().pool.pages_stored, 0);
    pager.reclaim_swap();
    assert!(backing.files().is_empty(), "swap files left behind");
    assert_eq!(m.memory().frames_in_use(), 0, "frames leaked");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 1 } else { 48 }))]

    #[test]
    fn pages_read_what_the_model_says(
        ops in proptest::collection::vec(op(), 1..if cfg!(miri) { 12 } else { 120 })
    ) {
        run(ops);
    }
}
