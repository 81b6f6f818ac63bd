//! Behaviour of VM objects: faults, shadows, copies, collapse, pagers, purging, wiring.
// Host tests: std is the natural choice.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::sync::Arc;

use common::{PAGE, dyn_memory, frames, memory, read, write};
use machvm_addr::{PhysAddr, VmProt};
use machvm_vm_object::{
    CopyResult, CopyStrategy, FaultKind, InMemoryPager, MemoryObject, ObjectError, PageFlags,
    PageMemory, PageOutOutcome, PagerError, PurgeableState, VmObject,
};

#[test]
fn first_touch_zero_fills_and_later_touches_find_the_page() {
    let m = memory();
    let o = VmObject::anonymous(8 * PAGE, dyn_memory(&m)).unwrap();
    assert_eq!(read(&m, &o, 2 * PAGE), 0);
    assert_eq!(o.page_counts().resident, 1);
    assert_eq!(write(&m, &o, 2 * PAGE, 7), FaultKind::Resident);
    assert_eq!(read(&m, &o, 2 * PAGE), 7);
    assert_eq!(write(&m, &o, 3 * PAGE, 9), FaultKind::ZeroFill);
    let counts = o.page_counts();
    assert_eq!((counts.resident, counts.dirty), (2, 2));
}

#[test]
fn a_shadow_reads_its_backing_until_it_writes() {
    let m = memory();
    let parent = VmObject::anonymous(4 * PAGE, dyn_memory(&m)).unwrap();
    write(&m, &parent, 0, 1);
    write(&m, &parent, PAGE, 2);
    let child = VmObject::shadow_of(&parent, 0, 4 * PAGE).unwrap();
    let shared = VmObject::resolve(&child, 0, VmProt::READ).unwrap();
    assert_eq!((shared.depth, shared.writable), (1, false));
    assert_eq!(read(&m, &child, 0), 1);
    assert_eq!(write(&m, &child, 0, 10), FaultKind::CopyOnWrite);
    assert_eq!(read(&m, &child, 0), 10);
    assert_eq!(read(&m, &parent, 0), 1, "the parent keeps its page");
    assert_eq!(read(&m, &child, PAGE), 2);
    // A page nobody has: zero-filled in the shadow, not in the backing object.
    assert_eq!(write(&m, &child, 3 * PAGE, 3), FaultKind::ZeroFill);
    assert_eq!(parent.page(3 * PAGE).unwrap(), None);
}

#[test]
fn a_shadow_window_is_offset_into_its_backing() {
    let m = memory();
    let parent = VmObject::anonymous(8 * PAGE, dyn_memory(&m)).unwrap();
    write(&m, &parent, 5 * PAGE, 55);
    let child = VmObject::shadow_of(&parent, 4 * PAGE, 4 * PAGE).unwrap();
    assert_eq!(read(&m, &child, PAGE), 55);
    assert_eq!(
        VmObject::shadow_of(&parent, 6 * PAGE, 4 * PAGE).unwrap_err(),
        ObjectError::OutOfRange { offset: 6 * PAGE }
    );
    assert_eq!(
        VmObject::resolve(&child, 4 * PAGE, VmProt::READ).unwrap_err(),
        ObjectError::OutOfRange { offset: 4 * PAGE }
    );
    assert_eq!(
        VmObject::resolve(&child, 1, VmProt::READ).unwrap_err(),
        ObjectError::Unaligned { offset: 1 }
    );
}

#[test]
fn symmetric_copy_shares_the_object() {
    let m = memory();
    let o = VmObject::anonymous(4 * PAGE, dyn_memory(&m)).unwrap();
    match VmObject::copy(&o, PAGE, 2 * PAGE).unwrap() {
        CopyResult::Symmetric { object, offset } => {
            assert!(Arc::ptr_eq(&object, &o));
            assert_eq!(offset, PAGE);
        }
        other => panic!("expected a symmetric copy, got {other:?}"),
    }
}

#[test]
fn delayed_copy_keeps_the_old_contents_when_the_source_is_written() {
    let m = memory();
    let src = VmObject::builder(4 * PAGE, dyn_memory(&m))
        .strategy(CopyStrategy::Delay)
        .build()
        .unwrap();
    write(&m, &src, 0, 1);
    let CopyResult::Delayed { object: copy, .. } = VmObject::copy(&src, 0, 4 * PAGE).unwrap()
    else {
        panic!("expected a delayed copy");
    };
    // A read of the source right after the copy must not be writable (the copy needs a push
    // first).
    assert!(!VmObject::resolve(&src, 0, VmProt::READ).unwrap().writable);
    write(&m, &src, 0, 2);
    write(&m, &src, PAGE, 3); // zero-filled after the copy: the copy keeps zeros
    assert_eq!(read(&m, &copy, 0), 1);
    assert_eq!(read(&m, &copy, PAGE), 0);
    assert_eq!(read(&m, &src, 0), 2);
    // A second copy sees the new contents; the first still sees the old ones.
    let CopyResult::Delayed { object: copy2, .. } = VmObject::copy(&src, 0, 4 * PAGE).unwrap()
    else {
        panic!("expected a delayed copy");
    };
    write(&m, &src, 0, 4);
    assert_eq!(read(&m, &copy2, 0), 2);
    assert_eq!(read(&m, &copy, 0), 1);
    assert_eq!(read(&m, &copy, PAGE), 0);
    assert_eq!(read(&m, &copy2, PAGE), 3);
}

#[test]
fn delayed_copy_of_a_file_object_pushes_paged_in_pages() {
    let m = memory();
    let pager = Arc::new(InMemoryPager::file());
    pager.store(0, &[5; PAGE as usize]);
    let file = VmObject::with_pager(2 * PAGE, pager.clone(), dyn_memory(&m)).unwrap();
    let CopyResult::Delayed {
        object: private, ..
    } = VmObject::copy(&file, 0, 2 * PAGE).unwrap()
    else {
        panic!("file objects copy delayed");
    };
    // Writing the file's page (a shared mapping) first pages it in, then pushes it.
    assert_eq!(write(&m, &file, 0, 6), FaultKind::PageIn);
    assert_eq!(read(&m, &private, 0), 5);
    assert_eq!(read(&m, &file, 0), 6);
    // A hole of the file reads as zeros.
    assert_eq!(read(&m, &file, PAGE), 0);
}

#[test]
fn eager_copy_copies_every_page_with_contents() {
    let m = memory();
    let o = VmObject::builder(4 * PAGE, dyn_memory(&m))
        .strategy(CopyStrategy::None)
        .build()
        .unwrap();
    write(&m, &o, PAGE, 1);
    write(&m, &o, 2 * PAGE, 2);
    let CopyResult::Copied { object: copy } = VmObject::copy(&o, PAGE, 2 * PAGE).unwrap() else {
        panic!("expected an eager copy");
    };
    assert_eq!(copy.page_counts().resident, 2);
    write(&m, &o, PAGE, 9);
    assert_eq!(read(&m, &copy, 0), 1);
    assert_eq!(read(&m, &copy, PAGE), 2);
}

#[test]
fn collapse_merges_a_backing_object_held_only_by_its_shadow() {
    let m = memory();
    let before = frames(&m);
    let base = VmObject::anonymous(4 * PAGE, dyn_memory(&m)).unwrap();
    write(&m, &base, 0, 1);
    write(&m, &base, PAGE, 2);
    let mid = VmObject::shadow_of(&base, 0, 4 * PAGE).unwrap();
    drop(base);
    write(&m, &mid, 0, 3);
    let top = VmObject::shadow_of(&mid, 0, 4 * PAGE).unwrap();
    drop(mid);
    write(&m, &top, PAGE, 4);
    assert_eq!(top.shadow_depth(), 2);
    let stats = VmObject::collapse(&top).unwrap();
    assert_eq!(top.shadow_depth(), 0);
    assert_eq!(stats.collapsed, 2);
    // mid's page 0 moved up; base's page 0 was hidden by it and freed; base's page 1 was
    // hidden by top's.
    assert_eq!(stats.pages_moved, 1);
    assert_eq!(stats.pages_freed, 2);
    assert_eq!(read(&m, &top, 0), 3);
    assert_eq!(read(&m, &top, PAGE), 4);
    assert_eq!(top.page_counts().resident, 2);
    drop(top);
    assert_eq!(frames(&m), before, "every frame was returned");
}

#[test]
fn collapse_bypasses_a_shared_backing_object_that_shows_nothing() {
    let m = memory();
    let base = VmObject::anonymous(2 * PAGE, dyn_memory(&m)).unwrap();
    write(&m, &base, 0, 1);
    let mid = VmObject::shadow_of(&base, 0, 2 * PAGE).unwrap();
    write(&m, &mid, PAGE, 2);
    let top = VmObject::shadow_of(&mid, 0, 2 * PAGE).unwrap();
    // `mid` is still referenced here, so it cannot be merged; its only page is visible, so
    // it cannot be bypassed either.
    assert_eq!(VmObject::collapse(&top).unwrap().bypassed, 0);
    write(&m, &top, PAGE, 3);
    let stats = VmObject::collapse(&top).unwrap();
    assert_eq!(stats.bypassed, 1);
    assert!(Arc::ptr_eq(&top.shadow().unwrap().object, &base));
    assert_eq!(read(&m, &top, 0), 1);
    assert_eq!(read(&m, &top, PAGE), 3);
    assert_eq!(read(&m, &mid, PAGE), 2);
    assert_eq!(
        VmObject::collapse(&base).unwrap_err(),
        ObjectError::NoShadow
    );
}

#[test]
fn collapse_leaves_a_live_delayed_copy_in_place() {
    let m = memory();
    let src = VmObject::builder(PAGE, dyn_memory(&m))
        .strategy(CopyStrategy::Delay)
        .build()
        .unwrap();
    write(&m, &src, 0, 1);
    let CopyResult::Delayed { object: copy, .. } = VmObject::copy(&src, 0, PAGE).unwrap() else {
        panic!("delayed");
    };
    let top = VmObject::shadow_of(&copy, 0, PAGE).unwrap();
    drop(copy);
    assert_eq!(VmObject::collapse(&top).unwrap().collapsed, 0);
    write(&m, &src, 0, 2);
    assert_eq!(read(&m, &top, 0), 1);
}

#[test]
fn page_out_and_page_in_round_trip_through_the_pager() {
    let m = memory();
    let pager = Arc::new(InMemoryPager::new());
    let o = VmObject::anonymous(2 * PAGE, dyn_memory(&m)).unwrap();
    assert_eq!(o.page_out(0).unwrap_err(), ObjectError::NoPager);
    o.set_pager(pager.clone()).unwrap();
    assert_eq!(
        o.set_pager(pager.clone()).unwrap_err(),
        ObjectError::HasPager
    );
    write(&m, &o, 0, 42);
    let in_use = frames(&m);
    assert_eq!(o.page_out(0).unwrap(), PageOutOutcome::PagedOut);
    assert_eq!(frames(&m), in_use - 1);
    assert_eq!(o.page(0).unwrap(), None);
    assert_eq!(pager.stored(0).unwrap()[0], 42);
    assert_eq!(
        VmObject::resolve(&o, 0, VmProt::READ).unwrap().kind,
        FaultKind::PageIn
    );
    assert_eq!(read(&m, &o, 0), 42);
    // Clean now, and the pager has it: a second page-out needs no I/O.
    o.update_page(0, PageFlags::empty(), PageFlags::DIRTY)
        .unwrap();
    assert_eq!(o.page_out(0).unwrap(), PageOutOutcome::Dropped);
    assert_eq!(pager.counters().returns, 1);
    // A page the pager never saw is still zero-filled.
    assert_eq!(read(&m, &o, PAGE), 0);
}

#[test]
fn a_failing_pager_leaves_no_page_behind() {
    let m = memory();
    let pager = Arc::new(InMemoryPager::file());
    pager.store(0, &[1; PAGE as usize]);
    let o = VmObject::with_pager(PAGE, pager.clone(), dyn_memory(&m)).unwrap();
    pager.fail_requests(true);
    let in_use = frames(&m);
    assert_eq!(
        VmObject::resolve(&o, 0, VmProt::READ).unwrap_err(),
        ObjectError::Pager(PagerError::Io)
    );
    assert_eq!(o.page(0).unwrap(), None);
    assert_eq!(frames(&m), in_use);
    pager.fail_requests(false);
    assert_eq!(read(&m, &o, 0), 1);
    // A failed page-out keeps the page resident and dirty.
    write(&m, &o, 0, 2);
    pager.fail_returns(true);
    assert_eq!(
        o.page_out(0).unwrap_err(),
        ObjectError::Pager(PagerError::NoSpace)
    );
    let page = o.page(0).unwrap().unwrap();
    assert!(page.flags.contains(PageFlags::DIRTY) && !page.is_busy());
    assert_eq!(read(&m, &o, 0), 2);
}

#[test]
fn synchronize_writes_dirty_pages_back_and_cleans_them() {
    let m = memory();
    let pager = Arc::new(InMemoryPager::file());
    let o = VmObject::with_pager(4 * PAGE, pager.clone(), dyn_memory(&m)).unwrap();
    write(&m, &o, 0, 1);
    write(&m, &o, 2 * PAGE, 3);
    read(&m, &o, PAGE);
    assert_eq!(o.synchronize(0, 4 * PAGE).unwrap(), 2);
    assert_eq!(pager.stored(2 * PAGE).unwrap()[0], 3);
    assert_eq!(o.page_counts().dirty, 0);
    assert_eq!(o.synchronize(0, 4 * PAGE).unwrap(), 0);
    assert_eq!(pager.counters().syncs, 2);
    assert_eq!(
        o.synchronize(0, 5 * PAGE).unwrap_err(),
        ObjectError::OutOfRange { offset: 5 * PAGE }
    );
}

#[test]
fn purging_empties_a_volatile_object() {
    let m = memory();
    let o = VmObject::builder(2 * PAGE, dyn_memory(&m))
        .purgeable()
        .build()
        .unwrap();
    write(&m, &o, 0, 1);
    write(&m, &o, PAGE, 2);
    assert_eq!(o.purge().unwrap(), 0, "non-volatile objects are not purged");
    assert_eq!(
        o.set_purgeable(PurgeableState::Volatile).unwrap(),
        PurgeableState::NonVolatile
    );
    let in_use = frames(&m);
    assert_eq!(o.purge().unwrap(), 2);
    assert_eq!(frames(&m), in_use - 2);
    assert_eq!(o.purgeable_state(), Some(PurgeableState::Empty));
    assert_eq!(
        VmObject::resolve(&o, 0, VmProt::READ).unwrap_err(),
        ObjectError::Purged
    );
    o.set_purgeable(PurgeableState::NonVolatile).unwrap();
    assert_eq!(read(&m, &o, 0), 0);
    let plain = VmObject::anonymous(PAGE, dyn_memory(&m)).unwrap();
    assert_eq!(plain.purge().unwrap_err(), ObjectError::NotPurgeable);
}

#[test]
fn wired_pages_stay_until_unwired() {
    let m = memory();
    let pager = Arc::new(InMemoryPager::new());
    let o = VmObject::anonymous(PAGE, dyn_memory(&m)).unwrap();
    o.set_pager(pager).unwrap();
    write(&m, &o, 0, 1);
    o.wire_page(0).unwrap();
    o.wire_page(0).unwrap();
    assert_eq!(o.page_counts().wired, 1);
    assert_eq!(
        o.page_out(0).unwrap_err(),
        ObjectError::PageWired { offset: 0 }
    );
    assert_eq!(
        o.free_page(0).unwrap_err(),
        ObjectError::PageWired { offset: 0 }
    );
    o.unwire_page(0).unwrap();
    o.unwire_page(0).unwrap();
    assert_eq!(
        o.unwire_page(0).unwrap_err(),
        ObjectError::NotWired { offset: 0 }
    );
    assert_eq!(o.page_counts().wired, 0);
    o.free_page(0).unwrap();
    assert_eq!(
        o.wire_page(0).unwrap_err(),
        ObjectError::NotResident { offset: 0 }
    );
}

#[test]
fn page_table_operations_check_their_offsets() {
    let m = memory();
    let o = VmObject::anonymous(2 * PAGE, dyn_memory(&m)).unwrap();
    let frame = m.alloc_page().unwrap();
    assert_eq!(
        o.insert_page(3, frame, PageFlags::empty()).unwrap_err(),
        ObjectError::Unaligned { offset: 3 }
    );
    assert_eq!(
        o.insert_page(2 * PAGE, frame, PageFlags::empty())
            .unwrap_err(),
        ObjectError::OutOfRange { offset: 2 * PAGE }
    );
    o.insert_page(PAGE, frame, PageFlags::DIRTY).unwrap();
    assert_eq!(
        o.insert_page(PAGE, PhysAddr::new(0x1000), PageFlags::empty())
            .unwrap_err(),
        ObjectError::AlreadyResident { offset: PAGE }
    );
    // BUSY and ABSENT cannot be set from outside.
    let page = o
        .update_page(
            PAGE,
            PageFlags::BUSY | PageFlags::PRECIOUS,
            PageFlags::DIRTY,
        )
        .unwrap();
    assert_eq!(page.flags, PageFlags::PRECIOUS);
    assert_eq!(o.remove_page(PAGE).unwrap().frame, frame);
    m.free_page(frame);
    assert_eq!(
        o.remove_page(PAGE).unwrap_err(),
        ObjectError::NotResident { offset: PAGE }
    );
    assert_eq!(
        VmObject::anonymous(PAGE + 1, dyn_memory(&m)).unwrap_err(),
        ObjectError::BadSize
    );
    assert_eq!(
        VmObject::anonymous(0, dyn_memory(&m)).unwrap_err(),
        ObjectError::BadSize
    );
}

#[test]
fn dropping_objects_returns_frames_and_terminates_pagers() {
    let m = memory();
    let before = frames(&m);
    let pager = Arc::new(InMemoryPager::file());
    {
        let file = VmObject::with_pager(4 * PAGE, pager.clone(), dyn_memory(&m)).unwrap();
        let anon = VmObject::shadow_of(&file, 0, 4 * PAGE).unwrap();
        for i in 0..4 {
            write(&m, &anon, i * PAGE, 1);
            read(&m, &file, i * PAGE);
        }
        assert!(frames(&m) > before);
    }
    assert_eq!(frames(&m), before);
    assert!(pager.counters().terminated);
}

#[test]
fn a_long_chain_drops_without_recursing() {
    let m = memory();
    let mut top = VmObject::anonymous(PAGE, dyn_memory(&m)).unwrap();
    let depth = if cfg!(miri) { 500 } else { 100_000 };
    for _ in 0..depth {
        top = VmObject::shadow_of(&top, 0, PAGE).unwrap();
    }
    assert_eq!(top.shadow_depth(), depth);
    drop(top);
}

#[test]
fn discard_range_frees_pages_and_pager_copies() {
    let m = memory();
    let pager = Arc::new(InMemoryPager::new());
    let o = VmObject::anonymous(4 * PAGE, dyn_memory(&m)).unwrap();
    o.set_pager(pager.clone()).unwrap();
    write(&m, &o, 0, 1);
    write(&m, &o, PAGE, 2);
    o.page_out(PAGE).unwrap();
    assert!(pager.has_page(PAGE));
    assert_eq!(o.discard_range(0, 2 * PAGE).unwrap(), 1);
    assert!(!pager.has_page(PAGE));
    assert_eq!(read(&m, &o, 0), 0);
    assert_eq!(read(&m, &o, PAGE), 0);
}
