//! Map operations: placement (first fit, alignment, guard gap, hook), overwrite, splitting on
//! remove / protect / inherit, region reports, 16 KiB maps.

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::sync::Arc;

use common::{BASE, PS, map, memory, read, write};
use machvm_addr::{PageSize, SimPhysMemory, VirtAddr, VmProt};
use machvm_vm_map::{Gap, Inheritance, MapRequest, Placement, ShareMode, SoftPmap, VmMap, VmTag};
use machvm_vm_object::SimPageMemory;

#[test]
fn anywhere_is_first_fit_with_alignment_and_guard() {
    let mem = memory(1 << 22);
    let mut m = map(&mem, 64);
    let a = m.enter(MapRequest::anonymous(PS)).unwrap().as_u64();
    assert_eq!(a, BASE);
    let b = m.enter(MapRequest::anonymous(PS)).unwrap().as_u64();
    assert_eq!(b, BASE + PS);
    let c = m
        .enter(MapRequest::anonymous(PS).align_mask(0x7fff))
        .unwrap()
        .as_u64();
    assert_eq!(c % 0x8000, 0);
    assert!(c > b);
    let d = m
        .enter(MapRequest::anonymous(PS).guard(2 * PS))
        .unwrap()
        .as_u64();
    assert_eq!(
        d,
        BASE + 4 * PS,
        "two free guard pages after the entry at {b:#x}"
    );
    m.remove(VirtAddr::new(a), PS).unwrap();
    assert_eq!(m.enter(MapRequest::anonymous(PS)).unwrap().as_u64(), a);
}

/// Places at the highest fitting address (a stand-in for a random placer).
struct Highest;
impl Placement for Highest {
    fn place(&mut self, gaps: &[Gap], size: u64, align: u64) -> Option<VirtAddr> {
        let g = gaps.iter().rev().find(|g| g.slots(size, align) > 0)?;
        let top = (g.end.as_u64() - size) & !(align - 1);
        Some(VirtAddr::new(top))
    }
}

#[test]
fn placement_hook_chooses_the_address() {
    let mem = memory(1 << 22);
    let mut m = map(&mem, 64);
    let a = m
        .enter_with(MapRequest::anonymous(2 * PS), &mut Highest)
        .unwrap()
        .as_u64();
    assert_eq!(a, BASE + 62 * PS);
    let gap = Gap {
        start: VirtAddr::new(0x1000),
        end: VirtAddr::new(0x9000),
    };
    assert_eq!(gap.slots(0x2000, 0x1000), 7);
    assert_eq!(gap.fit(0x2000, 0x4000), Some(0x4000));
}

#[test]
fn overwrite_replaces_and_remove_splits() {
    let mem = memory(1 << 22);
    let mut m = map(&mem, 64);
    let a = m.enter(MapRequest::anonymous(8 * PS)).unwrap().as_u64();
    for i in 0..8 {
        write(&mut m, &mem, a + i * PS, i as u8 + 1).unwrap();
    }
    m.remove(VirtAddr::new(a + 2 * PS), 2 * PS).unwrap();
    assert_eq!(m.len(), 2);
    assert!(m.lookup(VirtAddr::new(a + 2 * PS)).is_none());
    assert_eq!(read(&mut m, &mem, a + PS).unwrap(), 2);
    assert_eq!(read(&mut m, &mem, a + 5 * PS).unwrap(), 6);
    let tail = m.lookup(VirtAddr::new(a + 4 * PS)).unwrap();
    assert_eq!(tail.offset(), 4 * PS);
    // Overwrite across the hole and both pieces.
    m.enter(MapRequest::anonymous(4 * PS).overwrite(VirtAddr::new(a + PS)))
        .unwrap();
    assert_eq!(m.len(), 3);
    assert_eq!(read(&mut m, &mem, a + PS).unwrap(), 0);
    assert_eq!(read(&mut m, &mem, a).unwrap(), 1);
    assert_eq!(read(&mut m, &mem, a + 5 * PS).unwrap(), 6);
    // Removing a range with holes only removes what is there.
    m.remove(VirtAddr::new(BASE), 64 * PS).unwrap();
    assert!(m.is_empty());
    assert!(m.pmap().is_empty());
    drop(m);
    assert_eq!(mem.memory().frames_in_use(), 0);
}

#[test]
fn protect_and_inherit_split_entries() {
    let mem = memory(1 << 22);
    let mut m = map(&mem, 64);
    let a = m.enter(MapRequest::anonymous(6 * PS)).unwrap();
    m.protect(VirtAddr::new(a.as_u64() + PS), 2 * PS, VmProt::READ)
        .unwrap();
    m.inherit(
        VirtAddr::new(a.as_u64() + 2 * PS),
        3 * PS,
        Inheritance::Share,
    )
    .unwrap();
    let shape: Vec<(u64, VmProt, Inheritance)> = m
        .entries()
        .map(|e| {
            (
                (e.start().as_u64() - a.as_u64()) / PS,
                e.protection(),
                e.inheritance(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            (0, VmProt::DEFAULT, Inheritance::Copy),
            (1, VmProt::READ, Inheritance::Copy),
            (2, VmProt::READ, Inheritance::Share),
            (3, VmProt::DEFAULT, Inheritance::Share),
            (5, VmProt::DEFAULT, Inheritance::Copy),
        ]
    );
    assert!(Inheritance::try_from(Inheritance::None.as_raw()).is_ok());
}

#[test]
fn region_report_shows_vmmap_columns() {
    let mem = memory(1 << 22);
    let mut m = map(&mem, 64);
    let a = m
        .enter(MapRequest::anonymous(4 * PS).tag(VmTag::MALLOC_SMALL))
        .unwrap();
    let b = m
        .enter(
            MapRequest::anonymous(2 * PS)
                .tag(VmTag::STACK)
                .protection(VmProt::READ, VmProt::DEFAULT),
        )
        .unwrap();
    let c = m.enter(MapRequest::anonymous(PS).tag(VmTag(200))).unwrap();
    write(&mut m, &mem, a.as_u64(), 1).unwrap();
    write(&mut m, &mem, a.as_u64() + PS, 1).unwrap();
    let r = m.region(a).unwrap();
    assert_eq!(r.virtual_bytes, 4 * PS);
    assert_eq!(r.resident_bytes, 2 * PS);
    assert_eq!(r.share_mode, ShareMode::Private);
    assert_eq!(m.region(b).unwrap().share_mode, ShareMode::Empty);
    // Two entries of one object in this map only: aliased.
    m.protect(VirtAddr::new(a.as_u64() + 2 * PS), PS, VmProt::READ)
        .unwrap();
    assert_eq!(m.region(a).unwrap().share_mode, ShareMode::Aliased);
    let report = m.report().to_string();
    let lines: Vec<&str> = report.lines().collect();
    assert!(lines[0].starts_with("REGION TYPE"));
    assert!(lines[0].contains("START - END"));
    assert_eq!(
        lines[1],
        format!(
            "{:<24} {:016x}-{:016x} [{:>6} {:>6}] rw-/rwx SM=ALI",
            "MALLOC_SMALL",
            a.as_u64(),
            a.as_u64() + 2 * PS,
            "8K",
            "8K"
        )
    );
    assert!(report.contains("Stack"));
    assert!(report.contains("r--/rw- SM=NUL"));
    assert!(report.contains("memory tag=200"));
    assert_eq!(m.regions().count(), 5);
    let _ = c;
}

#[test]
fn sixteen_k_maps_fault_whole_granules() {
    let phys = SimPhysMemory::builder()
        .size_bytes(1 << 22)
        .build()
        .unwrap();
    let mem = Arc::new(SimPageMemory::new(phys, PageSize::Size16KiB).unwrap());
    let mut m = VmMap::new(
        PageSize::Size16KiB,
        VirtAddr::new(0x10_0000),
        VirtAddr::new(0x20_0000),
        mem.clone(),
        SoftPmap::new(16384),
    )
    .unwrap();
    let a = m.enter(MapRequest::anonymous(2 * 16384)).unwrap();
    let out = m
        .fault(VirtAddr::new(a.as_u64() + 0x5123), VmProt::WRITE)
        .unwrap();
    assert_eq!(out.va.as_u64(), a.as_u64() + 0x4000);
    assert!(m.enter(MapRequest::anonymous(4096)).is_err());
    assert_eq!(m.stats().zero_fill, 1);
}
