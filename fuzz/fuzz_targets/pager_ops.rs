//! Default-pager operation sequences against a model: an anonymous object twice the size of
//! memory pages through the compressor and encrypted swap while segments are swapped out and
//! in, swap files are created, grown, drained and deleted, and the swap device fails or is
//! damaged. Every page reads what was last written to it (or the fault fails with an error
//! when a fault or damage was injected, never with wrong data); slot maps, pool and swap agree
//! after every operation; at the end, with the device repaired, every page reads back.
#![no_main]

use std::collections::BTreeMap;
use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use machvm_addr::{PageSize, SimPhysMemory, VmProt};
use machvm_compressor::codec::{Hybrid, PageSize as CodecPageSize, VectorPolicy};
use machvm_compressor::pool::{PoolConfig, SegmentSize, SwapKey};
use machvm_pager::{
    CompressorPager, DefaultPager, Faults, FixedKey, MemorySwapBacking, Swap, SwapConfig,
};
use machvm_vm_object::{ObjectError, ObjectRef, PageMemory, PagerError, SimPageMemory, VmObject};

const PAGE: u64 = 4096;
const PAGES: u64 = 16;
const FRAMES: u64 = 8;
const MAX_FILES: u32 = 16;

#[derive(Arbitrary, Debug)]
enum Op {
    Write {
        page: u8,
        seed: u16,
    },
    Read {
        page: u8,
    },
    PageOut {
        page: u8,
    },
    Discard {
        page: u8,
    },
    Recreate,
    SwapOutOldest,
    SwapIn {
        segment: u8,
    },
    CompactMajor,
    Reclaim,
    /// Flips a byte inside a stored swap record.
    Damage {
        record: u8,
        offset: u16,
        xor: u8,
    },
    Repair,
    Fail {
        reads: bool,
        writes: bool,
        allocation: bool,
    },
}

type Pager = DefaultPager<Arc<MemorySwapBacking>>;

fn contents(seed: u16) -> Vec<u8> {
    let mut x = u64::from(seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let random_bytes = (seed as usize % 4) * 1024;
    (0..PAGE as usize)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i < random_bytes {
                x as u8
            } else {
                (seed >> 8) as u8
            }
        })
        .collect()
}

struct World {
    m: Arc<SimPageMemory>,
    backing: Arc<MemorySwapBacking>,
    pager: Arc<Pager>,
    object: ObjectRef,
    cp: Arc<CompressorPager<Arc<MemorySwapBacking>>>,
    model: BTreeMap<u64, u16>,
    /// Damage applied: (key, file, byte offset in the file, xor).
    damage: Vec<(SwapKey, u32, u64, u8)>,
    faults: Faults,
}

impl World {
    fn new() -> Self {
        let phys = SimPhysMemory::builder()
            .size_bytes(FRAMES * PAGE)
            .build()
            .unwrap();
        let m = Arc::new(SimPageMemory::new(phys, PageSize::Size4KiB).unwrap());
        let backing = Arc::new(MemorySwapBacking::new());
        let config = SwapConfig::new(SegmentSize::K64)
            .file_slots(1, 4)
            .max_files(MAX_FILES)
            .reclaim_slack_slots(1);
        let mut key = FixedKey::new(core::array::from_fn(|i| i as u8));
        let swap = Swap::new(backing.clone(), config, &mut key).unwrap();
        // Segments of 4 pages, 2 in core. At most 17 segments can hold the object's 16 pages,
        // so neither the segment table (64) nor the swap (64 slots) can fill up unless the
        // device fails.
        let pool = PoolConfig::new(SegmentSize::K64)
            .max_slots(4)
            .max_in_core_segments(2)
            .max_segments(64)
            .max_pages(64);
        let codec = Hybrid::new(CodecPageSize::Size4K, VectorPolicy::Portable);
        let pager = DefaultPager::new(pool, codec, Some(Arc::new(swap))).unwrap();
        let dm: Arc<dyn PageMemory> = m.clone();
        let object = VmObject::anonymous(PAGES * PAGE, dm).unwrap();
        let cp = pager.attach(&object).unwrap();
        Self {
            m,
            backing,
            pager,
            object,
            cp,
            model: BTreeMap::new(),
            damage: Vec::new(),
            faults: Faults::default(),
        }
    }

    fn troubled(&self) -> bool {
        !self.damage.is_empty() || self.faults != Faults::default()
    }

    /// Frees a frame by paging out some resident page; false if none would go.
    fn evict_any(&self) -> bool {
        let mut resident = Vec::new();
        self.object.for_each_page(|off, p| {
            if !p.is_busy() {
                resident.push(off);
            }
        });
        resident
            .into_iter()
            .any(|off| self.pager.page_out(&self.object, off).is_ok())
    }

    /// Resolves `page`, evicting as needed; `None` when the fault failed with an error the
    /// current troubles explain (the page is then not resident unless it was).
    fn fault(&self, page: u64, access: VmProt) -> Option<machvm_vm_object::ResolvedPage> {
        let was = self.object.page(page * PAGE).unwrap().is_some();
        loop {
            match VmObject::resolve(&self.object, page * PAGE, access) {
                Ok(p) => return Some(p),
                Err(ObjectError::NoMemory) => {
                    if !self.evict_any() {
                        assert!(self.troubled(), "no page could be evicted");
                        return None;
                    }
                }
                Err(ObjectError::Pager(PagerError::Io)) => {
                    assert!(self.troubled(), "i/o error without a fault or damage");
                    assert_eq!(self.object.page(page * PAGE).unwrap().is_some(), was);
                    return None;
                }
                Err(ObjectError::Pager(PagerError::NoSpace)) => {
                    assert!(
                        self.troubled(),
                        "no space with a swap that holds every segment"
                    );
                    return None;
                }
                Err(e) => panic!("fault: {e}"),
            }
        }
    }

    fn expected(&self, page: u64) -> Vec<u8> {
        self.model
            .get(&page)
            .map_or_else(|| vec![0; PAGE as usize], |s| contents(*s))
    }

    fn check(&mut self) {
        let st = self.pager.stats();
        assert_eq!(
            st.pool.pages_stored,
            self.cp.slots_in_use(),
            "pool vs slot map"
        );
        let swap = st.swap.unwrap();
        assert_eq!(swap.records, st.pool.segments_swapped, "swap vs pool");
        assert!(swap.files <= MAX_FILES);
        let usage = self.pager.swap_usage().unwrap();
        assert_eq!(usage.used_bytes + usage.free_bytes, usage.total_bytes);
        assert!(usage.encrypted);
        // Damage to a record that is gone (freed; a damaged record cannot be moved) no longer
        // matters: its slot may hold another record now.
        let records = self.pager.swap().unwrap().records();
        self.damage.retain(|(key, file, at, _)| {
            records.iter().any(|r| {
                r.key == *key
                    && r.file == *file
                    && (r.offset_bytes..r.offset_bytes + r.len_bytes).contains(at)
            })
        });
    }

    fn repair(&mut self) {
        for (_, file, at, xor) in self.damage.drain(..).rev() {
            self.backing.with_file_mut(file, |b| b[at as usize] ^= xor);
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut w = World::new();
    for op in ops.into_iter().take(150) {
        match op {
            Op::Write { page, seed } => {
                let p = u64::from(page) % PAGES;
                if let Some(r) = w.fault(p, VmProt::WRITE) {
                    w.m.memory().write_bytes(r.frame, &contents(seed)).unwrap();
                    w.model.insert(p, seed);
                }
            }
            Op::Read { page } => {
                let p = u64::from(page) % PAGES;
                if let Some(r) = w.fault(p, VmProt::READ) {
                    let mut buf = vec![0u8; PAGE as usize];
                    w.m.memory().read_bytes(r.frame, &mut buf).unwrap();
                    assert!(buf == w.expected(p), "page {p} reads wrong");
                }
            }
            Op::PageOut { page } => {
                let p = u64::from(page) % PAGES;
                let was = w.object.page(p * PAGE).unwrap().is_some();
                if w.pager.page_out(&w.object, p * PAGE).is_err() && was {
                    assert!(
                        w.object.page(p * PAGE).unwrap().is_some(),
                        "page-out lost page {p}"
                    );
                }
            }
            Op::Discard { page } => {
                let p = u64::from(page) % PAGES;
                w.object.discard_range(p * PAGE, PAGE).unwrap();
                w.model.remove(&p);
            }
            Op::Recreate => {
                let dm: Arc<dyn PageMemory> = w.m.clone();
                w.object = VmObject::anonymous(PAGES * PAGE, dm).unwrap();
                w.cp = w.pager.attach(&w.object).unwrap();
                w.model.clear();
                assert_eq!(
                    w.pager.stats().pool.pages_stored,
                    0,
                    "the old object's slots freed"
                );
            }
            Op::SwapOutOldest => {
                let _ = w.pager.pool().swap_out_oldest();
            }
            Op::SwapIn { segment } => {
                let _ = w.pager.pool().swap_in(u32::from(segment % 64));
            }
            Op::CompactMajor => {
                w.pager.pool().compact_major();
            }
            Op::Reclaim => {
                let r = w.pager.reclaim_swap();
                if r.unreadable_records + r.io_errors > 0 {
                    assert!(w.troubled(), "reclaim failed without trouble: {r:?}");
                }
            }
            Op::Damage {
                record,
                offset,
                xor,
            } => {
                let records = w.pager.swap().unwrap().records();
                if records.is_empty() || xor == 0 {
                    continue;
                }
                let r = records[record as usize % records.len()];
                let at = r.offset_bytes + u64::from(offset) % r.len_bytes;
                if w.backing
                    .with_file_mut(r.file, |b| b[at as usize] ^= xor)
                    .is_some()
                {
                    w.damage.push((r.key, r.file, at, xor));
                }
            }
            Op::Repair => w.repair(),
            Op::Fail {
                reads,
                writes,
                allocation,
            } => {
                w.faults = Faults {
                    reads,
                    writes,
                    allocation,
                    deletes: false,
                };
                w.backing.set_faults(w.faults);
            }
        }
        w.check();
    }
    // Repair the device; then every page must read back.
    w.faults = Faults::default();
    w.backing.set_faults(w.faults);
    w.repair();
    for p in 0..PAGES {
        let r = w.fault(p, VmProt::READ).expect("final read");
        let mut buf = vec![0u8; PAGE as usize];
        w.m.memory().read_bytes(r.frame, &mut buf).unwrap();
        assert!(buf == w.expected(p), "final: page {p} reads wrong");
    }
    drop(w.object);
    assert_eq!(w.pager.stats().pool.pages_stored, 0);
    w.pager.reclaim_swap();
    assert!(w.backing.files().is_empty(), "swap files left behind");
});
