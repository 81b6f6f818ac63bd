//! The default pager under VM objects: page-out into the compressor, page-in back, slots,
//! swap of whole segments, errors that leave pages where they were.
// Host tests: std is the natural choice.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::sync::Arc;

use common::{
    PAGE, codec, dyn_memory, memory_of, memory_with, noise, pager_with_swap, pager_without_swap,
    pattern, read_page, write_page,
};
use machvm_addr::{PageSize, VmProt};
use machvm_compressor::codec::{Hybrid, PageSize as CodecPageSize, VectorPolicy};
use machvm_compressor::pool::{PoolConfig, SegmentSize};
use machvm_pager::{DefaultPager, Faults, MemoryFile, PagingError, VnodePager, evict};
use machvm_vm_object::{
    FaultKind, MemoryObject, ObjectError, PageIn, PageOutKind, PageOutOutcome, PagerError, VmObject,
};

#[test]
fn page_out_then_fault_restores_the_page_and_frees_its_slot() {
    let m = memory_of(1 << 20);
    let pager = pager_without_swap(8);
    let object = VmObject::anonymous(16 * PAGE, dyn_memory(&m)).unwrap();
    let base = m.memory().frames_in_use();
    for i in 0..16 {
        write_page(&m, &object, i * PAGE, &pattern(i, PAGE as usize)).unwrap();
    }
    for i in 0..16 {
        assert_eq!(
            pager.page_out(&object, i * PAGE),
            Ok(PageOutOutcome::PagedOut)
        );
    }
    assert_eq!(m.memory().frames_in_use(), base, "every frame was freed");
    let cp = object.pager().unwrap();
    assert!(cp.has_page(3 * PAGE));
    assert_eq!(pager.stats().pool.pages_stored, 16);
    assert_eq!(pager.stats().page_outs, 16);
    for i in (0..16).rev() {
        let (bytes, kind) = read_page(&m, &object, i * PAGE).unwrap();
        assert_eq!(kind, FaultKind::PageIn);
        assert_eq!(bytes, pattern(i, PAGE as usize), "page {i}");
    }
    assert!(!cp.has_page(3 * PAGE), "page-in freed the slot");
    let st = pager.stats();
    assert_eq!((st.pool.pages_stored, st.page_ins), (0, 16));
}

#[test]
fn uniform_pages_take_no_segment_space() {
    let m = memory_of(1 << 20);
    let pager = pager_without_swap(4);
    let object = VmObject::anonymous(4 * PAGE, dyn_memory(&m)).unwrap();
    write_page(&m, &object, 0, &[0; PAGE as usize]).unwrap();
    write_page(&m, &object, PAGE, &[0xab; PAGE as usize]).unwrap();
    pager.page_out(&object, 0).unwrap();
    pager.page_out(&object, PAGE).unwrap();
    let st = pager.stats().pool;
    assert_eq!((st.pages_stored, st.single_value_pages), (2, 2));
    assert_eq!(st.compressed_bytes, 0);
    assert_eq!(
        read_page(&m, &object, PAGE).unwrap().0,
        [0xab; PAGE as usize]
    );
}

#[test]
fn discarding_and_destroying_free_slots() {
    let m = memory_of(1 << 20);
    let pager = pager_without_swap(4);
    let object = VmObject::anonymous(4 * PAGE, dyn_memory(&m)).unwrap();
    for i in 0..4 {
        write_page(&m, &object, i * PAGE, &pattern(i + 10, PAGE as usize)).unwrap();
        pager.page_out(&object, i * PAGE).unwrap();
    }
    assert_eq!(object.discard_range(0, 2 * PAGE), Ok(0));
    assert_eq!(pager.stats().pool.pages_stored, 2);
    let (bytes, kind) = read_page(&m, &object, 0).unwrap();
    assert_eq!((kind, bytes), (FaultKind::ZeroFill, vec![0; PAGE as usize]));
    drop(object);
    assert_eq!(
        pager.stats().pool.pages_stored,
        0,
        "terminate freed the rest"
    );
}

#[test]
fn a_page_written_again_replaces_its_slot() {
    let m = memory_of(1 << 20);
    let pager = pager_without_swap(4);
    let object = VmObject::anonymous(2 * PAGE, dyn_memory(&m)).unwrap();
    write_page(&m, &object, 0, &pattern(1, PAGE as usize)).unwrap();
    assert_eq!(object.synchronize(0, PAGE), Err(ObjectError::NoPager));
    let cp = pager.attach(&object).unwrap();
    assert_eq!(
        pager.attach(&object).unwrap_err(),
        PagingError::Object(ObjectError::HasPager)
    );
    // A clean-up (msync of anonymous memory) stores a copy and keeps the page resident.
    write_page(&m, &object, 0, &pattern(2, PAGE as usize)).unwrap();
    assert_eq!(object.synchronize(0, PAGE), Ok(1));
    assert_eq!(cp.slots_in_use(), 1);
    // The page is clean and its pager holds it: page-out drops it without I/O.
    assert_eq!(object.page_out(0), Ok(PageOutOutcome::Dropped));
    assert_eq!(
        read_page(&m, &object, 0).unwrap().0,
        pattern(2, PAGE as usize)
    );
    // Dirtied and paged out again: one slot, the new contents.
    write_page(&m, &object, 0, &pattern(3, PAGE as usize)).unwrap();
    pager.page_out(&object, 0).unwrap();
    write_page(&m, &object, PAGE, &pattern(4, PAGE as usize)).unwrap();
    object.synchronize(PAGE, PAGE).unwrap();
    write_page(&m, &object, PAGE, &pattern(5, PAGE as usize)).unwrap();
    object.synchronize(PAGE, PAGE).unwrap();
    assert_eq!(cp.slots_in_use(), 2);
    assert_eq!(
        pager.stats().pool.pages_stored,
        2,
        "the replaced copy was freed"
    );
    assert_eq!(
        read_page(&m, &object, 0).unwrap().0,
        pattern(3, PAGE as usize)
    );
}

#[test]
#[cfg_attr(miri, ignore = "dozens of pages through the codecs: slow under miri")]
fn a_full_pool_without_swap_refuses_and_keeps_the_page() {
    let m = memory_of(1 << 20);
    let config = PoolConfig::new(SegmentSize::K64)
        .max_in_core_segments(1)
        .max_segments(1);
    let pager =
        DefaultPager::<machvm_pager::MemorySwapBacking>::new(config, codec(), None).unwrap();
    let object = VmObject::anonymous(64 * PAGE, dyn_memory(&m)).unwrap();
    let mut refused = None;
    for i in 0..64 {
        write_page(&m, &object, i * PAGE, &noise(i, PAGE as usize)).unwrap();
        match pager.page_out(&object, i * PAGE) {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(
                    e,
                    PagingError::Object(ObjectError::Pager(PagerError::NoSpace))
                );
                refused = Some(i);
                break;
            }
        }
    }
    let i = refused.expect("a 64 KiB pool cannot hold 64 incompressible pages");
    assert!(
        object.page(i * PAGE).unwrap().is_some(),
        "the page stayed resident"
    );
    assert_eq!(
        read_page(&m, &object, i * PAGE).unwrap().0,
        noise(i, PAGE as usize)
    );
    assert_eq!(pager.stats().page_out_errors, 1);
    for j in 0..i {
        assert_eq!(
            read_page(&m, &object, j * PAGE).unwrap().0,
            noise(j, PAGE as usize)
        );
    }
}

#[test]
#[cfg_attr(miri, ignore = "dozens of pages through the codecs: slow under miri")]
fn at_the_pool_limit_whole_segments_go_to_swap_and_come_back() {
    let m = memory_of(1 << 20);
    let (pager, backing) = pager_with_swap(2, 8);
    let object = VmObject::anonymous(128 * PAGE, dyn_memory(&m)).unwrap();
    for i in 0..128 {
        write_page(&m, &object, i * PAGE, &pattern(i, PAGE as usize)).unwrap();
        pager.page_out(&object, i * PAGE).unwrap();
    }
    let st = pager.stats();
    assert!(st.pool.segments_swapped >= 2, "{st:?}");
    assert!(st.pool.segments_in_core <= 2);
    let swap = st.swap.unwrap();
    assert_eq!(swap.records, st.pool.segments_swapped);
    assert!(!backing.files().is_empty(), "swap files were created");
    let usage = pager.swap_usage().unwrap();
    assert!(usage.encrypted && usage.used_bytes > 0 && usage.used_bytes <= usage.total_bytes);
    for i in 0..128 {
        assert_eq!(
            read_page(&m, &object, i * PAGE).unwrap().0,
            pattern(i, PAGE as usize)
        );
    }
    let st = pager.stats();
    assert_eq!(st.pool.pages_stored, 0);
    assert_eq!(st.swap.unwrap().records, 0, "every record was freed");
    assert!(st.pool.swap_ins >= 2);
    // Usage fell to zero: reclaim deletes the files.
    pager.reclaim_swap();
    assert!(backing.files().is_empty());
}

#[test]
#[cfg_attr(miri, ignore = "dozens of pages through the codecs: slow under miri")]
fn relieve_pressure_swaps_until_below_the_limit() {
    let m = memory_of(1 << 20);
    let (pager, _backing) = pager_with_swap(3, 8);
    pager.set_proactive_swap(false);
    let object = VmObject::anonymous(96 * PAGE, dyn_memory(&m)).unwrap();
    for i in 0..96 {
        write_page(&m, &object, i * PAGE, &pattern(i, PAGE as usize)).unwrap();
        pager.page_out(&object, i * PAGE).unwrap();
    }
    let before = pager.stats().pool.segments_in_core;
    assert_eq!(before, 3);
    let n = pager.relieve_pressure().unwrap();
    assert!(n >= 1);
    assert_eq!(pager.stats().pool.segments_in_core, before - u64::from(n));
    assert_eq!(
        pager.pool().pressure(),
        machvm_compressor::PoolPressure::Normal
    );
}

#[test]
#[cfg_attr(miri, ignore = "dozens of pages through the codecs: slow under miri")]
fn a_swap_write_error_leaves_the_page_resident() {
    let m = memory_of(1 << 20);
    let (pager, backing) = pager_with_swap(2, 4);
    let object = VmObject::anonymous(64 * PAGE, dyn_memory(&m)).unwrap();
    backing.set_faults(Faults {
        writes: true,
        ..Faults::default()
    });
    let mut failed = None;
    for i in 0..64 {
        write_page(&m, &object, i * PAGE, &noise(i, PAGE as usize)).unwrap();
        if let Err(e) = pager.page_out(&object, i * PAGE) {
            assert!(
                matches!(e, PagingError::Object(ObjectError::Pager(_))),
                "{e:?}"
            );
            failed = Some(i);
            break;
        }
    }
    let i = failed.expect("two in-core segments cannot hold 64 noise pages");
    assert!(object.page(i * PAGE).unwrap().is_some());
    backing.set_faults(Faults::default());
    pager.page_out(&object, i * PAGE).unwrap();
    for j in 0..=i {
        assert_eq!(
            read_page(&m, &object, j * PAGE).unwrap().0,
            noise(j, PAGE as usize)
        );
    }
}

#[test]
#[cfg_attr(miri, ignore = "dozens of pages through the codecs: slow under miri")]
fn a_swap_read_error_fails_the_fault_and_keeps_the_page_in_swap() {
    let m = memory_of(1 << 20);
    let (pager, backing) = pager_with_swap(2, 8);
    let object = VmObject::anonymous(64 * PAGE, dyn_memory(&m)).unwrap();
    for i in 0..64 {
        write_page(&m, &object, i * PAGE, &pattern(i, PAGE as usize)).unwrap();
        pager.page_out(&object, i * PAGE).unwrap();
    }
    assert!(pager.stats().pool.segments_swapped > 0);
    backing.set_faults(Faults {
        reads: true,
        ..Faults::default()
    });
    // Page 0 went out first: its segment is on disk.
    let frames = m.memory().frames_in_use();
    assert_eq!(
        VmObject::resolve(&object, 0, VmProt::READ).unwrap_err(),
        ObjectError::Pager(PagerError::Io)
    );
    assert_eq!(object.page(0).unwrap(), None, "no partial page is visible");
    assert_eq!(m.memory().frames_in_use(), frames);
    assert!(
        object.pager().unwrap().has_page(0),
        "the page is still in swap"
    );
    assert_eq!(pager.stats().page_in_errors, 1);
    backing.set_faults(Faults::default());
    assert_eq!(
        read_page(&m, &object, 0).unwrap().0,
        pattern(0, PAGE as usize)
    );
}

#[test]
#[cfg_attr(miri, ignore = "dozens of pages through the codecs: slow under miri")]
fn a_corrupted_swap_record_is_reported_never_returned() {
    let m = memory_of(1 << 20);
    let (pager, backing) = pager_with_swap(2, 8);
    let object = VmObject::anonymous(64 * PAGE, dyn_memory(&m)).unwrap();
    for i in 0..64 {
        write_page(&m, &object, i * PAGE, &pattern(i, PAGE as usize)).unwrap();
        pager.page_out(&object, i * PAGE).unwrap();
    }
    let swap = pager.swap().unwrap().clone();
    let first = swap.records()[0];
    backing
        .with_file_mut(first.file, |bytes| {
            bytes[(first.offset_bytes + 700) as usize] ^= 0x40;
        })
        .unwrap();
    // Which pages live in the damaged record: find them by faulting each.
    let mut damaged = 0;
    for i in 0..64 {
        match read_page(&m, &object, i * PAGE) {
            Ok((bytes, _)) => assert_eq!(bytes, pattern(i, PAGE as usize)),
            Err(e) => {
                assert_eq!(e, ObjectError::Pager(PagerError::Io));
                assert_eq!(object.page(i * PAGE).unwrap(), None);
                damaged += 1;
            }
        }
    }
    assert!(damaged > 0);
    assert!(pager.stats().swap.unwrap().integrity_failures >= 1);
}

#[test]
fn attach_checks_the_object() {
    let m = memory_of(1 << 20);
    let pager = pager_without_swap(2);
    let vnode = VnodePager::new(MemoryFile::new(vec![1; 4096]), dyn_memory(&m)).unwrap();
    let file = vnode.object().unwrap();
    assert_eq!(
        pager.attach(&file).unwrap_err(),
        PagingError::WrongObjectKind
    );
    assert_eq!(
        pager.page_out(&file, 0).unwrap_err(),
        PagingError::WrongObjectKind
    );
    let m16 = memory_with(1 << 20, PageSize::Size16KiB);
    let big = VmObject::anonymous(16384, dyn_memory(&m16)).unwrap();
    assert_eq!(
        pager.attach(&big).unwrap_err(),
        PagingError::PageSizeMismatch {
            expected: 4096,
            actual: 16384
        }
    );
    // evict needs a pager.
    let anon = VmObject::anonymous(PAGE, dyn_memory(&m)).unwrap();
    assert_eq!(
        evict(&anon, 1).unwrap_err(),
        PagingError::Object(ObjectError::NoPager)
    );
}

#[test]
#[cfg_attr(miri, ignore = "dozens of pages through the codecs: slow under miri")]
fn sixteen_kib_pages_go_through_a_sixteen_kib_pool() {
    let m = memory_with(4 << 20, PageSize::Size16KiB);
    let codec = Hybrid::new(CodecPageSize::Size16K, VectorPolicy::Portable);
    let config = PoolConfig::new(SegmentSize::K256).max_in_core_segments(4);
    let pager = DefaultPager::<machvm_pager::MemorySwapBacking>::new(config, codec, None).unwrap();
    assert_eq!(pager.page_size(), 16384);
    let object = VmObject::anonymous(8 * 16384, dyn_memory(&m)).unwrap();
    for i in 0..8 {
        write_page(&m, &object, i * 16384, &pattern(i, 16384)).unwrap();
        pager.page_out(&object, i * 16384).unwrap();
    }
    for i in 0..8 {
        assert_eq!(
            read_page(&m, &object, i * 16384).unwrap().0,
            pattern(i, 16384)
        );
    }
}

#[test]
fn slot_maps_stay_compact() {
    let m = memory_of(1 << 20);
    let pager = pager_without_swap(2);
    let small = VmObject::anonymous(2 * PAGE, dyn_memory(&m)).unwrap();
    write_page(&m, &small, PAGE, &pattern(1, PAGE as usize)).unwrap();
    pager.page_out(&small, PAGE).unwrap();
    let cp = pager
        .attach(&VmObject::anonymous(PAGE, dyn_memory(&m)).unwrap())
        .unwrap();
    assert_eq!(cp.slot_map_allocations(), 0);

    let large = VmObject::anonymous(1000 * PAGE, dyn_memory(&m)).unwrap();
    let cp = pager.attach(&large).unwrap();
    write_page(&m, &large, 700 * PAGE, &pattern(2, PAGE as usize)).unwrap();
    large.page_out(700 * PAGE).unwrap();
    assert_eq!((cp.slots_in_use(), cp.slot_map_allocations()), (1, 1));
    read_page(&m, &large, 700 * PAGE).unwrap();
    assert_eq!((cp.slots_in_use(), cp.slot_map_allocations()), (0, 0));
}

#[test]
fn the_pager_protocol_checks_its_arguments() {
    let m = memory_of(1 << 20);
    let pager = pager_without_swap(2);
    let object = VmObject::anonymous(2 * PAGE, dyn_memory(&m)).unwrap();
    let cp = pager.attach(&object).unwrap();
    let mut page = vec![0u8; PAGE as usize];
    assert_eq!(
        cp.data_request(2 * PAGE, &mut page, VmProt::READ),
        Err(PagerError::OutOfRange)
    );
    assert_eq!(
        cp.data_request(1, &mut page, VmProt::READ),
        Err(PagerError::OutOfRange)
    );
    assert_eq!(
        cp.data_request(0, &mut page[..100], VmProt::READ),
        Err(PagerError::OutOfRange)
    );
    assert_eq!(
        cp.data_request(0, &mut page, VmProt::READ),
        Ok(PageIn::Absent)
    );
    assert_eq!(cp.data_return(PAGE, &page, PageOutKind::Evict), Ok(()));
    assert_eq!(cp.slots_in_use(), 1);
    cp.terminate();
    assert_eq!(cp.slots_in_use(), 0);
    assert_eq!(pager.stats().pool.pages_stored, 0);
    assert_eq!(
        cp.data_return(0, &page, PageOutKind::Evict),
        Err(PagerError::Terminated)
    );
}

#[test]
#[cfg_attr(miri, ignore = "dozens of pages through the codecs: slow under miri")]
fn concurrent_faults_and_page_outs_keep_every_page() {
    // Four threads each own a quarter of the object: write, page out, read back, many times.
    let m = memory_of(4 << 20);
    let (pager, _backing) = pager_with_swap(2, 16);
    let object = VmObject::anonymous(64 * PAGE, dyn_memory(&m)).unwrap();
    let rounds = 6;
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (m, pager, object) = (m.clone(), pager.clone(), object.clone());
            s.spawn(move || {
                for r in 0..rounds {
                    for i in (t * 16)..(t * 16 + 16) {
                        let seed = i * 100 + r;
                        write_page(&m, &object, i * PAGE, &pattern(seed, PAGE as usize)).unwrap();
                        pager.page_out(&object, i * PAGE).unwrap();
                    }
                    for i in (t * 16)..(t * 16 + 16) {
                        let seed = i * 100 + r;
                        let (bytes, _) = read_page(&m, &object, i * PAGE).unwrap();
                        assert_eq!(bytes, pattern(seed, PAGE as usize));
                    }
                }
            });
        }
    });
    assert_eq!(pager.stats().pool.pages_stored, 0);
    let _ = Arc::strong_count(&pager);
}
