//! Copy-on-write and sharing scenarios (after XNU's fork / COW tests): fork then write on
//! both sides, fork chains with collapse, protect during COW, wired + copy, share, delayed
//! and eager copy strategies, pager-backed private mappings.

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::sync::{Arc, Mutex};

use common::{BASE, PS, map, memory, pmap, read, write};
use machvm_addr::{VirtAddr, VmProt};
use machvm_vm_map::{FaultError, FaultKind, Inheritance, Location, MapRequest, ShareMode, VmTag};
use machvm_vm_object::{CopyStrategy, MemoryObject, PageIn, PageOutKind, PagerError, VmObject};

#[test]
fn fork_then_write_in_parent_and_child_each_sees_its_own() {
    let mem = memory(1 << 22);
    let mut parent = map(&mem, 256);
    let at = parent
        .enter(MapRequest::anonymous(4 * PS))
        .unwrap()
        .as_u64();
    for i in 0..4 {
        write(&mut parent, &mem, at + i * PS, 10 + i as u8).unwrap();
    }
    let mut child = parent.fork(pmap()).unwrap();
    // Parent lost write on its translations; the entry is needs-copy on both sides.
    let t = parent.pmap().translate(VirtAddr::new(at)).unwrap();
    assert!(!t.prot.contains(VmProt::WRITE));
    assert!(parent.lookup(VirtAddr::new(at)).unwrap().needs_copy());
    assert!(child.lookup(VirtAddr::new(at)).unwrap().needs_copy());

    write(&mut parent, &mem, at, 99).unwrap();
    write(&mut child, &mem, at + PS, 77).unwrap();
    assert_eq!(read(&mut parent, &mem, at).unwrap(), 99);
    assert_eq!(read(&mut child, &mem, at).unwrap(), 10);
    assert_eq!(read(&mut parent, &mem, at + PS).unwrap(), 11);
    assert_eq!(read(&mut child, &mem, at + PS).unwrap(), 77);
    assert_eq!(read(&mut child, &mem, at + 3 * PS).unwrap(), 13);
    assert!(parent.stats().cow >= 1);
    assert!(child.stats().cow >= 1);
    assert_eq!(
        parent.region(VirtAddr::new(at)).unwrap().share_mode,
        ShareMode::Cow
    );
}

#[test]
fn fork_chains_collapse_and_stay_short() {
    let mem = memory(1 << 23);
    let mut parent = map(&mem, 256);
    let at = parent
        .enter(MapRequest::anonymous(8 * PS))
        .unwrap()
        .as_u64();
    for i in 0..8 {
        write(&mut parent, &mem, at + i * PS, i as u8).unwrap();
    }
    // Many generations: fork, both write, the child exits.
    for generation in 0..20u8 {
        let mut child = parent.fork(pmap()).unwrap();
        let page = u64::from(generation % 8);
        write(&mut child, &mem, at + page * PS, 200).unwrap();
        write(&mut parent, &mem, at + page * PS, 100 + generation).unwrap();
        // A grandchild (fork of a fork) sees the child's state.
        let mut grandchild = child.fork(pmap()).unwrap();
        assert_eq!(read(&mut grandchild, &mem, at + page * PS).unwrap(), 200);
        drop(child);
        write(&mut grandchild, &mem, at, 1).unwrap();
        drop(grandchild);
        // Another write after the children died lets the parent collapse its chain.
        write(&mut parent, &mem, at + ((page + 1) % 8) * PS, 50).unwrap();
        let entry = parent.lookup(VirtAddr::new(at)).unwrap();
        let object = entry.object().clone();
        if object.shadow().is_some() {
            let _ = VmObject::collapse(&object);
        }
        assert!(
            object.shadow_depth() <= 1,
            "generation {generation}: chain depth {}",
            object.shadow_depth()
        );
    }
    // Contents survived every collapse.
    let mut expect = [0u8, 1, 2, 3, 4, 5, 6, 7];
    for generation in 0..20u8 {
        let page = usize::from(generation % 8);
        expect[page] = 100 + generation;
        expect[(page + 1) % 8] = 50;
    }
    for (i, v) in expect.iter().enumerate() {
        assert_eq!(read(&mut parent, &mem, at + i as u64 * PS).unwrap(), *v);
    }
    drop(parent);
    assert_eq!(mem.memory().frames_in_use(), 0, "frames leaked");
}

#[test]
fn protect_during_cow() {
    let mem = memory(1 << 22);
    let mut parent = map(&mem, 256);
    let at = parent
        .enter(MapRequest::anonymous(2 * PS))
        .unwrap()
        .as_u64();
    write(&mut parent, &mem, at, 5).unwrap();
    let mut child = parent.fork(pmap()).unwrap();
    parent
        .protect(VirtAddr::new(at), 2 * PS, VmProt::READ)
        .unwrap();
    assert!(matches!(
        write(&mut parent, &mem, at, 6),
        Err(FaultError::Protection { .. })
    ));
    assert_eq!(parent.stats().protection_faults, 1);
    assert_eq!(read(&mut parent, &mem, at).unwrap(), 5);
    parent
        .protect(VirtAddr::new(at), 2 * PS, VmProt::DEFAULT)
        .unwrap();
    write(&mut parent, &mem, at, 6).unwrap();
    assert_eq!(read(&mut child, &mem, at).unwrap(), 5);
    // Lowering the maximum clips the current protection and forbids raising it again.
    child
        .set_max_protection(VirtAddr::new(at), PS, VmProt::READ)
        .unwrap();
    assert!(
        child
            .protect(VirtAddr::new(at), PS, VmProt::DEFAULT)
            .is_err()
    );
    assert!(matches!(
        write(&mut child, &mem, at, 1),
        Err(FaultError::Protection { .. })
    ));
    write(&mut child, &mem, at + PS, 1).unwrap();
    assert_eq!(read(&mut parent, &mem, at + PS).unwrap(), 0);
}

#[test]
fn wired_entries_are_copied_eagerly_at_fork() {
    let mem = memory(1 << 22);
    let mut parent = map(&mem, 256);
    let at = parent
        .enter(MapRequest::anonymous(3 * PS))
        .unwrap()
        .as_u64();
    write(&mut parent, &mem, at, 1).unwrap();
    parent.wire(VirtAddr::new(at), 3 * PS).unwrap();
    for i in 0..3 {
        let t = parent.pmap().translate(VirtAddr::new(at + i * PS)).unwrap();
        assert!(t.wired && t.prot.contains(VmProt::WRITE));
    }
    let object = parent.lookup(VirtAddr::new(at)).unwrap().object().clone();
    assert_eq!(object.page_counts().wired, 3);
    let mut child = parent.fork(pmap()).unwrap();
    // The parent keeps writing through its wired translations without faulting.
    let faults = parent.stats().faults;
    write(&mut parent, &mem, at, 2).unwrap();
    assert_eq!(parent.stats().faults, faults);
    assert_eq!(read(&mut child, &mem, at).unwrap(), 1);
    write(&mut child, &mem, at + PS, 9).unwrap();
    assert_eq!(read(&mut parent, &mem, at + PS).unwrap(), 0);
    assert!(!child.lookup(VirtAddr::new(at)).unwrap().needs_copy());
    assert_eq!(child.lookup(VirtAddr::new(at)).unwrap().wired_count(), 0);
    // Unwire, then unmap.
    parent.unwire(VirtAddr::new(at), 3 * PS).unwrap();
    assert_eq!(object.page_counts().wired, 0);
    assert!(parent.unwire(VirtAddr::new(at), PS).is_err());
    parent.wire(VirtAddr::new(at + PS), PS).unwrap();
    assert_eq!(object.page_counts().wired, 1);
    parent.remove(VirtAddr::new(at), 3 * PS).unwrap();
    assert_eq!(object.page_counts().wired, 0);
}

#[test]
fn wiring_a_read_only_cow_page_makes_it_private() {
    let mem = memory(1 << 22);
    let mut parent = map(&mem, 256);
    let at = parent.enter(MapRequest::anonymous(PS)).unwrap().as_u64();
    write(&mut parent, &mem, at, 4).unwrap();
    let mut child = parent.fork(pmap()).unwrap();
    child.protect(VirtAddr::new(at), PS, VmProt::READ).unwrap();
    child.wire(VirtAddr::new(at), PS).unwrap();
    assert!(!child.lookup(VirtAddr::new(at)).unwrap().needs_copy());
    write(&mut parent, &mem, at, 8).unwrap();
    assert_eq!(read(&mut child, &mem, at).unwrap(), 4);
    child
        .protect(VirtAddr::new(at), PS, VmProt::DEFAULT)
        .unwrap();
    write(&mut child, &mem, at, 5).unwrap();
    assert_eq!(read(&mut parent, &mem, at).unwrap(), 8);
}

#[test]
fn share_inheritance_shares_writes_both_ways() {
    let mem = memory(1 << 22);
    let mut parent = map(&mem, 256);
    let at = parent
        .enter(MapRequest::anonymous(4 * PS))
        .unwrap()
        .as_u64();
    write(&mut parent, &mem, at, 3).unwrap();
    // Give the entry a shadow chain first (fork + write), then share it.
    let cow_child = parent.fork(pmap()).unwrap();
    write(&mut parent, &mem, at + PS, 4).unwrap();
    // The parent maps page 0 read-only from below its new shadow.
    assert_eq!(read(&mut parent, &mem, at).unwrap(), 3);
    parent
        .inherit(VirtAddr::new(at), 4 * PS, Inheritance::Share)
        .unwrap();
    let mut child = parent.fork(pmap()).unwrap();
    // Both read page 0 (still only in the object below the shared one), then the child
    // writes it: the parent must see the write, not its old read-only page.
    assert_eq!(read(&mut parent, &mem, at).unwrap(), 3);
    assert_eq!(read(&mut child, &mem, at).unwrap(), 3);
    write(&mut child, &mem, at, 30).unwrap();
    assert_eq!(read(&mut parent, &mem, at).unwrap(), 30);
    write(&mut parent, &mem, at + 2 * PS, 40).unwrap();
    assert_eq!(read(&mut child, &mem, at + 2 * PS).unwrap(), 40);
    assert_eq!(read(&mut child, &mem, at + PS).unwrap(), 4);
    // A copy of a shared region is a snapshot (eager, since the object is shared).
    parent
        .inherit(VirtAddr::new(at), 4 * PS, Inheritance::Copy)
        .unwrap();
    let mut snapshot = parent.fork(pmap()).unwrap();
    write(&mut child, &mem, at + 3 * PS, 50).unwrap();
    assert_eq!(read(&mut parent, &mem, at + 3 * PS).unwrap(), 50);
    assert_eq!(read(&mut snapshot, &mem, at + 3 * PS).unwrap(), 0);
    assert_eq!(read(&mut snapshot, &mem, at).unwrap(), 30);
    assert_eq!(
        parent.region(VirtAddr::new(at)).unwrap().share_mode,
        ShareMode::Shared
    );
    drop(cow_child);
}

#[test]
fn inheritance_none_leaves_a_hole() {
    let mem = memory(1 << 22);
    let mut parent = map(&mem, 256);
    let at = parent
        .enter(MapRequest::anonymous(PS).inheritance(Inheritance::None))
        .unwrap();
    let mut child = parent.fork(pmap()).unwrap();
    assert!(child.lookup(at).is_none());
    assert!(matches!(
        read(&mut child, &mem, at.as_u64()),
        Err(FaultError::NotMapped { .. })
    ));
    assert_eq!(child.stats().invalid_faults, 1);
}

#[test]
fn delayed_copy_object_gives_the_child_a_snapshot() {
    let mem = memory(1 << 22);
    let object = VmObject::builder(4 * PS, mem.clone())
        .strategy(CopyStrategy::Delay)
        .build()
        .unwrap();
    let mut parent = map(&mem, 256);
    let at = parent
        .enter(MapRequest::shared(object.clone(), 0, 4 * PS))
        .unwrap()
        .as_u64();
    write(&mut parent, &mem, at, 1).unwrap();
    write(&mut parent, &mem, at + PS, 2).unwrap();
    let mut child = parent.fork(pmap()).unwrap();
    assert!(object.delayed_copy().is_some());
    // The child reads before the parent writes: the child must not keep seeing the
    // parent's page once the parent changes it.
    assert_eq!(read(&mut child, &mem, at).unwrap(), 1);
    write(&mut parent, &mem, at, 10).unwrap();
    write(&mut parent, &mem, at + PS, 20).unwrap();
    assert_eq!(read(&mut child, &mem, at).unwrap(), 1);
    assert_eq!(read(&mut child, &mem, at + PS).unwrap(), 2);
    write(&mut child, &mem, at + 2 * PS, 3).unwrap();
    assert_eq!(read(&mut parent, &mem, at + 2 * PS).unwrap(), 0);
    // The object itself saw the parent's writes.
    let page = VmObject::resolve(&object, 0, VmProt::READ).unwrap();
    let mut b = [0u8];
    mem.memory().read_bytes(page.frame, &mut b).unwrap();
    assert_eq!(b[0], 10);
}

#[test]
fn eager_strategy_copies_at_fork() {
    let mem = memory(1 << 22);
    let object = VmObject::builder(2 * PS, mem.clone())
        .strategy(CopyStrategy::None)
        .build()
        .unwrap();
    let mut parent = map(&mem, 256);
    let at = parent
        .enter(MapRequest::shared(object, 0, 2 * PS))
        .unwrap()
        .as_u64();
    write(&mut parent, &mem, at, 7).unwrap();
    let mut child = parent.fork(pmap()).unwrap();
    let centry = child.lookup(VirtAddr::new(at)).unwrap();
    assert!(!centry.needs_copy());
    assert_eq!(centry.object().page_counts().resident, 1);
    write(&mut parent, &mem, at, 8).unwrap();
    assert_eq!(read(&mut child, &mem, at).unwrap(), 7);
}

/// A file-like pager: page `n` is filled with byte `n + 1`; written pages are kept.
#[derive(Debug, Default)]
struct PatternPager {
    returned: Mutex<Vec<(u64, u8)>>,
}

impl MemoryObject for PatternPager {
    fn data_request(&self, offset: u64, page: &mut [u8], _: VmProt) -> Result<PageIn, PagerError> {
        let stored = self
            .returned
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(o, _)| *o == offset)
            .map(|(_, b)| *b);
        page.fill(stored.unwrap_or((offset / PS) as u8 + 1));
        Ok(PageIn::Filled)
    }
    fn data_return(&self, offset: u64, page: &[u8], _: PageOutKind) -> Result<(), PagerError> {
        self.returned.lock().unwrap().push((offset, page[0]));
        Ok(())
    }
    fn has_page(&self, _: u64) -> bool {
        true
    }
}

#[test]
fn private_mapping_of_a_pager_object_pages_in_and_copies_on_write() {
    let mem = memory(1 << 22);
    let file =
        VmObject::with_pager(4 * PS, Arc::new(PatternPager::default()), mem.clone()).unwrap();
    let mut m = map(&mem, 256);
    let at = m
        .enter(MapRequest::private(file.clone(), PS, 2 * PS).tag(VmTag::DYLIB))
        .unwrap()
        .as_u64();
    assert_eq!(read(&mut m, &mem, at).unwrap(), 2);
    assert!(m.stats().pageins + m.stats().cow >= 1);
    write(&mut m, &mem, at + PS, 42).unwrap();
    assert_eq!(read(&mut m, &mem, at + PS).unwrap(), 42);
    // The file is unchanged.
    let page = VmObject::resolve(&file, 2 * PS, VmProt::READ).unwrap();
    let mut b = [0u8];
    mem.memory().read_bytes(page.frame, &mut b).unwrap();
    assert_eq!(b[0], 3);
    let region = m.region(VirtAddr::new(at)).unwrap();
    assert_eq!(region.tag, VmTag::DYLIB);
    assert!(region.to_string().starts_with("Dylib"));
}

#[test]
fn shared_mapping_of_a_pager_object_writes_the_object() {
    let mem = memory(1 << 22);
    let file =
        VmObject::with_pager(2 * PS, Arc::new(PatternPager::default()), mem.clone()).unwrap();
    let mut a = map(&mem, 256);
    let mut b = map(&mem, 256);
    let at = a
        .enter(MapRequest::shared(file.clone(), 0, 2 * PS))
        .unwrap()
        .as_u64();
    let bt = b
        .enter(
            MapRequest::shared(file.clone(), 0, 2 * PS)
                .location(Location::Fixed(VirtAddr::new(BASE + 16 * PS))),
        )
        .unwrap()
        .as_u64();
    assert_eq!(read(&mut b, &mem, bt).unwrap(), 1);
    write(&mut a, &mem, at, 9).unwrap();
    assert_eq!(read(&mut b, &mem, bt).unwrap(), 9);
    assert_eq!(read(&mut a, &mem, at + PS).unwrap(), 2);
}

#[test]
fn zero_fill_is_counted_and_reads_zero() {
    let mem = memory(1 << 22);
    let mut m = map(&mem, 256);
    let at = m.enter(MapRequest::anonymous(2 * PS)).unwrap();
    let region = m.region(at).unwrap();
    assert_eq!(region.share_mode, ShareMode::Empty);
    assert_eq!(read(&mut m, &mem, at.as_u64() + 5).unwrap(), 0);
    let out = m.fault(at, VmProt::READ).unwrap();
    assert_eq!(out.kind, FaultKind::Resident);
    assert_eq!(m.stats().zero_fill, 1);
    assert_eq!(m.stats().reactivations, 1);
    assert_eq!(m.region(at).unwrap().share_mode, ShareMode::Private);
    assert_eq!(m.region(at).unwrap().resident_bytes, PS);
}
