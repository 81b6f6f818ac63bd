//! The kernel's own page tables: built with `machvm-page-table`, loaded into CR3.

use machvm_addr::{IdentityMapper, PageSize, PhysAddr, VirtAddr, VmProt};
use machvm_boot_common::{FramePool, must};
use machvm_page_table::{Format, NoFlush, PageAttrs, PageTable, Region};

unsafe extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    /// The end of the kernel image (bss included), from the linker script.
    pub static __bss_end: u8;
}

/// Returns the address of a linker-script symbol.
macro_rules! sym {
    ($name:ident) => {
        core::ptr::addr_of!($name) as u64
    };
}

/// Kernel code: read + execute, global (the same in every address space).
const TEXT: PageAttrs = PageAttrs::new(VmProt::READ.union(VmProt::EXECUTE)).global(true);
/// Kernel constants: read-only, no execute, global.
const RODATA: PageAttrs = PageAttrs::new(VmProt::READ).global(true);
/// Kernel data, bss, stacks, the frame pool and low memory: read-write, no execute, global.
const DATA: PageAttrs = PageAttrs::new(VmProt::READ.union(VmProt::WRITE)).global(true);

/// The local APIC's registers: uncached, read-write, global.
const MMIO: PageAttrs = PageAttrs::new(VmProt::READ.union(VmProt::WRITE))
    .global(true)
    .mem_type(machvm_page_table::MemType::Uncached);

/// Physical (and virtual) base of the local APIC.
pub const LAPIC_BASE: u64 = 0xfee0_0000;

/// Builds a table of format `F` that identity-maps the kernel image with W^X permissions and
/// low memory (`0x1000..1 MiB`: the PVH start info, the SMP trampoline; page 0 stays unmapped
/// to catch null pointers) and the local APIC. The table is not live yet, so edits need no flush (`NoFlush`).
pub fn build_kernel_table<F: Format>(pool: &mut FramePool) -> PageTable<F, IdentityMapper> {
    // SAFETY: everything the tables are built from is pool memory, identity-mapped by the boot
    // tables now and by the table built here later.
    let mapper = unsafe { IdentityMapper::new() };
    let mut pt = must!(
        PageTable::<F, _>::new(Region::Both, mapper, pool),
        "creating the kernel table"
    );
    let regions = [
        (0x1000, 0x10_0000, DATA, "low memory"),
        (sym!(__text_start), sym!(__text_end), TEXT, "text"),
        (sym!(__rodata_start), sym!(__rodata_end), RODATA, "rodata"),
        (sym!(__data_start), sym!(__bss_end), DATA, "data+bss"),
        (LAPIC_BASE, LAPIC_BASE + 0x1000, MMIO, "local APIC"),
    ];
    for (start, end, attrs, name) in regions {
        let pending = must!(
            pt.map_range(
                VirtAddr::new(start),
                PhysAddr::new(start),
                end - start,
                &attrs,
                PageSize::Size2MiB,
                pool,
            ),
            "identity-mapping the kernel {name} {start:#x}..{end:#x}"
        );
        must!(pt.finish(pending, &mut NoFlush, pool), "finishing {name}");
    }
    pt
}
