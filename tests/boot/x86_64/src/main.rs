//! The x86_64 machvm smoke kernel.
//!
//! Boots through QEMU's PVH entry (see [`boot`]), then, for the configuration named by
//! `config=` on the command line (`-append`):
//!
//! - `x86-4level`: builds 4-level tables (`X86Pml4`) with `machvm-page-table`, loads CR3;
//! - `x86-5level`: builds 5-level tables (`X86Pml5`) and turns on LA57 (leaving long mode for
//!   the switch, see [`boot`]);
//! - `x86-smp`: 4-level tables, plus a second CPU flushed by shootdown IPIs (see [`smp`]),
//!
//! and runs the shared checks of `machvm_boot_common::checks` plus the x86-only ones below
//! on the real (emulated) MMU, flushing through `machvm-tlb`'s `X86Tlb`; then the heap,
//! ASLR and VM checks (`machvm_boot_common::vm`: machvm's `VmSystem` with page faults taken
//! by the #PF handler, and its reports). The verdict goes to the host as `SMOKE PASS` /
//! `SMOKE FAIL: …` on COM1 and the `isa-debug-exit` status.
#![no_std]
#![no_main]

mod boot;
mod mmu;
mod serial;
mod smp;
mod trap;

extern crate alloc;

use alloc::boxed::Box;
use core::arch::asm;
use core::sync::atomic::{AtomicPtr, Ordering};

use machvm::shootdown::{ShootdownParts, ShootdownTlbs};
use machvm_addr::{PageSize, PhysAddr, VirtAddr};
use machvm_aslr::HwEntropy;
use machvm_boot_common::fault::{Cpu, ProbeRead};
use machvm_boot_common::heap::{self, ARENA_PAGES, KernelCpu, KernelHeap};
use machvm_boot_common::report::{self, info, pass};
use machvm_boot_common::space::DATA;
use machvm_boot_common::vm;
use machvm_boot_common::{AddressSpace, FramePool, Platform, checks, cmdline, console};
use machvm_boot_common::{ensure, fault, kprintln, must};
use machvm_page_table::{Format, X86Pml4, X86Pml5};
use machvm_sync::Mutex;
use machvm_sync::{CpuId, CpuIndex};
use machvm_tlb::arch::{Cr3, X86Features, X86Tlb, write_cr3};
use machvm_tlb::{Asid, TlbOps};

static PLATFORM: Platform = Platform {
    put_byte: serial::put_byte,
    exit: serial::exit,
};

/// The kernel heap: kalloc's zones over the static arena (per-CPU caches for CPUs 0 and 1).
#[global_allocator]
static HEAP: KernelHeap<X86Cpu> = KernelHeap::new(&ARENA_PAGES, &KERNEL_CPU, 0x6d61_6368_766d_0002);
static KERNEL_CPU: KernelCpu<X86Cpu> = KernelCpu::new();

/// Bytes of the frame pool the page tables and test frames come from.
const POOL_BYTES: usize = 4 << 20;

#[repr(C, align(4096))]
struct PoolMemory([u8; POOL_BYTES]);

/// The frame pool's memory (in `.bss`, so identity-mapped with the kernel image).
static mut POOL_MEMORY: PoolMemory = PoolMemory([0; POOL_BYTES]);

/// Where the kernel-pages checks map zone memory (upper half, canonical under LA57 too).
const KMEM_WINDOW: u64 = 0xffff_ff00_0000_0000;

/// The ASID (PCID when enabled) of the test mappings.
const TEST_ASID: Asid = Asid::new(1);

/// Offset of `cmdline_paddr` in `hvm_start_info`.
const START_INFO_CMDLINE: u64 = 24;
/// Magic value at offset 0 of `hvm_start_info`.
const START_INFO_MAGIC: u32 = 0x336e_c578;

/// The probes of an x86_64 CPU.
struct X86Cpu;

impl Cpu for X86Cpu {
    fn index() -> usize {
        cpu_index()
    }

    fn read(va: u64) -> Option<u64> {
        // SAFETY: the probe performs one read and the #PF handler resumes it on a fault.
        let ProbeRead { value, faulted } = unsafe { trap::probe_read(va) };
        (faulted == 0).then_some(value)
    }

    fn write(va: u64, value: u64) -> bool {
        // SAFETY: the probe performs one write and the #PF handler resumes it on a fault;
        // callers only write to test pages, never to memory Rust code owns.
        unsafe { trap::probe_write(va, value) == 0 }
    }
}

/// Returns the executing CPU's initial APIC ID (CPUID leaf 1, EBX[31:24]).
pub fn cpu_index() -> usize {
    let ebx: u64;
    // SAFETY: CPUID is unprivileged and only writes EAX..EDX; RBX (reserved by LLVM) is
    // preserved through a scratch register.
    unsafe {
        asm!(
            "mov {tmp}, rbx",
            "cpuid",
            "xchg {tmp}, rbx",
            tmp = out(reg) ebx,
            inout("eax") 1u32 => _,
            inout("ecx") 0u32 => _,
            out("edx") _,
            options(nomem, nostack, preserves_flags),
        );
    }
    ((ebx >> 24) & 0xff) as usize
}

/// Returns whether the CPU supports 5-level paging (CPUID.(EAX=7,ECX=0):ECX[16]).
fn has_la57() -> bool {
    let ecx: u32;
    // SAFETY: as in `cpu_index`.
    unsafe {
        asm!(
            "mov {tmp}, rbx",
            "cpuid",
            "xchg {tmp}, rbx",
            tmp = out(reg) _,
            inout("eax") 7u32 => _,
            inout("ecx") 0u32 => ecx,
            out("edx") _,
            options(nomem, nostack, preserves_flags),
        );
    }
    ecx & (1 << 16) != 0
}

/// Copies the PVH command line into `buf` and returns it.
fn read_cmdline(start_info: u32, buf: &mut [u8; 256]) -> &str {
    let base = u64::from(start_info);
    // SAFETY: QEMU's PVH loader put `hvm_start_info` at `start_info`, in low memory that the
    // boot tables identity-map; its first word is the magic number.
    let magic = unsafe { core::ptr::read_volatile(base as *const u32) };
    if magic != START_INFO_MAGIC {
        return "";
    }
    // SAFETY: as above; offset 24 holds the 64-bit physical address of the command line.
    let paddr = unsafe { core::ptr::read_volatile((base + START_INFO_CMDLINE) as *const u64) };
    if paddr == 0 {
        return "";
    }
    for (i, b) in buf.iter_mut().enumerate().take(255) {
        // SAFETY: the command line is a NUL-terminated string in identity-mapped low memory;
        // we stop at the NUL (or after 255 bytes).
        *b = unsafe { core::ptr::read_volatile((paddr + i as u64) as *const u8) };
        if *b == 0 {
            break;
        }
    }
    cmdline::from_bytes(buf)
}

/// The 64-bit entry point, called by the boot code with the PVH start-info address.
#[unsafe(no_mangle)]
extern "C" fn kmain(start_info: u32) -> ! {
    console::set_platform(&PLATFORM);
    // SAFETY: CPL0, interrupts off, only this CPU runs.
    unsafe { trap::init_idt(true) };
    let mut buf = [0u8; 256];
    let cmdline = read_cmdline(start_info, &mut buf);
    let config = cmdline::value(cmdline, "config").unwrap_or("x86-4level");
    kprintln!("machvm x86_64 smoke kernel: config {config} (cmdline \"{cmdline}\")");

    let start = core::ptr::addr_of_mut!(POOL_MEMORY) as u64;
    // SAFETY: the pool memory is a static nothing else uses, identity-mapped by the boot
    // tables and by every table we build.
    let pool =
        Mutex::new(unsafe { FramePool::new(start, start + POOL_BYTES as u64, PageSize::Size4KiB) });

    match config {
        "x86-4level" => run::<X86Pml4>(&pool, false, false),
        "x86-smp" => run::<X86Pml4>(&pool, false, true),
        "x86-5level" => {
            ensure!(has_la57(), "the CPU has no LA57 (use -cpu max)");
            run::<X86Pml5>(&pool, true, false)
        }
        other => report::fail(format_args!("unknown config {other}")),
    }
}

/// Builds the kernel's tables of format `F`, switches to them, and runs the checks.
fn run<F: Format>(pool: &Mutex<FramePool>, la57: bool, smp: bool) -> ! {
    let pt = mmu::build_kernel_table::<F>(&mut pool.lock());
    let root = pt.root_register(0);
    if la57 {
        // SAFETY: CPL0, interrupts off; the new PML5 identity-maps this code, its stack and
        // every kernel address, and lies below 4 GiB (in .bss).
        unsafe { boot::switch_to_la57(root) };
    } else {
        // SAFETY: CPL0 in IA-32e mode; the new PML4 identity-maps the running code, the stack
        // and all kernel data with the attributes they had; PCIDs are off, so the PCID field
        // is 0.
        unsafe { write_cr3(Cr3::from_bits(root)) };
    }
    // SAFETY: CPL0, reading CR3/CR4 has no side effect.
    let (cr3, cr4) = unsafe {
        (
            machvm_tlb::arch::read_cr3().bits(),
            machvm_tlb::arch::read_cr4(),
        )
    };
    ensure!(cr3 == root, "CR3 reads {cr3:#x}, loaded {root:#x}");
    ensure!(
        (cr4 & machvm_tlb::arch::CR4_LA57 != 0) == la57,
        "CR4.LA57 is {}, wanted {la57}",
        cr4 & machvm_tlb::arch::CR4_LA57 != 0
    );
    pass(
        "paging",
        format_args!(
            "{} tables by machvm-page-table live: CR3 {cr3:#x}, CR4 {cr4:#x}",
            F::NAME
        ),
    );

    let features = X86Features::detect();
    // SAFETY: CPL0 with IA-32e paging on, on the CPU the features were read on; CR4.PCIDE and
    // LA57 do not change from here on.
    let tlb = unsafe { X86Tlb::new(features) };
    info(
        "pcid",
        format_args!(
            "PCID {} INVPCID {} (PCIDE {}): {}",
            features.has_pcid(),
            features.has_invpcid(),
            tlb.is_pcid_enabled(),
            if tlb.caps().tagged {
                "tagged flushes"
            } else {
                "no PCIDs: ASID flushes reload CR3, full flushes toggle CR4.PGE"
            }
        ),
    );
    let space = AddressSpace::from_table(pt, pool, &tlb, TEST_ASID);
    checks::run_all::<F, X86Tlb, X86Cpu>(&space);
    checks::single_page_at::<F, X86Tlb, X86Cpu>(&space, "upper-half", 0xffff_ffff_c000_0000);
    if la57 {
        checks::single_page_at::<F, X86Tlb, X86Cpu>(&space, "la57-lower", 0x0080_0000_0000_0000);
        checks::single_page_at::<F, X86Tlb, X86Cpu>(&space, "la57-upper", 0xff00_0000_0000_0000);
    }
    global_flush::<F>(&space);
    if smp {
        smp::run::<F>(&space, root);
    }
    heap::check(&HEAP);
    // Zones over kernel pages in the upper half of the kernel's own table.
    machvm_boot_common::kmem::check::<F, X86Tlb, X86Cpu>(&space, KMEM_WINDOW);
    let width = if la57 {
        machvm_addr::VaWidth::X86_64_5LEVEL
    } else {
        machvm_addr::VaWidth::X86_64_4LEVEL
    };
    let config = must!(
        machvm_aslr::LayoutConfig::x86_64(width),
        "x86_64 layout configuration"
    );
    machvm_boot_common::aslr::check(machvm_aslr::arch::X86Rng::detect(), config);
    vm_checks::<F>(&space, pool, features, smp);
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

/// The TLB operations `load_root` switches address spaces with (set by [`vm_checks`]).
static ROOT_TLB: AtomicPtr<X86Tlb> = AtomicPtr::new(core::ptr::null_mut());

/// Loads a root-register value from `VmSystem::activate` (or the kernel's own CR3) through
/// `X86Tlb::switch_address_space`: with PCIDs on, the low 12 bits are the PCID; with them
/// off (as under TCG) they are dropped and the load flushes every non-global translation.
fn load_root(value: u64) {
    // SAFETY: ROOT_TLB holds null or a leaked, never-freed `X86Tlb`.
    let Some(tlb) = (unsafe { ROOT_TLB.load(Ordering::Acquire).as_ref() }) else {
        report::fail(format_args!("load_root before the VM checks set it up"))
    };
    let root = PhysAddr::new(value & !0xfff);
    let pcid = Asid::new((value & 0xfff) as u16);
    // SAFETY: CPL0, interrupts off on CPU 0 (on CPU 1 no IPI handler switches tables); the
    // value is the kernel's PML4/PML5 or a space's, which links the kernel's root entries;
    // every change to a space's table was flushed for its PCID by the VM system.
    let switched = unsafe { tlb.switch_address_space(root, pcid, false) };
    must!(switched, "loading CR3 {value:#x}");
}

/// The CPU index for machvm's shootdown provider.
#[derive(Debug)]
struct ApicCpu;

// SAFETY: the initial APIC ID is unique per CPU and below 2 on the configurations with a
// second CPU, which is what the shootdown engine is sized for.
unsafe impl CpuId for ApicCpu {
    fn current_cpu(&self) -> CpuIndex {
        CpuIndex::new(cpu_index() as u32)
    }
}

/// machvm's `VmSystem` on this MMU (see `machvm_boot_common::vm`): every space's PML4
/// (PML5) links the kernel's first root entry, which maps the kernel image, low memory, the
/// frame pool and the local APIC; spaces live one root entry above it. One CPU flushes
/// through `TlbFlush` (`invlpg` / CR3 reload); `x86-smp` through `ShootdownTlbs` and the
/// local APIC IPIs CPU 1 already serves.
fn vm_checks<F: Format>(
    space: &AddressSpace<'_, F, X86Tlb>,
    pool: &Mutex<FramePool>,
    features: X86Features,
    smp: bool,
) {
    // SAFETY: CPL0 with paging on; the same features as the kernel's own X86Tlb. Leaked:
    // the VM system's flush hooks and `load_root` use it for the rest of the run.
    let tlb: &'static X86Tlb = Box::leak(Box::new(unsafe { X86Tlb::new(features) }));
    ROOT_TLB.store(core::ptr::from_ref(tlb).cast_mut(), Ordering::Release);
    let image_end = core::ptr::addr_of!(mmu::__bss_end) as u64;
    let kernel_top = image_end.max(mmu::LAPIC_BASE + 0x1000);
    let (window, kernel_len) = vm::layout::<F>(kernel_top);
    let (kernel, kernel_root) = {
        let pt = space.pt.lock();
        let shared = must!(
            pt.share_root(VirtAddr::new(0), kernel_len),
            "sharing the kernel's root entries"
        );
        (shared, pt.root_register(0))
    };
    let mut keys = vm::BootKeys::new(HwEntropy::new(machvm_aslr::arch::X86Rng::detect()));
    if smp {
        static IPI: smp::LapicIpi = smp::LapicIpi;
        static CPU: ApicCpu = ApicCpu;
        let parts = ShootdownParts {
            engine: smp::engine(),
            local: tlb,
            ipi: &IPI,
            cpu: &CPU,
        };
        let m = vm::Machine {
            pool,
            flush: ShootdownTlbs::new(parts),
            kernel,
            window,
            load_root,
            kernel_root,
            ipis_served: Some(smp::ipis_handled),
            smp: true,
        };
        vm::run::<F, _, X86Cpu, _>(m, &HEAP, &mut keys);
    } else {
        let m = vm::Machine {
            pool,
            flush: vm::LocalTlbs { ops: tlb },
            kernel,
            window,
            load_root,
            kernel_root,
            ipis_served: None,
            smp: false,
        };
        vm::run::<F, _, X86Cpu, _>(m, &HEAP, &mut keys);
    }
}

/// Maps 40 *global* pages, reads them, and unmaps them through a flush for the kernel ASID:
/// the gather must invalidate everything (`INVPCID` type 2, or the CR4.PGE toggle here),
/// since only that drops global translations; every page must fault afterwards.
fn global_flush<F: Format>(space: &AddressSpace<'_, F, X86Tlb>) {
    let base = 0x45_0000_0000u64;
    let n = checks::RANGE_PAGES;
    let g = F::GRANULE.bytes();
    let attrs = DATA.global(true);
    let mut frames = [0u64; checks::RANGE_PAGES as usize];
    for (i, f) in frames.iter_mut().enumerate() {
        *f = space.frame_with(checks::pattern(0x6, i as u64));
        must!(
            space.map(base + i as u64 * g, *f, F::GRANULE, &attrs),
            "mapping global page {i}"
        );
    }
    for i in 0..n {
        let got = X86Cpu::read(base + i * g);
        ensure!(
            got == Some(checks::pattern(0x6, i)),
            "global page {i} reads {got:x?}"
        );
    }
    let cpu = cpu_index();
    let faults = fault::count(cpu);
    let flushed = must!(
        space.unmap_range_as(base, n * g, Asid::KERNEL),
        "unmapping global pages"
    );
    for i in 0..n {
        ensure!(
            X86Cpu::read(base + i * g).is_none(),
            "global page {i} survived the flush"
        );
    }
    ensure!(fault::count(cpu) == faults + n, "expected {n} faults");
    ensure!(
        flushed.full == 1,
        "global flush issued {} full invalidations",
        flushed.full
    );
    for f in frames {
        space.free_frame(f);
    }
    pass(
        "global",
        format_args!("{n} global pages dropped by one full flush (CR4.PGE toggle / INVPCID 2)"),
    );
}
