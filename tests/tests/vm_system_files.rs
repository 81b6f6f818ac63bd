//! File mappings and compressed memory on the machine simulator: files mapped shared and
//! private through the vnode pager (the unified buffer cache, copy on write, write-back on
//! page-out and `msync`, read-ahead on the speculative queue), and an over-commit run whose
//! anonymous pages go through the compressor and an encrypted swap and come back intact.

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::sync::Arc;

use machvm::PageoutTargets;
use machvm::compressed::CompressedMemory;
use machvm::sim::SimMachine;
use machvm_addr::{VirtAddr, VmProt};
use machvm_compressor::codec::{Hybrid, PageSize as CPageSize, VectorPolicy};
use machvm_compressor::pool::{PoolConfig, SegmentSize};
use machvm_page_table::X86Pml4;
use machvm_pager::{
    DefaultPager, FixedKey, KEY_MATERIAL_BYTES, MemoryFile, MemorySwapBacking, Swap, SwapConfig,
};
use machvm_vm_map::MapRequest;

const PS: u64 = 4096;
const CPUS: usize = 2;

fn evict_everything(m: &SimMachine<X86Pml4>) {
    m.vm()
        .set_pageout_targets(PageoutTargets::default().with_free_percent(100));
    for _ in 0..4 {
        m.vm().pageout_step(1000);
    }
}

#[test]
fn shared_and_private_file_mappings() {
    let m = SimMachine::<X86Pml4>::new(64, CPUS).expect("machine");
    // 10 pages; page i is filled with i; the last page is half past the end of the file.
    let mut data: Vec<u8> = (0..10 * PS).map(|i| (i / PS) as u8).collect();
    data.truncate((9 * PS + PS / 2) as usize);
    let file = m
        .vm()
        .open_file(MemoryFile::new(data.clone()))
        .expect("open");
    let a = m.create_space().unwrap();
    let b = m.create_space().unwrap();
    let c = m.create_space().unwrap();
    let rw = VmProt::DEFAULT;
    let va = m
        .vm()
        .mmap_file(a, &file, 0, 10 * PS, false, rw)
        .unwrap()
        .as_u64();
    let vb = m
        .vm()
        .mmap_file(b, &file, 0, 10 * PS, false, rw)
        .unwrap()
        .as_u64();
    let vc = m
        .vm()
        .mmap_file(c, &file, 0, 10 * PS, true, rw)
        .unwrap()
        .as_u64();

    // Reads see the file; the tail past the end reads as zeros.
    assert_eq!(m.load(0, a, va + 3 * PS + 7).unwrap(), 3);
    assert_eq!(m.load(1, b, vb + 9 * PS + PS / 2 + 1).unwrap(), 0);
    // Read-ahead brought neighbours in as speculative pages.
    assert!(m.vm().queues().speculative > 0, "{:?}", m.vm().queues());

    // A shared write is seen by the other shared mapping at once (one cache), not by the
    // private one once it has copied...
    m.store(0, c, vc + 2 * PS, 0xcc).unwrap(); // private copy of page 2
    m.store(1, a, va + 2 * PS, 0xaa).unwrap();
    assert_eq!(m.load(0, b, vb + 2 * PS).unwrap(), 0xaa);
    assert_eq!(m.load(1, c, vc + 2 * PS).unwrap(), 0xcc);
    // ...and a private mapping that has not written a page sees the shared writes to it.
    m.store(0, b, vb + 5 * PS + 1, 0x55).unwrap();
    assert_eq!(m.load(0, c, vc + 5 * PS + 1).unwrap(), 0x55);

    // msync writes the shared page back; the private write never reaches the file.
    let written = m.vm().msync(a, VirtAddr::new(va), 10 * PS).unwrap();
    assert!(written >= 1, "{written}");
    let contents = file.file().contents();
    assert_eq!(contents[(2 * PS) as usize], 0xaa);
    assert_eq!(contents.len(), data.len(), "mapping never grows the file");

    // Eviction writes dirty file pages back and drops clean ones; the data comes back.
    m.store(1, b, vb + 7 * PS + 3, 0x77).unwrap();
    evict_everything(&m);
    assert_eq!(
        file.file().contents()[(7 * PS + 3) as usize],
        0x77,
        "written back on page-out"
    );
    assert_eq!(m.load(0, a, va + 7 * PS + 3).unwrap(), 0x77);
    assert_eq!(
        m.load(1, c, vc + 2 * PS).unwrap(),
        0xcc,
        "the private copy survived eviction"
    );
    assert_eq!(m.load(0, c, vc + 4 * PS).unwrap(), 4);
    assert_eq!(file.file().contents()[(2 * PS) as usize], 0xaa);
    assert_eq!(m.tlb().stats().stale_reports, 0);
    for s in [a, b, c] {
        m.destroy_space(s).unwrap();
    }
    drop(file);
    assert_eq!(m.vm().queues().free, 64, "every frame back");
}

#[test]
fn over_commit_through_the_compressor_and_encrypted_swap() {
    // A pool of 2 segments of 64 KiB in core, then an encrypted in-memory swap.
    let mut config = PoolConfig::new(SegmentSize::K64);
    config.max_in_core_segments = 2;
    let mut keys = FixedKey::new(core::array::from_fn::<u8, KEY_MATERIAL_BYTES, _>(|i| {
        i as u8 ^ 0x5a
    }));
    let swap = Swap::new(
        MemorySwapBacking::new(),
        SwapConfig::new(SegmentSize::K64),
        &mut keys,
    )
    .expect("swap");
    let codec = Hybrid::new(CPageSize::Size4K, VectorPolicy::Portable);
    let pager = DefaultPager::new(config, codec, Some(Arc::new(swap))).expect("pager");

    // 64 frames for 256 pages of varied, compressible contents.
    let m = SimMachine::<X86Pml4>::new(64, CPUS).expect("machine");
    m.vm()
        .set_anonymous_pager(Arc::new(CompressedMemory(pager.clone())));
    let s = m.create_space().unwrap();
    let pages = 256u64;
    let base = m
        .vm()
        .mmap(s, MapRequest::anonymous(pages * PS))
        .unwrap()
        .as_u64();
    // Scattered pseudo-random bytes: the pages compress, but not to nothing.
    let byte =
        |p: u64, i: u64| ((p.wrapping_mul(0x9e37_79b9) ^ i.wrapping_mul(0x85eb_ca6b)) >> 7) as u8;
    for p in 0..pages {
        for i in (0..PS).step_by(64) {
            m.store((p % 2) as usize, s, base + p * PS + i, byte(p, i))
                .unwrap();
        }
    }
    for round in 0..2 {
        for p in 0..pages {
            for i in (0..PS).step_by(1024) {
                assert_eq!(
                    m.load(((p + round) % 2) as usize, s, base + p * PS + i)
                        .unwrap(),
                    byte(p, i),
                    "page {p}+{i}"
                );
            }
        }
    }
    let stats = m.vm().pager_stats();
    assert!(stats.compressions >= pages - 64, "{stats:?}");
    assert!(stats.decompressions > 0, "{stats:?}");
    assert!(stats.swapouts > 0, "segments went to swap: {stats:?}");
    assert!(stats.swapins > 0, "and came back: {stats:?}");
    let usage = m.vm().swapusage().expect("a swap");
    assert!(usage.encrypted);
    let line = usage.to_string();
    assert!(
        line.starts_with("vm.swapusage: total = ") && line.ends_with("(encrypted)"),
        "{line}"
    );
    let stat = m.vm().vm_stat().to_string();
    assert!(
        stat.contains(&format!("{:<30}{:>20}.", "Swapouts:", stats.swapouts)),
        "{stat}"
    );
    let pressure = m.vm().memory_pressure().to_string();
    assert!(pressure.contains("Compressor efficiency: "), "{pressure}");
    assert_eq!(m.tlb().stats().stale_reports, 0);
    m.destroy_space(s).unwrap();
    assert_eq!(
        pager.stats().pool.pages_stored,
        0,
        "freeing the object freed its slots"
    );
}
