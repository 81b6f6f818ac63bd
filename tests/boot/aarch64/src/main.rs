//! The aarch64 machvm smoke kernel (QEMU `-M virt -cpu max`).
//!
//! Boots at EL1 (see [`boot`]), reads `config=` from the semihosting command line, builds its
//! tables with `machvm-page-table` in the configuration's format, turns the MMU on with
//! machvm's `AARCH64_MAIR` and the tables' `root_register`, and runs the shared checks plus
//! the aarch64 ones (two ASIDs, the range and ASID `TLBI` paths, a `TTBR1` upper-half table,
//! and in `a64-smp` a second CPU that must see CPU 0's broadcast invalidations); then the
//! heap, PAC, ASLR and VM checks (`machvm_boot_common::vm`: machvm's `VmSystem` with page
//! faults taken by the data-abort handler, and its reports).
//!
//! | config | format |
//! |---|---|
//! | `a64-4k48` | `A64Granule4K48` (4 levels) |
//! | `a64-4k39` | `A64Granule4K39` (3 levels) |
//! | `a64-16k47` | `A64Granule16K47` (3 levels, 2048-entry root) |
//! | `a64-16k48` | `A64Granule16K48` (4 levels, 2-entry root) |
//! | `a64-smp` | `A64Granule4K48`, plus the two-CPU check (`-smp 2`) |
#![no_std]
#![no_main]

mod boot;
mod exceptions;
mod mmu;
mod platform;
mod smp;

extern crate alloc;

use alloc::boxed::Box;
use core::arch::asm;

use machvm::shootdown::{ShootdownParts, ShootdownTlbs};
use machvm_addr::PageSize;
use machvm_aslr::HwEntropy;
use machvm_boot_common::checks::{self, pattern};
use machvm_boot_common::fault::{Cpu, ProbeRead};
use machvm_boot_common::heap::{self, ARENA_PAGES, KernelCpu, KernelHeap};
use machvm_boot_common::report::{self, info, pass};
use machvm_boot_common::space::DATA;
use machvm_boot_common::vm;
use machvm_boot_common::{AddressSpace, FramePool, Platform, cmdline, console};
use machvm_boot_common::{ensure, kprintln, must};
use machvm_page_table::{
    A64Granule4K39, A64Granule4K48, A64Granule16K47, A64Granule16K48, Format, PageTable, Region,
};
use machvm_sync::Mutex;
use machvm_sync::{CpuId, CpuIndex};
use machvm_tlb::arch::{A64Features, A64Tlb, Granule};
use machvm_tlb::{Asid, TlbOps};

static PLATFORM: Platform = Platform {
    put_byte: platform::put_byte,
    exit: platform::exit,
};

/// The kernel heap: kalloc's zones over the static arena (per-CPU caches for CPUs 0 and 1).
#[global_allocator]
static HEAP: KernelHeap<A64Cpu> = KernelHeap::new(&ARENA_PAGES, &KERNEL_CPU, 0x6d61_6368_766d_0001);
static KERNEL_CPU: KernelCpu<A64Cpu> = KernelCpu::new();

/// Bytes of the frame pool (tables, test frames; 16 KiB frames need more).
const POOL_BYTES: usize = 8 << 20;

#[repr(C, align(65536))]
struct PoolMemory([u8; POOL_BYTES]);

/// The frame pool's memory (in `.bss`, identity-mapped with the kernel image).
static mut POOL_MEMORY: PoolMemory = PoolMemory([0; POOL_BYTES]);

/// Where the kernel-pages checks map zone memory (below 2^39, so every granule reaches it).
const KMEM_WINDOW: u64 = 0x4c_0000_0000;

/// The ASIDs of the two test address spaces.
const ASID_1: Asid = Asid::new(1);
const ASID_2: Asid = Asid::new(2);

/// The probes of an aarch64 CPU.
struct A64Cpu;

impl Cpu for A64Cpu {
    fn index() -> usize {
        cpu_index()
    }

    fn read(va: u64) -> Option<u64> {
        // SAFETY: the probe performs one read and the abort handler resumes it on a fault.
        let ProbeRead { value, faulted } = unsafe { exceptions::probe_read(va) };
        (faulted == 0).then_some(value)
    }

    fn write(va: u64, value: u64) -> bool {
        // SAFETY: one write, resumed on a fault; callers only write to test pages.
        unsafe { exceptions::probe_write(va, value) == 0 }
    }
}

/// Returns the executing CPU's index (`MPIDR_EL1.Aff0` on the virt board).
pub fn cpu_index() -> usize {
    let mpidr: u64;
    // SAFETY: EL1; reading MPIDR_EL1 has no side effect.
    unsafe { asm!("mrs {}, mpidr_el1", out(reg) mpidr, options(nomem, nostack)) };
    (mpidr & 0xff) as usize
}

/// Returns `ID_AA64MMFR0_EL1`.
fn mmfr0() -> u64 {
    let value: u64;
    // SAFETY: EL1; ID registers are readable and side-effect free.
    unsafe { asm!("mrs {}, id_aa64mmfr0_el1", out(reg) value, options(nomem, nostack)) };
    value
}

/// The boot CPU's Rust entry point.
#[unsafe(no_mangle)]
extern "C" fn kmain() -> ! {
    console::set_platform(&PLATFORM);
    let mut buf = [0u8; 256];
    let len = platform::read_cmdline(&mut buf);
    let cmdline = cmdline::from_bytes(&buf[..len]);
    let config = cmdline::value(cmdline, "config").unwrap_or("a64-4k48");
    kprintln!("machvm aarch64 smoke kernel: config {config} (cmdline \"{cmdline}\")");

    let start = core::ptr::addr_of_mut!(POOL_MEMORY) as u64;
    let end = start + POOL_BYTES as u64;
    let granule = match config {
        "a64-16k47" | "a64-16k48" => PageSize::Size16KiB,
        _ => PageSize::Size4KiB,
    };
    // SAFETY: the pool memory is a static nothing else uses, identity-accessible with the MMU
    // off and identity-mapped by every table we build.
    let pool = Mutex::new(unsafe { FramePool::new(start, end, granule) });
    match config {
        "a64-4k48" => run::<A64Granule4K48>(&pool, false),
        "a64-4k39" => run::<A64Granule4K39>(&pool, false),
        "a64-16k47" => run::<A64Granule16K47>(&pool, false),
        "a64-16k48" => run::<A64Granule16K48>(&pool, false),
        "a64-smp" => run::<A64Granule4K48>(&pool, true),
        other => report::fail(format_args!("unknown config {other}")),
    }
}

/// Builds the tables of format `F`, turns the MMU on, and runs the checks.
fn run<F: Format>(pool: &Mutex<FramePool>, smp: bool) -> ! {
    let mmfr0 = mmfr0();
    let tgran16 = (mmfr0 >> 20) & 0xf;
    ensure!(
        F::GRANULE != PageSize::Size16KiB || tgran16 != 0,
        "the CPU has no 16 KiB granule (ID_AA64MMFR0_EL1 {mmfr0:#x}); use -cpu max"
    );
    // SAFETY: EL1, where the ID registers are readable.
    let features = unsafe { A64Features::detect() };
    let asid16 = features.has_asid16();
    let asid_bits = if asid16 { 16 } else { 8 };
    let hw_access = mmu::has_hw_access_flag();

    // Three tables: the kernel's TTBR0 table (ASID 1), a second TTBR0 table (ASID 2) with
    // the same kernel mappings, and a TTBR1 table for the upper half.
    let (pt1, pt2, upper) = {
        let mut pool = pool.lock();
        let pt1 = mmu::build_kernel_table::<F>(&mut pool);
        let pt2 = mmu::build_kernel_table::<F>(&mut pool);
        // SAFETY: as for the kernel tables: pool frames are identity-mapped.
        let mapper = unsafe { machvm_addr::IdentityMapper::new() };
        let upper = must!(
            PageTable::<F, _>::new(Region::Upper, mapper, &mut *pool),
            "creating the TTBR1 table"
        );
        (pt1, pt2, upper)
    };
    let regs = mmu::MmuRegs {
        mair: mmu::MAIR,
        tcr: mmu::tcr::<F>(asid16, hw_access),
        ttbr0: pt1.root_register(ASID_1.as_u16()),
        ttbr1: upper.root_register(0),
    };
    // SAFETY: EL1, MMU off; the TTBR0 table identity-maps the image (code, stacks, data, the
    // pool) and the UART, and TCR describes the format's geometry.
    unsafe { mmu::enable(&regs) };
    let (mair, tcr, sctlr) = mmu::read_regs();
    ensure!(sctlr & 1 == 1, "SCTLR_EL1.M is clear ({sctlr:#x})");
    pass(
        "mmu",
        format_args!(
            "{} ({} VA bits) live: MAIR {mair:#x} TCR {tcr:#x} TTBR0 {:#x} SCTLR {sctlr:#x}",
            F::NAME,
            mmu::va_bits::<F>(),
            regs.ttbr0
        ),
    );

    let granule = must!(Granule::try_from(F::GRANULE), "granule");
    // SAFETY: EL1 with the MMU on; the encoder matches TCR (granule in both halves, AS set
    // exactly when 16-bit ASIDs are used, no LPA2) and range TLBIs only if the CPU has them.
    let tlb = must!(
        unsafe { A64Tlb::new(granule, asid_bits, features.has_range()) },
        "A64Tlb"
    );
    info(
        "tlb",
        format_args!(
            "FEAT_TLBIRANGE {} ASID bits {asid_bits} FEAT_TTL {}: caps {:?}",
            features.has_range(),
            features.has_ttl(),
            tlb.caps()
        ),
    );

    let space1 = AddressSpace::from_table(pt1, pool, &tlb, ASID_1);
    checks::run_all::<F, A64Tlb, A64Cpu>(&space1);

    // The same range check through TLB operations without range instructions: the gather
    // must fall back to `TLBI ASIDE1IS`.
    // SAFETY: as for `tlb`, without range instructions.
    let no_range = must!(
        unsafe { A64Tlb::new(granule, asid_bits, false) },
        "A64Tlb without ranges"
    );
    let plain = AddressSpace::from_table(space1.pt.into_inner(), pool, &no_range, ASID_1);
    checks::range::<F, A64Tlb, A64Cpu>(&plain, "range-asid");
    let space1 = AddressSpace::from_table(plain.pt.into_inner(), pool, &tlb, ASID_1);

    let space2 = AddressSpace::from_table(pt2, pool, &tlb, ASID_2);
    asids::<F>(&space1, &space2);

    // Upper-half mappings are tagged with TTBR0's ASID (TCR_EL1.A1 = 0).
    let upper = AddressSpace::from_table(upper, pool, &tlb, ASID_1);
    checks::single_page_at::<F, A64Tlb, A64Cpu>(&upper, "ttbr1", 0xffff_ffff_c000_0000);

    if smp {
        smp::run::<F>(&space1, &regs);
    }
    heap::check(&HEAP);
    // Zones over kernel pages in the kernel's own (TTBR0) table.
    machvm_boot_common::kmem::check::<F, A64Tlb, A64Cpu>(&space1, KMEM_WINDOW);
    pac();
    // machvm-aslr lays out 39- and 48-bit address spaces; the 47-bit configuration reports
    // the 48-bit layout.
    let width = match mmu::va_bits::<F>() {
        39 => machvm_addr::VaWidth::AARCH64_39,
        _ => machvm_addr::VaWidth::AARCH64_48,
    };
    // SAFETY: EL1, where ID_AA64ISAR0_EL1 is readable; RNDR runs only if it says so.
    let rng = unsafe { machvm_aslr::arch::A64Rng::detect() };
    let config = must!(
        machvm_aslr::LayoutConfig::aarch64(width, F::GRANULE),
        "aarch64 layout configuration"
    );
    machvm_boot_common::aslr::check(rng, config);
    vm_checks::<F>(
        &space1,
        pool,
        granule,
        asid_bits,
        features.has_range(),
        hw_access,
        smp,
    );
    let (in_use, untouched) = {
        let pool = pool.lock();
        (pool.in_use(), pool.untouched_bytes())
    };
    kprintln!(
        "frames in use at the end: {in_use} (pool never touched: {} KiB)",
        untouched >> 10
    );
    report::finish()
}

/// Loads a root-register value from `VmSystem::activate` (TTBR0 with the space's ASID) or
/// the kernel's own table.
fn load_root(value: u64) {
    // SAFETY: EL1; the kernel's table and every space's table (which links the kernel's
    // root entries) map the kernel alike, with global entries; the VM system flushed every
    // change to a space's table for its ASID, and the ASIDs it hands out were flushed before
    // its first space ran (`vm_checks`).
    unsafe { mmu::switch_ttbr0(value) }
}

/// The CPU index for machvm's shootdown provider.
#[derive(Debug)]
struct MpidrCpu;

// SAFETY: `MPIDR_EL1.Aff0` is unique per CPU on the virt board and below 2 on the
// configuration with a second CPU, which is what the shootdown engine is sized for.
unsafe impl CpuId for MpidrCpu {
    fn current_cpu(&self) -> CpuIndex {
        CpuIndex::new(cpu_index() as u32)
    }
}

/// machvm's `VmSystem` on this MMU (see `machvm_boot_common::vm`). The kernel lives in
/// `TTBR0`'s half (identity-mapped), so every space's table links the kernel table's root
/// entries that map it, and spaces live in root entries above them; loading a space is one
/// `TTBR0_EL1` write (root + ASID, no flush). One CPU flushes through `TlbFlush`
/// (`TLBI …IS` by VA / ASID); `a64-smp` through `ShootdownTlbs` (broadcast: no IPI).
#[allow(clippy::too_many_arguments)]
fn vm_checks<F: Format>(
    kernel: &AddressSpace<'_, F, A64Tlb>,
    pool: &Mutex<FramePool>,
    granule: Granule,
    asid_bits: u8,
    range: bool,
    hw_access: bool,
    smp: bool,
) {
    ensure!(
        hw_access,
        "the CPU does not set the Access flag (no FEAT_HAFDBS): the VM checks need it"
    );
    // SAFETY: EL1 with the MMU on, as for the kernel's own A64Tlb. Leaked: the VM system's
    // flush hooks use it for the rest of the run.
    let tlb: &'static A64Tlb = Box::leak(Box::new(must!(
        unsafe { A64Tlb::new(granule, asid_bits, range) },
        "A64Tlb"
    )));
    // The kernel's checks used ASIDs 1 and 2, which the VM system hands out again.
    tlb.sync();
    tlb.invalidate_all();
    tlb.complete();
    let image_end = core::ptr::addr_of!(mmu::__bss_end) as u64;
    let (window, kernel_len) = vm::layout::<F>(image_end);
    let (shared, kernel_root) = {
        let pt = kernel.pt.lock();
        let shared = must!(
            pt.share_root(machvm_addr::VirtAddr::new(0), kernel_len),
            "sharing the kernel's root entries"
        );
        // ASID 0 is never a space's: the kernel's own table runs with it.
        (shared, pt.root_register(0))
    };
    load_root(kernel_root);
    // SAFETY: EL1, where ID_AA64ISAR0_EL1 is readable; RNDR runs only if it says so.
    let rng = unsafe { machvm_aslr::arch::A64Rng::detect() };
    let mut keys = vm::BootKeys::new(HwEntropy::new(rng));
    if smp {
        static IPI: smp::NoIpi = smp::NoIpi;
        static CPU: MpidrCpu = MpidrCpu;
        let parts = ShootdownParts {
            engine: &smp::ENGINE,
            local: tlb,
            ipi: &IPI,
            cpu: &CPU,
        };
        let m = vm::Machine {
            pool,
            flush: ShootdownTlbs::new(parts),
            kernel: shared,
            window,
            load_root,
            kernel_root,
            ipis_served: None,
            smp: true,
        };
        vm::run::<F, _, A64Cpu, _>(m, &HEAP, &mut keys);
    } else {
        let m = vm::Machine {
            pool,
            flush: vm::LocalTlbs { ops: tlb },
            kernel: shared,
            window,
            load_root,
            kernel_root,
            ipis_served: None,
            smp: false,
        };
        vm::run::<F, _, A64Cpu, _>(m, &HEAP, &mut keys);
    }
}

/// Enables the data key A (`APDAKey{Lo,Hi}_EL1`, `SCTLR_EL1.EnDA`) when the CPU has
/// pointer authentication, and runs the signed-freelist check.
fn pac() {
    let Some(keys) = machvm_zone_alloc::PacKeys::detect() else {
        info(
            "zone-pac",
            format_args!("no FEAT_PAuth on this CPU: links use the XOR encoding"),
        );
        return;
    };
    // SAFETY: EL1. The key registers are written before any signing, and EnDA only affects
    // PACDA/AUTDA-class instructions, which nothing has executed yet.
    unsafe {
        asm!(
            "msr S3_0_C2_C2_0, {lo}", // APDAKeyLo_EL1
            "msr S3_0_C2_C2_1, {hi}", // APDAKeyHi_EL1
            "mrs {t}, sctlr_el1",
            "orr {t}, {t}, #(1 << 27)", // EnDA
            "msr sctlr_el1, {t}",
            "isb",
            lo = in(reg) 0x0123_4567_89ab_cdefu64,
            hi = in(reg) 0xfedc_ba98_7654_3210u64,
            t = out(reg) _,
            options(nostack)
        );
    }
    heap::check_pac(keys);
}

/// Two address spaces with different ASIDs map the same VA to different frames: switching
/// `TTBR0_EL1` (root + ASID, no flush) must give each its own translation, and a flush for one
/// ASID, issued while the other runs, must take effect there.
fn asids<F: Format>(s1: &AddressSpace<'_, F, A64Tlb>, s2: &AddressSpace<'_, F, A64Tlb>) {
    let va = 0x46_0000_0000u64;
    let g = F::GRANULE.bytes();
    let a = s1.frame_with(pattern(0x21, 0));
    let b = s2.frame_with(pattern(0x22, 0));
    let anchors = [s1.frame_with(0), s2.frame_with(0)];
    must!(s1.map(va + g, anchors[0], F::GRANULE, &DATA), "anchor 1");
    must!(s2.map(va + g, anchors[1], F::GRANULE, &DATA), "anchor 2");
    must!(s1.map(va, a, F::GRANULE, &DATA), "mapping A in ASID 1");
    must!(s2.map(va, b, F::GRANULE, &DATA), "mapping B in ASID 2");
    let (ttbr1, ttbr2) = (s1.root_register(), s2.root_register());
    let switch = |ttbr: u64| {
        // SAFETY: EL1; both tables identity-map the kernel identically (global entries), and
        // every change to either table was flushed for its ASID.
        unsafe { mmu::switch_ttbr0(ttbr) }
    };
    let read = A64Cpu::read;
    ensure!(read(va) == Some(pattern(0x21, 0)), "ASID 1 does not see A");
    switch(ttbr2);
    let in2 = read(va);
    switch(ttbr1);
    let back = read(va);
    ensure!(
        in2 == Some(pattern(0x22, 0)),
        "ASID 2 reads {in2:x?}, expected B"
    );
    ensure!(
        back == Some(pattern(0x21, 0)),
        "back in ASID 1 reads {back:x?}"
    );
    pass(
        "asid-switch",
        format_args!(
            "{va:#x}: ASID 1 -> A, ASID 2 -> B, ASID 1 -> A again (TTBR0 {ttbr1:#x} / {ttbr2:#x})"
        ),
    );

    // Remap ASID 2's page while ASID 1 runs; the flush (TLBI VALE1IS, ASID 2) is issued from
    // ASID 1.
    let c = s2.frame_with(pattern(0x23, 0));
    let flushed = must!(s2.unmap_range(va, g), "unmapping B");
    must!(s2.map(va, c, F::GRANULE, &DATA), "mapping C in ASID 2");
    let in1 = read(va);
    switch(ttbr2);
    let in2 = read(va);
    switch(ttbr1);
    ensure!(
        in1 == Some(pattern(0x21, 0)),
        "ASID 1 lost A after ASID 2's flush: {in1:x?}"
    );
    ensure!(
        in2 == Some(pattern(0x23, 0)),
        "ASID 2 reads {in2:x?} after remap, expected C"
    );
    pass(
        "asid-flush",
        format_args!(
            "ASID 2 remapped B -> C from ASID 1 ({} page op): ASID 1 keeps A, ASID 2 sees C",
            flushed.pages
        ),
    );

    // Isolation, informational: make ASID 1's entry stale (unmap without flushing, map D),
    // then invalidate the VA for ASID 2 only. Tagged hardware keeps ASID 1's stale entry;
    // QEMU's TLB is not ASID-tagged, so it may drop it too (over-invalidation is allowed).
    let d = s1.frame_with(pattern(0x24, 0));
    // Cache ASID 1's translation of `va` first (switching ASIDs may have dropped it).
    ensure!(read(va) == Some(pattern(0x21, 0)), "ASID 1 does not see A");
    let pending = {
        let mut pt = s1.pt.lock();
        let (_, pending) = must!(pt.unmap(machvm_addr::VirtAddr::new(va)), "unmapping A");
        let mapped = must!(
            pt.map(
                machvm_addr::VirtAddr::new(va),
                machvm_addr::PhysAddr::new(d),
                F::GRANULE,
                &DATA,
                &mut *s1.pool.lock()
            ),
            "mapping D"
        );
        must!(s1.finish(&pt, mapped), "syncing D");
        pending
    };
    let stale = read(va);
    let tlb = s1.tlb;
    tlb.sync();
    tlb.invalidate_page(ASID_2, machvm_addr::VirtAddr::new(va), true);
    tlb.complete();
    let after_other = read(va);
    {
        let pt = s1.pt.lock();
        must!(s1.finish(&pt, pending), "flushing ASID 1");
    }
    let after_own = read(va);
    ensure!(
        after_own == Some(pattern(0x24, 0)),
        "ASID 1 reads {after_own:x?} after its flush, expected D"
    );
    let name = |v: Option<u64>| match v {
        Some(x) if x == pattern(0x21, 0) => "A (stale)",
        Some(x) if x == pattern(0x24, 0) => "D",
        _ => "other",
    };
    info(
        "asid-isolation",
        format_args!(
            "ASID 1 stale read {}; after TLBI for ASID 2 only: {} ({})",
            name(stale),
            name(after_other),
            match (name(stale), name(after_other)) {
                ("A (stale)", "A (stale)") => "entry kept: tagged invalidation",
                ("A (stale)", _) => "entry dropped: over-invalidation, allowed",
                _ => "no stale entry to observe",
            }
        ),
    );

    for (s, frames) in [(s1, [a, d]), (s2, [b, c])] {
        must!(s.unmap_range(va, 2 * g), "cleaning up");
        for f in frames {
            s.free_frame(f);
        }
    }
    s1.free_frame(anchors[0]);
    s2.free_frame(anchors[1]);
}
