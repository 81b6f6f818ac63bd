//! The kernel's page tables and the MMU registers: `MAIR_EL1` from machvm's `AARCH64_MAIR`,
//! `TCR_EL1` derived from the format's geometry, `TTBR0_EL1`/`TTBR1_EL1` from the tables'
//! `root_register`, and `SCTLR_EL1`.

use core::arch::asm;

use machvm_addr::{IdentityMapper, PageSize, PhysAddr, VirtAddr, VmProt};
use machvm_boot_common::{FramePool, must};
use machvm_page_table::aarch64::AARCH64_MAIR;
use machvm_page_table::{Format, MemType, NoFlush, PageAttrs, PageTable, Region};

use crate::platform::UART_BASE;

unsafe extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    /// The end of the kernel image (bss included), from the linker script.
    pub static __bss_end: u8;
}

macro_rules! sym {
    ($name:ident) => {
        core::ptr::addr_of!($name) as u64
    };
}

/// Kernel code: read + execute, global.
const TEXT: PageAttrs = PageAttrs::new(VmProt::READ.union(VmProt::EXECUTE)).global(true);
/// Kernel constants: read-only, global.
const RODATA: PageAttrs = PageAttrs::new(VmProt::READ).global(true);
/// Data, bss, stacks and the frame pool: read-write, global.
const DATA: PageAttrs = PageAttrs::new(VmProt::READ.union(VmProt::WRITE)).global(true);
/// The UART: device memory (nGnRE), read-write, global.
const MMIO: PageAttrs = PageAttrs::new(VmProt::READ.union(VmProt::WRITE))
    .global(true)
    .mem_type(MemType::Device);

/// Returns the number of virtual-address bits format `F` translates per region.
pub const fn va_bits<F: Format>() -> u32 {
    F::GRANULE.shift() + (F::LEVELS as u32 - 1) * F::INDEX_BITS + F::ROOT_INDEX_BITS
}

/// Builds a `TTBR0` table of format `F` that identity-maps the kernel image (W^X) and the
/// UART. The table is not live yet, so its edits need no flush (`NoFlush`).
pub fn build_kernel_table<F: Format>(pool: &mut FramePool) -> PageTable<F, IdentityMapper> {
    // SAFETY: tables are built from pool frames, identity-mapped while the MMU is off and by
    // every table built here.
    let mapper = unsafe { IdentityMapper::new() };
    let mut pt = must!(
        PageTable::<F, _>::new(Region::Lower, mapper, pool),
        "creating the kernel table"
    );
    let g = F::GRANULE.bytes();
    let regions = [
        (sym!(__text_start), sym!(__text_end), TEXT, "text"),
        (sym!(__rodata_start), sym!(__rodata_end), RODATA, "rodata"),
        (sym!(__data_start), sym!(__bss_end), DATA, "data+bss"),
        (UART_BASE, UART_BASE + g, MMIO, "uart"),
    ];
    for (start, end, attrs, name) in regions {
        let pending = must!(
            pt.map_range(
                VirtAddr::new(start),
                PhysAddr::new(start),
                end - start,
                &attrs,
                PageSize::Size1GiB,
                pool,
            ),
            "identity-mapping {name} {start:#x}..{end:#x}"
        );
        must!(pt.finish(pending, &mut NoFlush, pool), "finishing {name}");
    }
    pt
}

/// The MMU register values one configuration runs with (shared with secondary CPUs).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct MmuRegs {
    /// `MAIR_EL1`.
    pub mair: u64,
    /// `TCR_EL1`.
    pub tcr: u64,
    /// `TTBR0_EL1` (root and ASID).
    pub ttbr0: u64,
    /// `TTBR1_EL1`.
    pub ttbr1: u64,
}

/// `TCR_EL1` for format `F` in both halves (D19.2, TCR_EL1): T0SZ/T1SZ from the format's VA
/// bits, inner-shareable write-back walks, the granule in TG0/TG1 (their encodings differ),
/// 48-bit IPS (machvm's formats output at most 48 bits), AS for 16-bit ASIDs, and HA (the
/// hardware sets the Access flag, `FEAT_HAFDBS`) when `hw_access` — the VM system's pageout
/// scan clears the Access flag of the pages it ages, and without HA their next use would
/// take an Access-flag fault.
pub fn tcr<F: Format>(asid16: bool, hw_access: bool) -> u64 {
    let tsz = u64::from(64 - va_bits::<F>());
    let (tg0, tg1) = match F::GRANULE {
        PageSize::Size4KiB => (0b00, 0b10),
        PageSize::Size16KiB => (0b10, 0b01),
        _ => (0b01, 0b11), // 64 KiB
    };
    let walk = (1 << 8) | (1 << 10) | (3 << 12); // IRGN0 = ORGN0 = WB-WA, SH0 = inner
    let walk1 = walk << 16; // IRGN1, ORGN1, SH1
    let ips = 0b101 << 32; // 48-bit physical addresses
    tsz | walk
        | (tg0 << 14)
        | (tsz << 16)
        | walk1
        | (tg1 << 30)
        | ips
        | (u64::from(asid16) << 36)
        | (u64::from(hw_access) << 39)
}

/// Returns whether the CPU sets the Access flag itself (`ID_AA64MMFR1_EL1.HAFDBS` ≥ 1).
pub fn has_hw_access_flag() -> bool {
    let mmfr1: u64;
    // SAFETY: EL1; ID registers are readable and side-effect free.
    unsafe { asm!("mrs {}, id_aa64mmfr1_el1", out(reg) mmfr1, options(nomem, nostack)) };
    mmfr1 & 0xf != 0
}

/// Turns the MMU on with `regs` on the executing CPU.
///
/// # Safety
///
/// - EL1, MMU off; the tables in `regs` identity-map the executing code, its stack and all
///   memory the caller uses next, and `regs.tcr` describes them.
pub unsafe fn enable(regs: &MmuRegs) {
    // SAFETY: the caller's contract. The registers are written while the MMU is off; the
    // local TLB is invalidated before translation starts, and the ISB after SCTLR makes the
    // following instructions run translated.
    unsafe {
        asm!(
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "msr ttbr0_el1, {ttbr0}",
            "msr ttbr1_el1, {ttbr1}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            "mrs {tmp}, sctlr_el1",
            "orr {tmp}, {tmp}, #1",          // M: stage-1 translation on
            "orr {tmp}, {tmp}, #(1 << 2)",   // C: data cacheable
            "orr {tmp}, {tmp}, #(1 << 12)",  // I: instruction cacheable
            "bic {tmp}, {tmp}, #(1 << 1)",   // A: no alignment faults
            "msr sctlr_el1, {tmp}",
            "isb",
            mair = in(reg) regs.mair,
            tcr = in(reg) regs.tcr,
            ttbr0 = in(reg) regs.ttbr0,
            ttbr1 = in(reg) regs.ttbr1,
            tmp = out(reg) _,
            options(nostack),
        );
    }
}

/// Switches `TTBR0_EL1` (root and ASID) on the executing CPU, without a TLB flush: entries are
/// tagged with the ASID.
///
/// # Safety
///
/// - EL1; the new table maps the executing code, stack and data like the old one, and no
///   translation cached for the new ASID is stale.
pub unsafe fn switch_ttbr0(ttbr0: u64) {
    // SAFETY: the caller's contract; the ISB makes later accesses use the new table.
    unsafe { asm!("msr ttbr0_el1, {}", "isb", in(reg) ttbr0, options(nostack)) };
}

/// Returns `(MAIR, TCR, SCTLR)` as the CPU has them.
pub fn read_regs() -> (u64, u64, u64) {
    let (mair, tcr, sctlr): (u64, u64, u64);
    // SAFETY: EL1; reading system registers has no side effect.
    unsafe {
        asm!("mrs {}, mair_el1", "mrs {}, tcr_el1", "mrs {}, sctlr_el1",
             out(reg) mair, out(reg) tcr, out(reg) sctlr, options(nomem, nostack));
    }
    (mair, tcr, sctlr)
}

/// The `MAIR_EL1` value the formats' memory types assume.
pub const MAIR: u64 = AARCH64_MAIR;
