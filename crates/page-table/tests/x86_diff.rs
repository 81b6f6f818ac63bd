//! Differential test against the `x86_64` crate: for the same mappings, the leaf entries machvm
//! writes equal the ones `x86_64`'s `OffsetPageTable` writes, bit for bit (address and flags),
//! for 4 KiB, 2 MiB and 1 GiB pages and every attribute both can express.
//!
//! Both tables live in one `SimPhysMemory`; each is read back through `x86_64`'s own walker
//! (`Translate::translate`), so the comparison does not depend on machvm's decoding.
//! Intermediate entries are not compared: `x86_64` derives them from the first leaf's flags,
//! machvm makes them permissive (present, writable, user) and lets the leaf decide.

#![allow(clippy::std_instead_of_alloc, clippy::std_instead_of_core)] // host test

use machvm_addr::{PageSize, PhysAddr, PhysMapper, SimPhysMemory, VirtAddr, VmProt};
use machvm_page_table::{MemType, NoFlush, PageAttrs, PageTable, Region, SwFlags, X86Pml4};
use x86_64::structures::paging::mapper::TranslateResult;
use x86_64::structures::paging::{
    FrameAllocator as XAlloc, Mapper, OffsetPageTable, Page, PageTable as XTable,
    PageTableFlags as F, PhysFrame, Size1GiB, Size2MiB, Size4KiB, Translate,
};

struct Frames<'a>(&'a SimPhysMemory);

// SAFETY: `SimPhysMemory::allocate` hands out distinct, unused, aligned frames.
unsafe impl XAlloc<Size4KiB> for Frames<'_> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let pa = self
            .0
            .frame_allocator()
            .allocate(machvm_addr::FrameRequest::single(PageSize::Size4KiB))
            .ok()?;
        Some(PhysFrame::containing_address(x86_64::PhysAddr::new(
            pa.as_u64(),
        )))
    }
}

use machvm_addr::FrameAllocator as _;

/// One mapping: address, size, machvm attributes and the equivalent `x86_64` flags.
struct Case {
    va: u64,
    pa: u64,
    size: PageSize,
    ours: PageAttrs,
    theirs: F,
}

fn cases() -> Vec<Case> {
    let p = F::PRESENT;
    let rw = PageAttrs::new(VmProt::READ | VmProt::WRITE);
    let ro = PageAttrs::new(VmProt::READ);
    let rx = PageAttrs::new(VmProt::READ | VmProt::EXECUTE);
    let mut out = Vec::new();
    let variants: [(PageAttrs, F); 8] = [
        (rw, p | F::WRITABLE | F::NO_EXECUTE),
        (ro, p | F::NO_EXECUTE),
        (rx, p),
        (
            rw.user(true),
            p | F::WRITABLE | F::USER_ACCESSIBLE | F::NO_EXECUTE,
        ),
        (
            rx.user(true).global(true),
            p | F::USER_ACCESSIBLE | F::GLOBAL,
        ),
        (
            rw.mem_type(MemType::WriteThrough),
            p | F::WRITABLE | F::NO_EXECUTE | F::WRITE_THROUGH,
        ),
        (
            rw.mem_type(MemType::Uncached),
            p | F::WRITABLE | F::NO_EXECUTE | F::WRITE_THROUGH | F::NO_CACHE,
        ),
        (
            ro.sw(SwFlags::WIRED | SwFlags::COW),
            p | F::NO_EXECUTE | F::BIT_9 | F::BIT_10,
        ),
    ];
    for (i, (ours, theirs)) in variants.into_iter().enumerate() {
        let i = i as u64;
        out.push(Case {
            va: 0x10_0000_0000 + i * 0x1000,
            pa: 0x2_0000_0000 + i * 0x3000,
            size: PageSize::Size4KiB,
            ours,
            theirs,
        });
        out.push(Case {
            va: 0x20_0000_0000 + i * 0x20_0000,
            pa: 0x4_0000_0000 + i * 0x60_0000,
            size: PageSize::Size2MiB,
            ours,
            theirs: theirs | F::HUGE_PAGE,
        });
        out.push(Case {
            va: 0x40_0000_0000 + i * 0x4000_0000,
            pa: (i + 1) * 0x4000_0000,
            size: PageSize::Size1GiB,
            ours,
            theirs: theirs | F::HUGE_PAGE,
        });
    }
    // The upper half too.
    out.push(Case {
        va: 0xffff_8000_0000_0000,
        pa: 0x7000,
        size: PageSize::Size4KiB,
        ours: rw.global(true),
        theirs: F::PRESENT | F::WRITABLE | F::NO_EXECUTE | F::GLOBAL,
    });
    out
}

fn offset_table(sim: &SimPhysMemory, root: u64) -> OffsetPageTable<'_> {
    let host = sim.phys_to_ptr(PhysAddr::new(0), 8).unwrap().as_ptr() as u64;
    let table = sim
        .phys_to_ptr(PhysAddr::new(root), 4096)
        .unwrap()
        .cast::<XTable>();
    // SAFETY: `table` is a page table frame of `sim` that only this test uses; every frame
    // of `sim` is at host address `host + pa`.
    unsafe { OffsetPageTable::new(&mut *table.as_ptr(), x86_64::VirtAddr::new(host)) }
}

fn leaf(t: &OffsetPageTable<'_>, va: u64) -> (u64, u64) {
    match t.translate(x86_64::VirtAddr::new(va)) {
        TranslateResult::Mapped { frame, flags, .. } => {
            (frame.start_address().as_u64(), flags.bits())
        }
        other => panic!("{va:#x} not mapped: {other:?}"),
    }
}

#[test]
fn leaf_entries_equal_what_the_x86_64_crate_writes() {
    let sim = SimPhysMemory::builder()
        .size_bytes(8 << 20)
        .build()
        .unwrap();
    let mut alloc = sim.frame_allocator();
    let mut ours = PageTable::<X86Pml4, _>::new(Region::Both, &sim, &mut alloc).unwrap();
    let their_root = alloc
        .allocate(machvm_addr::FrameRequest::single(PageSize::Size4KiB))
        .unwrap();
    let mut theirs = offset_table(&sim, their_root.as_u64());
    let mut frames = Frames(&sim);
    let cases = cases();
    for c in &cases {
        let done = ours
            .map(
                VirtAddr::new(c.va),
                PhysAddr::new(c.pa),
                c.size,
                &c.ours,
                &mut alloc,
            )
            .unwrap();
        ours.finish(done, &mut NoFlush, &mut alloc).unwrap();
        let va = x86_64::VirtAddr::new(c.va);
        let pa = x86_64::PhysAddr::new(c.pa);
        // SAFETY: the mapped frames are never dereferenced and the table is not active.
        unsafe {
            match c.size {
                PageSize::Size4KiB => theirs
                    .map_to(
                        Page::<Size4KiB>::containing_address(va),
                        PhysFrame::containing_address(pa),
                        c.theirs,
                        &mut frames,
                    )
                    .unwrap()
                    .ignore(),
                PageSize::Size2MiB => theirs
                    .map_to(
                        Page::<Size2MiB>::containing_address(va),
                        PhysFrame::containing_address(pa),
                        c.theirs,
                        &mut frames,
                    )
                    .unwrap()
                    .ignore(),
                _ => theirs
                    .map_to(
                        Page::<Size1GiB>::containing_address(va),
                        PhysFrame::containing_address(pa),
                        c.theirs,
                        &mut frames,
                    )
                    .unwrap()
                    .ignore(),
            }
        }
    }
    // A fresh view per read: its `&mut` root must not outlive machvm's own accesses.
    let our_root = ours.root().as_u64();
    let ours_leaf = |va: u64| leaf(&offset_table(&sim, our_root), va);
    for c in &cases {
        for off in [0, c.size.bytes() / 2, c.size.bytes() - 8] {
            let (a, b) = (ours_leaf(c.va + off), leaf(&theirs, c.va + off));
            assert_eq!(
                a, b,
                "{:#x} ({}): machvm {:#x}, x86_64 {:#x}",
                c.va, c.size, a.1, b.1
            );
        }
        assert_eq!(ours_leaf(c.va).1, c.theirs.bits(), "{:#x}", c.va);
    }
    // After a protect, machvm's entries equal `update_flags` on the x86_64 side.
    let ro_user = PageAttrs::new(VmProt::READ).user(true);
    let c = &cases[3];
    let done = ours
        .protect_range(
            VirtAddr::new(c.va),
            0x1000,
            &ro_user,
            &mut NoFlush,
            &mut alloc,
        )
        .unwrap();
    ours.finish(done, &mut NoFlush, &mut alloc).unwrap();
    let flags = F::PRESENT | F::USER_ACCESSIBLE | F::NO_EXECUTE;
    // SAFETY: the table is not active.
    unsafe {
        theirs.update_flags(
            Page::<Size4KiB>::containing_address(x86_64::VirtAddr::new(c.va)),
            flags,
        )
    }
    .unwrap()
    .ignore();
    assert_eq!(ours_leaf(c.va), leaf(&theirs, c.va));
}
