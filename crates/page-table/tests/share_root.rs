//! Shared root entries (`PageTable::share_root` / `link_root` / `unlink_root`): one kernel
//! table lends root entries to the tables of address spaces, which translate them like the
//! kernel (checked with a `TableReader`, the hardware walker's view), refuse to edit them,
//! and never free the kernel's tables.

use machvm_addr::{PhysAddr, SimPhysMemory, VirtAddr, VmProt};
use machvm_page_table::{
    A64Granule16K48, Format, NoFlush, PageAttrs, PageTable, PageTableError, Region, TableReader,
    X86Pml4, X86Pml5,
};

fn sim() -> SimPhysMemory {
    SimPhysMemory::builder()
        .size_bytes(8 << 20)
        .build()
        .unwrap()
}

fn kernel_rw() -> PageAttrs {
    PageAttrs::new(VmProt::READ | VmProt::WRITE).global(true)
}

fn user_rw() -> PageAttrs {
    PageAttrs::new(VmProt::READ | VmProt::WRITE).user(true)
}

fn map<F: Format>(
    pt: &mut PageTable<F, &SimPhysMemory>,
    sim: &SimPhysMemory,
    va: u64,
    pa: u64,
    attrs: &PageAttrs,
) -> Result<(), PageTableError> {
    let mut alloc = sim.frame_allocator();
    let done = pt.map(
        VirtAddr::new(va),
        PhysAddr::new(pa),
        F::GRANULE,
        attrs,
        &mut alloc,
    )?;
    pt.finish(done, &mut NoFlush, &mut alloc)
}

/// The whole life of a link on format `F`, whose region is `region`: `kernel_va` lies in the
/// first `shared` bytes, `user_va` after them.
fn kernel_shared_with_a_space<F: Format>(region: Region, kernel_va: u64, user_va: u64) {
    let sim = sim();
    let mut alloc = sim.frame_allocator();
    let g = F::GRANULE.bytes();
    let span = PageTable::<F, &SimPhysMemory>::root_entry_span();
    let mut kernel = PageTable::<F, _>::new(region, &sim, &mut alloc).unwrap();
    map(&mut kernel, &sim, kernel_va, 0x10 * g, &kernel_rw()).unwrap();
    let kernel_frames = sim.frames_in_use();
    let shared = kernel.share_root(VirtAddr::new(0), span).unwrap();
    assert_eq!(shared.size(), span);
    assert_eq!(shared.lender_root(), kernel.root());
    assert!(shared.overlaps(VirtAddr::new(kernel_va), g));
    assert!(!shared.overlaps(VirtAddr::new(user_va), g));

    let mut space = PageTable::<F, _>::new(region, &sim, &mut alloc).unwrap();
    // SAFETY: `kernel` lives until the end of the test and keeps its entry (it only maps
    // more below it).
    unsafe { space.link_root(&shared) }.unwrap();
    assert_eq!(space.linked_root(), Some(&shared));
    map(&mut space, &sim, user_va, 0x20 * g, &user_rw()).unwrap();

    // The hardware's view of the space: the kernel page through the link, the user page.
    let kva = VirtAddr::new(kernel_va);
    {
        // SAFETY: both tables outlive the reader, which goes before anything is freed.
        let reader = unsafe { TableReader::<F, _>::new(space.root(), region, &sim) }.unwrap();
        assert_eq!(reader.translate(kva).unwrap().pa, PhysAddr::new(0x10 * g));
        assert_eq!(
            reader.translate(VirtAddr::new(user_va)).unwrap().pa,
            PhysAddr::new(0x20 * g)
        );
        // A later kernel mapping under the shared entry shows in the space at once.
        map(&mut kernel, &sim, kernel_va + g, 0x11 * g, &kernel_rw()).unwrap();
        assert_eq!(
            reader.translate(VirtAddr::new(kernel_va + g)).unwrap().pa,
            PhysAddr::new(0x11 * g)
        );
    }

    // The space does not edit or translate the lent range.
    let refused = |r: Result<(), PageTableError>| {
        assert!(matches!(r, Err(PageTableError::OutOfRange { .. })), "{r:?}")
    };
    refused(map(
        &mut space,
        &sim,
        kernel_va + 2 * g,
        0x12 * g,
        &user_rw(),
    ));
    let mut hook = machvm_page_table::CountingFlush::default();
    refused(space.unmap_range(kva, g, &mut hook, &mut alloc).map(|_| ()));
    refused(space.translate(kva).map(|_| ()));
    // A range running out of the lent entries is refused at its first lent address.
    assert_eq!(
        space.mappings(VirtAddr::new(span - g), 2 * g).map(|_| ()),
        Err(PageTableError::OutOfRange { va: span - g })
    );
    // Linking twice, or over valid entries, is refused.
    // SAFETY: refused before anything is written.
    let twice = unsafe { space.link_root(&shared) };
    assert_eq!(
        twice,
        Err(PageTableError::AlreadyMapped {
            va: shared.start().as_u64()
        })
    );

    // Freeing the space frees its own tables only.
    space.free_all_tables(&mut alloc).unwrap();
    assert_eq!(sim.frames_in_use(), kernel_frames, "kernel tables intact");
    assert_eq!(kernel.translate(kva).unwrap().pa, PhysAddr::new(0x10 * g));

    // Unlinking clears the entries: a reader no longer reaches the kernel page, and the
    // table may map there itself.
    let mut other = PageTable::<F, _>::new(region, &sim, &mut alloc).unwrap();
    // SAFETY: as above.
    unsafe { other.link_root(&shared) }.unwrap();
    assert_eq!(other.unlink_root(), Some(shared));
    assert_eq!(other.unlink_root(), None);
    {
        // SAFETY: `other` outlives the reader, which goes at the end of the block.
        let reader = unsafe { TableReader::<F, _>::new(other.root(), region, &sim) }.unwrap();
        assert!(matches!(
            reader.translate(kva),
            Err(PageTableError::NotMapped { .. })
        ));
    }
    map(&mut other, &sim, kernel_va, 0x13 * g, &user_rw()).unwrap();
    // Now the entry is the space's own: linking over it is refused.
    // SAFETY: refused before anything is written.
    let over = unsafe { other.link_root(&shared) };
    assert_eq!(over, Err(PageTableError::AlreadyMapped { va: 0 }));
    other.free_all_tables(&mut alloc).unwrap();
    kernel.free_all_tables(&mut alloc).unwrap();
    assert_eq!(sim.frames_in_use(), 0, "every table frame back");
}

#[test]
fn x86_pml4_space_links_the_kernel_pml4_entry() {
    kernel_shared_with_a_space::<X86Pml4>(Region::Both, 0x10_0000, 0x80_0000_0000);
}

#[test]
fn x86_pml5_space_links_the_kernel_pml5_entry() {
    kernel_shared_with_a_space::<X86Pml5>(Region::Both, 0x10_0000, 1 << 48);
}

#[test]
fn aarch64_16k_two_entry_root_lends_its_lower_entry() {
    // 16 KiB granule, 48 bits: the root has two entries of 128 TiB each.
    kernel_shared_with_a_space::<A64Granule16K48>(Region::Lower, 0x4020_0000, 1 << 47);
}

#[test]
fn share_root_checks_alignment_length_and_region() {
    let sim = sim();
    let mut alloc = sim.frame_allocator();
    let span = PageTable::<X86Pml4, &SimPhysMemory>::root_entry_span();
    assert_eq!(span, 512 << 30);
    let pt = PageTable::<X86Pml4, _>::new(Region::Both, &sim, &mut alloc).unwrap();
    assert_eq!(
        pt.share_root(VirtAddr::new(0), 0).unwrap_err(),
        PageTableError::BadLength { len: 0 }
    );
    assert_eq!(
        pt.share_root(VirtAddr::new(0), span / 2).unwrap_err(),
        PageTableError::BadLength { len: span / 2 }
    );
    assert_eq!(
        pt.share_root(VirtAddr::new(4096), span).unwrap_err(),
        PageTableError::Misaligned {
            addr: 4096,
            align: span
        }
    );
    // The lower half ends at 2^47: a range crossing into the upper half is refused.
    assert!(matches!(
        pt.share_root(VirtAddr::new((1 << 47) - span), 2 * span),
        Err(PageTableError::OutOfRange { .. })
    ));
    // The upper half's last entry (a kernel at -2 GiB) can be shared too.
    let top = pt
        .share_root(VirtAddr::new(span.wrapping_neg()), span)
        .unwrap();
    assert_eq!(top.start(), VirtAddr::new(0xffff_ff80_0000_0000));
    let mut other = PageTable::<X86Pml4, _>::new(Region::Both, &sim, &mut alloc).unwrap();
    // SAFETY: `pt` outlives the link (freed after `other`).
    unsafe { other.link_root(&top) }.unwrap();
    assert_eq!(
        other.translate(VirtAddr::new(0xffff_ffff_c000_0000)),
        Err(PageTableError::OutOfRange {
            va: 0xffff_ffff_c000_0000
        })
    );
    // A table cannot re-lend what it borrowed.
    assert!(matches!(
        other.share_root(top.start(), span),
        Err(PageTableError::OutOfRange { .. })
    ));
    other.free_all_tables(&mut alloc).unwrap();
    pt.free_all_tables(&mut alloc).unwrap();
    assert_eq!(sim.frames_in_use(), 0);
}
