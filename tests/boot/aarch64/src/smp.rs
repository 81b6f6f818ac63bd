//! The two-CPU check (`a64-smp`, QEMU `-smp 2`): CPU 1 runs on CPU 0's page tables and must
//! see every change CPU 0 makes, flushed only by CPU 0's broadcast (inner-shareable) `TLBI`s.
//!
//! CPU 0 starts CPU 1 with PSCI `CPU_ON` (`HVC`, the conduit of plain `-M virt`). CPU 1 turns
//! its MMU on with the same register values (same tables, same ASID), then follows CPU 0
//! through a few steps, each answered through shared atomics:
//!
//! 1. CPU 1 reads a page (→ A) and 40 range pages, caching their translations;
//! 2. CPU 0 remaps the page to B (unmap + `TlbFlush`: `TLBI VALE1IS`), CPU 1 must read B;
//! 3. CPU 0 unmaps the page and, through the `Shootdown` engine (broadcast path, no IPI), the
//!    40 pages; CPU 1 must fault on all 41 (its data aborts are counted).
//!
//! CPU 1 then serves jobs for the VM checks (`machvm_boot_common::smp_job`).

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use machvm_addr::VirtAddr;
use machvm_boot_common::checks::{RANGE_PAGES, pattern};
use machvm_boot_common::fault::{self, Cpu};
use machvm_boot_common::report::pass;
use machvm_boot_common::shootdown::ShootdownFlush;
use machvm_boot_common::space::DATA;
use machvm_boot_common::{AddressSpace, ensure, must};
use machvm_page_table::Format;
use machvm_sync::CpuIndex;
use machvm_tlb::arch::A64Tlb;
use machvm_tlb::{CpuMask, IpiSender, Shootdown};

use crate::mmu::{self, MmuRegs};
use crate::{A64Cpu, boot};

/// The page CPU 1 watches, and the start of its 40-page range.
const PAGE: u64 = 0x47_0000_0000;
const RANGE: u64 = 0x47_4000_0000;

/// PSCI `CPU_ON` (SMC64 function id).
const PSCI_CPU_ON: u64 = 0xc400_0003;

/// MMU registers for CPU 1, written by CPU 0 before `CPU_ON` and read by CPU 1 with its MMU
/// still off (TCG has no caches to maintain; real hardware would clean them to the PoC).
static mut SECONDARY_REGS: MmuRegs = MmuRegs {
    mair: 0,
    tcr: 0,
    ttbr0: 0,
    ttbr1: 0,
};
/// The step both CPUs are at (odd: CPU 1 answered).
static STEP: AtomicU64 = AtomicU64::new(0);
/// CPU 1's answers.
static ANSWERS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// Waits until `STEP` reaches `step`, or fails after a generous number of spins.
fn wait_for(step: u64, who: &str) {
    for _ in 0..200_000_000u64 {
        if STEP.load(Ordering::Acquire) >= step {
            return;
        }
        core::hint::spin_loop();
    }
    machvm_boot_common::report::fail(format_args!("{who} timed out waiting for step {step}"))
}

/// Broadcast TLB operations never need an IPI.
#[derive(Debug)]
pub struct NoIpi;

/// The shootdown engine of both CPUs (with broadcast `TLBI`s it only flushes locally).
pub static ENGINE: Shootdown<2> = Shootdown::new(1_000_000);

impl IpiSender for NoIpi {
    fn send(&self, target: CpuIndex) {
        machvm_boot_common::report::fail(format_args!(
            "an IPI to cpu {} was requested with broadcast TLBIs",
            target.as_u32()
        ))
    }
}

/// CPU 0's side.
pub fn run<F: Format>(space: &AddressSpace<'_, F, A64Tlb>, regs: &MmuRegs) {
    let g = F::GRANULE.bytes();
    let a = space.frame_with(pattern(0x31, 0));
    let b = space.frame_with(pattern(0x32, 0));
    let anchor = space.frame_with(0);
    must!(space.map(PAGE + g, anchor, F::GRANULE, &DATA), "anchor");
    must!(space.map(PAGE, a, F::GRANULE, &DATA), "mapping A");
    let mut frames = [0u64; RANGE_PAGES as usize];
    for (i, f) in frames.iter_mut().enumerate() {
        *f = space.frame_with(pattern(0x33, i as u64));
        must!(
            space.map(RANGE + i as u64 * g, *f, F::GRANULE, &DATA),
            "range page {i}"
        );
    }

    // SAFETY: CPU 1 is not running yet; nothing else accesses the static.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!(SECONDARY_REGS), *regs) };
    let stack = core::ptr::addr_of!(boot::secondary_stack_top) as u64;
    let ret: i64;
    // SAFETY: PSCI CPU_ON through HVC (plain -M virt's conduit): starts CPU 1 (MPIDR 1) at
    // `secondary_entry` with its own stack in x0. SMCCC calls clobber x0-x17.
    unsafe {
        asm!(
            "hvc #0",
            inout("x0") PSCI_CPU_ON => ret,
            in("x1") 1u64,
            in("x2") boot::secondary_entry as *const () as u64,
            in("x3") stack,
            clobber_abi("C"),
        );
    }
    ensure!(ret == 0, "PSCI CPU_ON failed: {ret}");
    wait_for(1, "cpu 0 (cpu 1 coming online)");

    STEP.store(2, Ordering::Release);
    wait_for(3, "cpu 0 (cpu 1 reading A)");
    let seen = ANSWERS[0].load(Ordering::Acquire);
    ensure!(seen == pattern(0x31, 0), "cpu 1 read {seen:#x}, expected A");
    ensure!(
        ANSWERS[1].load(Ordering::Acquire) == RANGE_PAGES,
        "cpu 1 misread the range"
    );

    // Remap to B; CPU 0's TLBI VALE1IS must reach CPU 1's TLB.
    must!(space.unmap_range(PAGE, g), "unmapping A");
    must!(space.map(PAGE, b, F::GRANULE, &DATA), "mapping B");
    STEP.store(4, Ordering::Release);
    wait_for(5, "cpu 0 (cpu 1 reading B)");
    let seen = ANSWERS[0].load(Ordering::Acquire);
    ensure!(
        seen == pattern(0x32, 0),
        "cpu 1 read {seen:#x} after the remap, expected B (stale TLB on cpu 1)"
    );
    pass(
        "smp-remap",
        format_args!("cpu 1 sees B after cpu 0's broadcast TLBI"),
    );

    // Unmap the page (TlbFlush) and the range through the shootdown engine.
    must!(space.unmap_range(PAGE, g), "unmapping B");
    let mut hook = ShootdownFlush {
        engine: &ENGINE,
        me: CpuIndex::new(0),
        targets: CpuMask::from_bits(0b11),
        asid: space.asid,
        ops: space.tlb,
        ipi: &NoIpi,
        error: None,
        shootdowns: 0,
    };
    {
        let mut pt = space.pt.lock();
        let pending = must!(
            pt.unmap_range(
                VirtAddr::new(RANGE),
                RANGE_PAGES * g,
                &mut hook,
                &mut *space.pool.lock()
            ),
            "unmapping the range"
        );
        must!(
            pt.finish(pending, &mut hook, &mut *space.pool.lock()),
            "shootdown"
        );
    }
    ensure!(hook.error.is_none(), "shootdown failed: {:?}", hook.error);
    let faults_before = fault::count(1);
    STEP.store(6, Ordering::Release);
    wait_for(7, "cpu 0 (cpu 1 reading unmapped pages)");
    let faulted = ANSWERS[2].load(Ordering::Acquire);
    ensure!(
        faulted == 1 + RANGE_PAGES,
        "cpu 1 faulted on {faulted} of {} unmapped pages",
        1 + RANGE_PAGES
    );
    ensure!(
        fault::count(1) == faults_before + 1 + RANGE_PAGES,
        "cpu 1's data aborts were not counted"
    );
    pass(
        "smp-unmap",
        format_args!(
            "cpu 1 takes a data abort on the unmapped page and all {RANGE_PAGES} range pages ({} shootdown, broadcast: no IPI)",
            hook.shootdowns
        ),
    );
    must!(space.unmap_range(PAGE + g, g), "anchor");
    for f in frames.into_iter().chain([a, b, anchor]) {
        space.free_frame(f);
    }
}

/// CPU 1's Rust entry point (from `secondary_entry`, MMU off).
#[unsafe(no_mangle)]
extern "C" fn secondary_main() -> ! {
    // SAFETY: CPU 0 wrote the registers before starting us and does not write them again.
    let regs = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(SECONDARY_REGS)) };
    // SAFETY: EL1 with the MMU off; the registers describe CPU 0's live tables, which
    // identity-map this code, our stack and all kernel data.
    unsafe { mmu::enable(&regs) };
    let g = match regs.tcr >> 14 & 0b11 {
        0b10 => 0x4000,
        _ => 0x1000,
    };
    STEP.store(1, Ordering::Release);

    wait_for(2, "cpu 1");
    ANSWERS[0].store(A64Cpu::read(PAGE).unwrap_or(0), Ordering::Relaxed);
    let ok = (0..RANGE_PAGES)
        .filter(|&i| A64Cpu::read(RANGE + i * g) == Some(pattern(0x33, i)))
        .count() as u64;
    ANSWERS[1].store(ok, Ordering::Relaxed);
    STEP.store(3, Ordering::Release);

    wait_for(4, "cpu 1");
    ANSWERS[0].store(A64Cpu::read(PAGE).unwrap_or(0), Ordering::Relaxed);
    STEP.store(5, Ordering::Release);

    wait_for(6, "cpu 1");
    let faulted = core::iter::once(PAGE)
        .chain((0..RANGE_PAGES).map(|i| RANGE + i * g))
        .filter(|&va| A64Cpu::read(va).is_none())
        .count() as u64;
    ANSWERS[2].store(faulted, Ordering::Relaxed);
    STEP.store(7, Ordering::Release);
    // Serve the jobs of the VM checks until CPU 0 ends the run.
    machvm_boot_common::smp_job::serve()
}
