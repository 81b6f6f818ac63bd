//! Break-before-make on aarch64: changes of live entries that the architecture requires to go
//! through an invalid entry and a TLB invalidation do so, through the flush hook; changes that
//! do not need it (permissions) never call the hook mid-operation.

use machvm_addr::{PageSize, PhysAddr, SimPhysMemory, VirtAddr, VmProt};
use machvm_page_table::{
    A64Granule4K48, CountingFlush, MemType, NoFlush, PageAttrs, PageTable, Region,
};

const BASE: u64 = 0x40_0000_0000;

fn mapped(sim: &SimPhysMemory, pages: u64) -> PageTable<A64Granule4K48, &SimPhysMemory> {
    let mut alloc = sim.frame_allocator();
    let mut pt = PageTable::new(Region::Lower, sim, &mut alloc).unwrap();
    let rw = PageAttrs::new(VmProt::READ | VmProt::WRITE);
    let done = pt
        .map_range(
            VirtAddr::new(BASE),
            PhysAddr::new(0x8000_0000),
            pages * 4096,
            &rw,
            PageSize::Size4KiB,
            &mut alloc,
        )
        .unwrap();
    pt.finish(done, &mut NoFlush, &mut alloc).unwrap();
    pt
}

#[test]
fn changing_the_memory_type_breaks_before_making_in_batches() {
    let sim = SimPhysMemory::builder()
        .size_bytes(4 << 20)
        .build()
        .unwrap();
    let mut pt = mapped(&sim, 100);
    let mut alloc = sim.frame_allocator();
    let device = PageAttrs::new(VmProt::READ | VmProt::WRITE).mem_type(MemType::Device);
    let mut hook = CountingFlush::default();
    let done = pt
        .protect_range(
            VirtAddr::new(BASE),
            100 * 4096,
            &device,
            &mut hook,
            &mut alloc,
        )
        .unwrap();
    // 100 entries broken in batches of 64: two invalidations during the operation.
    assert_eq!((hook.invalidations, hook.entries), (2, 100));
    let last = hook.last.unwrap();
    assert_eq!(
        (last.start.as_u64(), last.len),
        (BASE + 64 * 4096, 36 * 4096)
    );
    assert!(last.leaf_only);
    pt.finish(done, &mut hook, &mut alloc).unwrap();
    for m in pt.mappings(VirtAddr::new(BASE), 100 * 4096).unwrap() {
        assert_eq!(m.attrs, device);
    }
}

#[test]
fn permission_changes_need_no_break() {
    let sim = SimPhysMemory::builder()
        .size_bytes(4 << 20)
        .build()
        .unwrap();
    let mut pt = mapped(&sim, 100);
    let mut alloc = sim.frame_allocator();
    let ro = PageAttrs::new(VmProt::READ);
    let mut hook = CountingFlush::default();
    let done = pt
        .protect_range(VirtAddr::new(BASE), 100 * 4096, &ro, &mut hook, &mut alloc)
        .unwrap();
    assert_eq!(
        hook.invalidations, 0,
        "no invalidation before the caller's flush"
    );
    assert_eq!(done.range().unwrap().entries, 100);
    pt.finish(done, &mut hook, &mut alloc).unwrap();
    assert_eq!(hook.invalidations, 1);
    assert_eq!(
        pt.translate(VirtAddr::new(BASE)).unwrap().mapping().attrs,
        ro
    );
}
