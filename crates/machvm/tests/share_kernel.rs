//! `VmSystem::share_kernel`: every space's table links the kernel's root entries, so a CPU
//! that loads a space's root register still translates the kernel (checked with a
//! `TableReader` on the root each space's `activate` returns, as the MMU would walk it);
//! the spaces never edit or free the kernel's tables.

use machvm::pmap::{PmapSetupError, TablePmap};
use machvm::sim::SimMemory;
use machvm::{FlushProvider, VmError, VmSystem};
use machvm_addr::{PageSize, PhysAddr, SimPhysMemory, VirtAddr, VmProt};
use machvm_page_table::{
    CountingFlush, NoFlush, PageAttrs, PageTable, PageTableError, Region, TableReader, X86Pml4,
};
use machvm_tlb::Asid;
use machvm_vm_map::{MapRequest, Pmap};

struct NoTlb;

impl FlushProvider for NoTlb {
    type Hook = NoFlush;
    fn hook(&self, _: Asid) -> NoFlush {
        NoFlush
    }
    fn flush_asid(&self, _: Asid) {}
}

const SPAN: u64 = 512 << 30; // one PML4 entry
const KERNEL_VA: u64 = 0x10_0000;
const KERNEL_PA: u64 = 0x1000;

/// The kernel's table: one global page at 1 MiB, in the first PML4 entry.
fn kernel_table(sim: &SimPhysMemory) -> PageTable<X86Pml4, &SimPhysMemory> {
    let mut alloc = sim.frame_allocator();
    let mut kernel = PageTable::<X86Pml4, _>::new(Region::Both, sim, &mut alloc).unwrap();
    let rw = PageAttrs::new(VmProt::READ | VmProt::WRITE).global(true);
    let done = kernel
        .map(
            VirtAddr::new(KERNEL_VA),
            PhysAddr::new(KERNEL_PA),
            PageSize::Size4KiB,
            &rw,
            &mut alloc,
        )
        .unwrap();
    kernel.finish(done, &mut NoFlush, &mut alloc).unwrap();
    kernel
}

/// What the MMU sees at `va` after loading `root` (a CR3 value).
fn walk(sim: &SimPhysMemory, root: u64, va: u64) -> Option<u64> {
    // SAFETY: the space's table outlives the reader (dropped at the end of the call).
    let reader =
        unsafe { TableReader::<X86Pml4, _>::new(PhysAddr::new(root & !0xfff), Region::Both, sim) }
            .unwrap();
    reader
        .translate(VirtAddr::new(va))
        .ok()
        .map(|t| t.pa.as_u64())
}

#[test]
fn spaces_and_their_forks_keep_the_kernel_mapped_and_never_free_its_tables() {
    // An owned handle (the system's mapper must be `'static`), not a leaked one: miri
    // reports leaks.
    let owner = SimMemory::new(
        SimPhysMemory::builder()
            .size_bytes(8 << 20)
            .build()
            .unwrap(),
    );
    let sim = owner.memory();
    let kernel = kernel_table(sim);
    let kernel_frames = sim.frames_in_use();
    let (start, end) = (SPAN, SPAN + (1 << 30));
    let mut vm = VmSystem::<X86Pml4, _, _, _>::new(
        owner.clone(),
        owner.clone(),
        NoTlb,
        VirtAddr::new(start),
        VirtAddr::new(end),
    );
    vm.donate(PhysAddr::new(0x40_0000), 64).unwrap();
    // A space made before the kernel is shared gets the link too.
    let early = vm.create_space().unwrap();
    let shared = kernel.share_root(VirtAddr::new(0), SPAN).unwrap();
    // SAFETY: `kernel` outlives `vm` (dropped after it, below) and keeps its entry.
    unsafe { vm.share_kernel(shared) }.unwrap();
    assert_eq!(vm.kernel_entries(), Some(&shared));
    // SAFETY: refused before anything changes.
    let again = unsafe { vm.share_kernel(shared) };
    assert!(matches!(
        again,
        Err(VmError::Pmap(PmapSetupError::Table(
            PageTableError::AlreadyMapped { .. }
        )))
    ));

    let parent = vm.create_space().unwrap();
    let addr = vm.mmap(parent, MapRequest::anonymous(0x2000)).unwrap();
    vm.handle_fault(parent, addr, VmProt::WRITE).unwrap();
    let child = vm.fork(parent).unwrap();
    vm.handle_fault(child, addr, VmProt::READ).unwrap();
    for space in [early, parent, child] {
        let root = vm.activate(space, 0).unwrap();
        assert_eq!(
            walk(sim, root, KERNEL_VA),
            Some(KERNEL_PA),
            "the kernel is mapped in {space}"
        );
    }
    let root = vm.activate(child, 0).unwrap();
    let user = walk(sim, root, addr.as_u64()).expect("the child's page");
    assert_eq!(
        Some(user),
        vm.map(parent)
            .unwrap()
            .pmap()
            .lookup(addr)
            .map(|m| m.pa.as_u64()),
        "before a write, the child reads the parent's frame"
    );

    for space in [early, parent, child] {
        vm.destroy_space(space).unwrap();
    }
    drop(vm);
    assert_eq!(
        sim.frames_in_use(),
        kernel_frames,
        "the kernel's tables stay"
    );
    assert_eq!(
        kernel.translate(VirtAddr::new(KERNEL_VA)).unwrap().pa,
        PhysAddr::new(KERNEL_PA)
    );
}

#[test]
fn kernel_entries_overlapping_the_window_are_refused() {
    // An owned handle (the system's mapper must be `'static`), not a leaked one: miri
    // reports leaks.
    let owner = SimMemory::new(
        SimPhysMemory::builder()
            .size_bytes(4 << 20)
            .build()
            .unwrap(),
    );
    let sim = owner.memory();
    let kernel = kernel_table(sim);
    let shared = kernel.share_root(VirtAddr::new(0), SPAN).unwrap();
    let mut vm = VmSystem::<X86Pml4, _, _, _>::new(
        owner.clone(),
        owner.clone(),
        NoTlb,
        VirtAddr::new(0x4000_0000),
        VirtAddr::new(0x8000_0000),
    );
    // SAFETY: refused before anything changes.
    let r = unsafe { vm.share_kernel(shared) };
    assert_eq!(
        r,
        Err(VmError::Pmap(PmapSetupError::SharedOverlap {
            start: 0,
            len: SPAN
        }))
    );
    assert!(vm.kernel_entries().is_none());

    // The same check on a pmap of its own.
    let mut pmap = TablePmap::<X86Pml4, _, _, _>::new_user(
        PageSize::Size4KiB,
        VirtAddr::new(0x4000_0000),
        VirtAddr::new(0x8000_0000),
        sim,
        sim,
        CountingFlush::default(),
    )
    .unwrap();
    // SAFETY: refused before anything changes.
    let r = unsafe { pmap.link_root(&shared) };
    assert!(matches!(r, Err(PmapSetupError::SharedOverlap { .. })));
    assert!(pmap.unlink_root().is_none());
    pmap.remove(VirtAddr::new(0x4000_0000), VirtAddr::new(0x8000_0000));
}
