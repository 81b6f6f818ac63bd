//! Copy-on-write and sharing scenarios (after XNU's fork / COW tests): fork then write on
//! both sides, fork chains with collapse, protect during COW, wired + copy, share, true
//! share (shared anonymous objects copied by delayed copies), delayed and eager copy
//! strategies, pager-backed private mappings, linking past a fully copied backing object.

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::sync::{Arc, Mutex};

use common::{BASE, PS, map, memory, pmap, read, write};
use machvm_addr::{VirtAddr, VmProt};
use machvm_vm_map::{FaultError, FaultKind, Inheritance, Location, MapRequest, ShareMode, VmTag};
use machvm_vm_object::{
    CopyStrategy, MemoryObject, PageIn, PageOutKind, PagerError, SimPageMemory, VmObject,
};

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

/// Reads the first byte of each of `pages` pages from `at`.
fn bytes(m: &mut common::Map, mem: &SimPageMemory, at: u64, pages: u64) -> Vec<u8> {
    (0..pages)
        .map(|i| read(m, mem, at + i * PS).unwrap())
        .collect()
}

#[test]
fn fork_of_a_shared_anonymous_mapping_makes_a_delayed_copy() {
    let mem = memory(1 << 22);
    let object = VmObject::anonymous(4 * PS, mem.clone()).unwrap();
    assert_eq!(object.copy_strategy(), CopyStrategy::Symmetric);
    let mut parent = map(&mem, 256);
    let at = parent
        .enter(MapRequest::shared(object.clone(), 0, 4 * PS))
        .unwrap()
        .as_u64();
    // True share: a symmetric copy would assume nobody writes the object directly.
    assert_eq!(object.copy_strategy(), CopyStrategy::Delay);
    // The sharer: a second mapping of the object in the same map.
    let bt = parent
        .enter(MapRequest::shared(object.clone(), 0, 4 * PS))
        .unwrap()
        .as_u64();
    // A third mapping the child does not inherit: its translations must lose write too.
    let ct = parent
        .enter(MapRequest::shared(object.clone(), 0, 4 * PS).inheritance(Inheritance::None))
        .unwrap()
        .as_u64();
    write(&mut parent, &mem, at, 1).unwrap();
    write(&mut parent, &mem, bt + PS, 2).unwrap();
    write(&mut parent, &mem, ct + 3 * PS, 3).unwrap();
    assert_eq!(bytes(&mut parent, &mem, bt, 2), [1, 2]);
    assert!(
        parent
            .pmap()
            .translate(VirtAddr::new(bt + PS))
            .unwrap()
            .prot
            .contains(VmProt::WRITE)
    );

    let mut child = parent.fork(pmap()).unwrap();
    // A delayed copy: one copy object for both entries of the object, shadowing it, mapped
    // needs-copy, with nothing copied yet.
    let copy = object.delayed_copy().expect("a delayed copy");
    assert!(Arc::ptr_eq(&copy.shadow().unwrap().object, &object));
    assert_eq!(copy.page_counts().resident, 0);
    for a in [at, bt] {
        let c = child.lookup(VirtAddr::new(a)).unwrap();
        assert!(c.needs_copy() && !c.is_shared());
        assert!(Arc::ptr_eq(c.object(), &copy));
        assert!(Arc::ptr_eq(
            parent.lookup(VirtAddr::new(a)).unwrap().object(),
            &object
        ));
    }
    // The parent's mappings lost write, so their next writes push first.
    assert!(child.lookup(VirtAddr::new(ct)).is_none());
    for a in [at, bt + PS, ct + 3 * PS] {
        let t = parent.pmap().translate(VirtAddr::new(a)).unwrap();
        assert!(!t.prot.contains(VmProt::WRITE));
    }

    write(&mut parent, &mem, at, 10).unwrap();
    write(&mut parent, &mem, bt + PS, 20).unwrap(); // the sharer
    write(&mut child, &mem, at + 2 * PS, 30).unwrap();
    write(&mut child, &mem, bt + 3 * PS, 40).unwrap();
    write(&mut parent, &mem, ct + 3 * PS, 50).unwrap();
    assert_eq!(copy.page_counts().resident, 3, "old pages pushed");
    // The parent's mappings still show one object.
    for a in [at, bt, ct] {
        assert_eq!(bytes(&mut parent, &mem, a, 4), [10, 20, 0, 50]);
    }
    // The child has the fork-time contents, each entry its own copy.
    assert_eq!(bytes(&mut child, &mem, at, 4), [1, 2, 30, 3]);
    assert_eq!(bytes(&mut child, &mem, bt, 4), [1, 2, 0, 40]);
    drop((parent, child, copy, object));
    assert_eq!(mem.memory().frames_in_use(), 0, "frames leaked");
}

#[test]
fn true_share_with_a_sharer_in_another_map_copies_eagerly_until_it_is_gone() {
    let mem = memory(1 << 22);
    let mut parent = map(&mem, 256);
    let at = parent
        .enter(MapRequest::anonymous(2 * PS).inheritance(Inheritance::Share))
        .unwrap()
        .as_u64();
    write(&mut parent, &mem, at, 1).unwrap();
    let object = parent.lookup(VirtAddr::new(at)).unwrap().object().clone();
    assert_eq!(object.copy_strategy(), CopyStrategy::Symmetric);
    let mut sharer = parent.fork(pmap()).unwrap();
    assert_eq!(object.copy_strategy(), CopyStrategy::Delay);
    write(&mut sharer, &mem, at, 2).unwrap();
    assert_eq!(read(&mut parent, &mem, at).unwrap(), 2);

    parent
        .inherit(VirtAddr::new(at), 2 * PS, Inheritance::Copy)
        .unwrap();
    let mut snapshot = parent.fork(pmap()).unwrap();
    // The sharer's writable translation is out of this map's reach: the copy is eager.
    assert!(object.delayed_copy().is_none());
    let s = snapshot.lookup(VirtAddr::new(at)).unwrap();
    assert!(!s.needs_copy() && s.object().shadow().is_none());
    let faults = sharer.stats().faults;
    write(&mut sharer, &mem, at, 3).unwrap();
    assert_eq!(sharer.stats().faults, faults, "written without a fault");
    assert_eq!(read(&mut snapshot, &mem, at).unwrap(), 2);
    assert_eq!(read(&mut parent, &mem, at).unwrap(), 3);

    // With the sharer gone, every mapping of the object is the parent's: delayed copies.
    drop(sharer);
    let mut later = parent.fork(pmap()).unwrap();
    assert!(object.delayed_copy().is_some());
    write(&mut parent, &mem, at, 4).unwrap();
    write(&mut parent, &mem, at + PS, 5).unwrap();
    assert_eq!(bytes(&mut later, &mem, at, 2), [3, 0]);
    assert_eq!(bytes(&mut snapshot, &mem, at, 2), [2, 0]);
    assert_eq!(bytes(&mut parent, &mem, at, 2), [4, 5]);
}

#[test]
fn delayed_copy_of_an_object_another_map_writes_is_eager() {
    let mem = memory(1 << 22);
    let object = VmObject::builder(4 * PS, mem.clone())
        .strategy(CopyStrategy::Delay)
        .build()
        .unwrap();
    let mut a = map(&mem, 256);
    let mut b = map(&mem, 256);
    let at = a
        .enter(MapRequest::shared(object.clone(), 0, 4 * PS))
        .unwrap()
        .as_u64();
    let bt = b
        .enter(MapRequest::shared(object.clone(), 0, 4 * PS).fixed(VirtAddr::new(BASE + 16 * PS)))
        .unwrap()
        .as_u64();
    write(&mut a, &mem, at, 1).unwrap();
    let mut child = b.fork(pmap()).unwrap();
    assert!(object.delayed_copy().is_none());
    write(&mut a, &mem, at, 9).unwrap(); // through a's writable translation
    assert_eq!(read(&mut child, &mem, bt).unwrap(), 1);
    assert_eq!(read(&mut b, &mem, bt).unwrap(), 9);
}

#[test]
fn successive_delayed_copies_keep_their_children_apart() {
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
    let mut first = parent.fork(pmap()).unwrap();
    write(&mut parent, &mem, at + PS, 2).unwrap();
    let mut second = parent.fork(pmap()).unwrap();
    // The older copy now shadows the newer one: the newer one must stay frozen.
    write(&mut second, &mem, at, 20).unwrap();
    write(&mut second, &mem, at + 2 * PS, 30).unwrap();
    write(&mut parent, &mem, at + 3 * PS, 4).unwrap();
    assert_eq!(bytes(&mut first, &mem, at, 4), [1, 0, 0, 0]);
    assert_eq!(bytes(&mut second, &mem, at, 4), [20, 2, 30, 0]);
    assert_eq!(bytes(&mut parent, &mem, at, 4), [1, 2, 0, 4]);
    drop((parent, first, second, object));
    assert_eq!(mem.memory().frames_in_use(), 0, "frames leaked");
}

#[test]
fn fork_of_a_wired_entry_makes_an_eager_copy_that_keeps_its_contents() {
    let mem = memory(1 << 22);
    let mut parent = map(&mem, 256);
    let at = parent
        .enter(MapRequest::anonymous(4 * PS))
        .unwrap()
        .as_u64();
    for i in 0..3 {
        write(&mut parent, &mem, at + i * PS, 10 + i as u8).unwrap();
    }
    // A chain below the parent's object, so the copy reads more than one level.
    let older = parent.fork(pmap()).unwrap();
    write(&mut parent, &mem, at, 20).unwrap();
    parent.wire(VirtAddr::new(at), 4 * PS).unwrap();
    let pobj = parent.lookup(VirtAddr::new(at)).unwrap().object().clone();

    let mut child = parent.fork(pmap()).unwrap();
    let c = child.lookup(VirtAddr::new(at)).unwrap();
    assert!(!c.needs_copy() && c.wired_count() == 0);
    assert!(!Arc::ptr_eq(c.object(), &pobj));
    assert!(
        c.object().shadow().is_none(),
        "an eager copy shadows nothing"
    );
    assert_eq!(c.object().page_counts().resident, 4);
    assert!(!parent.lookup(VirtAddr::new(at)).unwrap().needs_copy());
    let expect = [20, 11, 12, 0];
    assert_eq!(bytes(&mut child, &mem, at, 4), expect);

    // The parent writes through its wired translations: no fault, and the copy stays.
    let faults = parent.stats().faults;
    for i in 0..4 {
        write(&mut parent, &mem, at + i * PS, 100 + i as u8).unwrap();
    }
    assert_eq!(parent.stats().faults, faults);
    assert_eq!(bytes(&mut child, &mem, at, 4), expect);
    write(&mut child, &mem, at + 3 * PS, 7).unwrap();
    assert_eq!(bytes(&mut parent, &mem, at, 4), [100, 101, 102, 103]);
    drop((parent, child, older, pobj));
    assert_eq!(mem.memory().frames_in_use(), 0, "frames leaked");
}

#[test]
fn cow_faults_link_past_a_backing_object_the_child_has_copied_whole() {
    let mem = memory(1 << 23);
    let mut parent = map(&mem, 256);
    // Pages 0..8 written by the parent; the child zero-fills 8..16 before copying 0..8.
    let at = parent
        .enter(MapRequest::anonymous(16 * PS))
        .unwrap()
        .as_u64();
    for i in 0..8 {
        write(&mut parent, &mem, at + i * PS, i as u8 + 1).unwrap();
    }
    let mut child = parent.fork(pmap()).unwrap();
    let backing = parent.lookup(VirtAddr::new(at)).unwrap().object().clone();
    for i in 8..16 {
        write(&mut child, &mem, at + i * PS, 90).unwrap();
    }
    for i in 0..7 {
        write(&mut child, &mem, at + i * PS, 50 + i as u8).unwrap();
    }
    let cobj = child.lookup(VirtAddr::new(at)).unwrap().object().clone();
    assert!(cobj.shadow().is_some(), "page 7 still shows the parent's");
    write(&mut child, &mem, at + 7 * PS, 57).unwrap();
    assert!(cobj.shadow().is_none(), "linked past the parent's object");
    assert_eq!(child.stats().cow, 8);
    drop(cobj);
    // The parent's object is its own again: its next write needs no copy.
    assert_eq!(Arc::strong_count(&backing), 2);
    drop(backing);
    let cow = parent.stats().cow;
    write(&mut parent, &mem, at, 100).unwrap();
    assert_eq!(parent.stats().cow, cow);
    assert_eq!(
        bytes(&mut parent, &mem, at, 9),
        [100, 2, 3, 4, 5, 6, 7, 8, 0]
    );
    assert_eq!(
        bytes(&mut child, &mem, at, 9),
        [50, 51, 52, 53, 54, 55, 56, 57, 90]
    );
}

#[test]
fn sharing_drops_translations_left_below_a_copy_on_read_entry() {
    let mem = memory(1 << 22);
    let file =
        VmObject::with_pager(2 * PS, Arc::new(PatternPager::default()), mem.clone()).unwrap();
    let mut parent = map(&mem, 256);
    let at = parent
        .enter(MapRequest::private(file.clone(), 0, 2 * PS))
        .unwrap()
        .as_u64();
    write(&mut parent, &mem, at, 5).unwrap();
    let older = parent.fork(pmap()).unwrap();
    // The parent's next write gives it a new object; its read-only translation of page 0
    // now points at the object below.
    write(&mut parent, &mem, at + PS, 6).unwrap();
    assert_eq!(read(&mut parent, &mem, at).unwrap(), 5);
    parent
        .inherit(VirtAddr::new(at), 2 * PS, Inheritance::Share)
        .unwrap();
    let mut child = parent.fork(pmap()).unwrap();
    write(&mut child, &mem, at, 7).unwrap();
    assert_eq!(read(&mut parent, &mem, at).unwrap(), 7);
    assert_eq!(read(&mut child, &mem, at + PS).unwrap(), 6);
    drop(older);
}
