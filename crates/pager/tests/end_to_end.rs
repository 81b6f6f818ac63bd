//! End to end: anonymous memory twice as large as the frames available. Every page goes out
//! through the compressor and encrypted swap files in a real directory and comes back intact;
//! swap files appear as usage rises and are reclaimed as it falls; a corrupted swap slot is
//! detected and fails only the faults that need it.
// Host tests: std is the natural choice.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::collections::VecDeque;
use std::sync::Arc;

use common::{PAGE, codec, dyn_memory, key, memory_of, noise, pattern, pool, temp_dir};
use machvm_addr::VmProt;
use machvm_compressor::pool::SegmentSize;
use machvm_pager::{DefaultPager, FsSwapBacking, Swap, SwapConfig};
use machvm_vm_object::{ObjectError, ObjectRef, PagerError, SimPageMemory, VmObject};

type Pager = DefaultPager<FsSwapBacking>;

/// Frames of simulated memory.
const FRAMES: u64 = 48;
/// Pages of the anonymous object: twice the frames.
const PAGES: u64 = 2 * FRAMES;

fn contents(i: u64, generation: u64) -> Vec<u8> {
    let seed = i * 1000 + generation;
    if i % 2 == 0 {
        pattern(seed, PAGE as usize)
    } else {
        noise(seed, PAGE as usize)
    }
}

/// A tiny pageout daemon: pages out the oldest resident page.
struct Daemon {
    resident: VecDeque<u64>,
    evictions: u64,
}

impl Daemon {
    fn evict_one(&mut self, pager: &Arc<Pager>, object: &ObjectRef) {
        let off = self.resident.pop_front().expect("a resident page to evict");
        pager.page_out(object, off).expect("page-out");
        self.evictions += 1;
    }

    /// Faults `off` in for `access`, evicting until a frame is free.
    fn fault(
        &mut self,
        pager: &Arc<Pager>,
        object: &ObjectRef,
        off: u64,
        access: VmProt,
    ) -> Result<machvm_vm_object::ResolvedPage, ObjectError> {
        loop {
            match VmObject::resolve(object, off, access) {
                Ok(page) => {
                    if !self.resident.contains(&off) {
                        self.resident.push_back(off);
                    }
                    return Ok(page);
                }
                Err(ObjectError::NoMemory) => self.evict_one(pager, object),
                Err(e) => return Err(e),
            }
        }
    }
}

fn write(d: &mut Daemon, pager: &Arc<Pager>, m: &SimPageMemory, o: &ObjectRef, i: u64, g: u64) {
    let page = d.fault(pager, o, i * PAGE, VmProt::WRITE).unwrap();
    m.memory().write_bytes(page.frame, &contents(i, g)).unwrap();
}

fn check(d: &mut Daemon, pager: &Arc<Pager>, m: &SimPageMemory, o: &ObjectRef, i: u64, g: u64) {
    let page = d.fault(pager, o, i * PAGE, VmProt::READ).unwrap();
    let mut buf = vec![0u8; PAGE as usize];
    m.memory().read_bytes(page.frame, &mut buf).unwrap();
    assert!(buf == contents(i, g), "page {i} came back different");
}

fn system(dir: &std::path::Path) -> Arc<Pager> {
    let config = SwapConfig::new(SegmentSize::K64)
        .file_slots(1, 2)
        .max_files(32)
        .reclaim_slack_slots(1);
    let swap = Swap::new(FsSwapBacking::new(dir).unwrap(), config, &mut key()).unwrap();
    DefaultPager::new(pool(2), codec(), Some(Arc::new(swap))).unwrap()
}

fn swap_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("swapfile"))
        })
        .count()
}

#[test]
#[cfg_attr(
    miri,
    ignore = "real swap files; thousands of pages through the codecs"
)]
fn twice_the_memory_through_compressor_and_swap() {
    let dir = temp_dir("e2e");
    let m = memory_of(FRAMES * PAGE);
    let pager = system(&dir);
    let object = VmObject::anonymous(PAGES * PAGE, dyn_memory(&m)).unwrap();
    let mut d = Daemon {
        resident: VecDeque::new(),
        evictions: 0,
    };

    // Usage rises: write every page, then push every resident page out too.
    for i in 0..PAGES {
        write(&mut d, &pager, &m, &object, i, 0);
    }
    while !d.resident.is_empty() {
        d.evict_one(&pager, &object);
    }
    assert_eq!(object.page_counts().resident, 0);
    let st = pager.stats();
    assert_eq!(
        st.pool.pages_stored, PAGES,
        "every page is in the compressor or swap"
    );
    assert!(st.pool.segments_swapped >= 3, "{:?}", st.pool);
    let peak_files = swap_files(&dir);
    assert!(peak_files >= 2, "swap files appeared: {peak_files}");
    let usage = pager.swap_usage().unwrap();
    eprintln!("after page-out: {usage}");
    assert!(usage.encrypted && usage.used_bytes > 0);

    // Every page comes back intact (and goes out again as others come in).
    for i in 0..PAGES {
        check(&mut d, &pager, &m, &object, i, 0);
    }
    // Rewrite half the pages, read everything again.
    for i in (0..PAGES).step_by(2) {
        write(&mut d, &pager, &m, &object, i, 1);
    }
    for i in (0..PAGES).rev() {
        check(&mut d, &pager, &m, &object, i, u64::from(i % 2 == 0));
    }
    assert!(d.evictions >= 2 * PAGES);

    // Usage falls: discard three quarters of the object (resident pages are freed, the rest
    // leave the compressor and swap), then reclaim.
    let keep = PAGES / 4;
    object
        .discard_range(keep * PAGE, (PAGES - keep) * PAGE)
        .unwrap();
    d.resident.retain(|off| *off < keep * PAGE);
    while !d.resident.is_empty() {
        d.evict_one(&pager, &object);
    }
    let before = swap_files(&dir);
    let report = pager.reclaim_swap();
    let after = swap_files(&dir);
    eprintln!(
        "reclaim: {report:?}; files {before} -> {after}; {}",
        pager.swap_usage().unwrap()
    );
    assert!(
        after < peak_files,
        "files were reclaimed: {peak_files} -> {after}"
    );
    assert_eq!(pager.swap().unwrap().file_indices().len(), after);
    for i in 0..keep {
        check(&mut d, &pager, &m, &object, i, u64::from(i % 2 == 0));
    }
    // Everything freed: no swap file is left.
    drop(d);
    drop(object);
    assert_eq!(pager.stats().pool.pages_stored, 0);
    pager.reclaim_swap();
    assert_eq!(swap_files(&dir), 0);
    assert_eq!(pager.swap_usage().unwrap().total_bytes, 0);
    drop(pager);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[cfg_attr(miri, ignore = "real swap files")]
fn a_corrupted_swap_slot_fails_only_the_faults_that_need_it() {
    let dir = temp_dir("e2e-corrupt");
    let m = memory_of(FRAMES * PAGE);
    let pager = system(&dir);
    let object = VmObject::anonymous(PAGES * PAGE, dyn_memory(&m)).unwrap();
    let mut d = Daemon {
        resident: VecDeque::new(),
        evictions: 0,
    };
    for i in 0..PAGES {
        write(&mut d, &pager, &m, &object, i, 0);
    }
    while !d.resident.is_empty() {
        d.evict_one(&pager, &object);
    }
    // Damage one byte of the first record on disk.
    let swap = pager.swap().unwrap().clone();
    let rec = swap.records()[0];
    let path = dir.join(format!("swapfile{}", rec.file));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(rec.offset_bytes + rec.len_bytes / 3) as usize] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();

    let mut failed = Vec::new();
    for i in 0..PAGES {
        match d.fault(&pager, &object, i * PAGE, VmProt::READ) {
            Ok(page) => {
                let mut buf = vec![0u8; PAGE as usize];
                m.memory().read_bytes(page.frame, &mut buf).unwrap();
                assert!(buf == contents(i, 0), "page {i} is wrong");
            }
            Err(e) => {
                assert_eq!(e, ObjectError::Pager(PagerError::Io));
                assert_eq!(
                    object.page(i * PAGE).unwrap(),
                    None,
                    "nothing partial visible"
                );
                failed.push(i);
            }
        }
    }
    assert!(!failed.is_empty(), "the damaged segment's pages fail");
    assert!(failed.len() < PAGES as usize / 2, "only those: {failed:?}");
    assert!(pager.stats().swap.unwrap().integrity_failures >= 1);
    // The damaged pages are still held (not lost, not returned): a repaired device reads.
    bytes[(rec.offset_bytes + rec.len_bytes / 3) as usize] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    for i in failed {
        check(&mut d, &pager, &m, &object, i, 0);
    }
    drop(d);
    drop(object);
    drop(pager);
    std::fs::remove_dir_all(&dir).unwrap();
}
