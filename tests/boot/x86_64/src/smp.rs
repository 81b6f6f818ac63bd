//! The two-CPU check (`x86-smp`, QEMU `-smp 2`): x86 CPUs cannot invalidate each other's TLBs,
//! so CPU 0 flushes CPU 1 through `machvm-tlb`'s `Shootdown` engine and IPIs.
//!
//! CPU 0 copies the real-mode trampoline to 0x8000 and starts CPU 1 with INIT-SIPI-SIPI
//! through the local APIC's ICR; CPU 1 enters long mode directly on the kernel's machvm PML4
//! (`AP_CR3`), loads the IDT, enables its local APIC and interrupts, and follows CPU 0 through
//! the same steps as the aarch64 check: it caches a page and a 40-page range, CPU 0 remaps /
//! unmaps them flushing through a `ShootdownFlush` hook (post to CPU 1's mailbox, IPI on vector
//! 0x40, local flush, wait for the acknowledgement), and CPU 1 must see the new mapping and
//! then fault on every unmapped page. CPU 1 then serves jobs for the VM checks
//! (`machvm_boot_common::smp_job`), still answering shootdown IPIs.

use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

use machvm_addr::VirtAddr;
use machvm_boot_common::checks::{RANGE_PAGES, pattern};
use machvm_boot_common::fault::{self, Cpu};
use machvm_boot_common::report::{self, pass};
use machvm_boot_common::shootdown::ShootdownFlush;
use machvm_boot_common::space::DATA;
use machvm_boot_common::{AddressSpace, ensure, must};
use machvm_page_table::Format;
use machvm_sync::CpuIndex;
use machvm_tlb::arch::{X86Features, X86Tlb};
use machvm_tlb::{CpuMask, IpiSender, Shootdown};

use crate::mmu::LAPIC_BASE;
use crate::{X86Cpu, boot, trap};

/// Where the AP trampoline runs (SIPI vector 0x08 = physical page 0x8000).
const AP_TRAMPOLINE: u64 = 0x8000;
const PAGE: u64 = 0x47_0000_0000;
const RANGE: u64 = 0x47_4000_0000;

/// Local APIC registers (Intel SDM Vol. 3A §11.4.1).
const LAPIC_EOI: u64 = 0xb0;
const LAPIC_SVR: u64 = 0xf0;
const LAPIC_ICR_LOW: u64 = 0x300;
const LAPIC_ICR_HIGH: u64 = 0x310;
/// ICR delivery status: set while the previous IPI is being sent.
const ICR_PENDING: u32 = 1 << 12;

static STEP: AtomicU64 = AtomicU64::new(0);
static ANSWERS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static IPIS_HANDLED: AtomicU64 = AtomicU64::new(0);

/// The shootdown engine, initialised by CPU 0 before CPU 1 starts (`Shootdown::new` is not
/// `const`), then only shared.
static mut ENGINE: MaybeUninit<Shootdown<2>> = MaybeUninit::uninit();
static ENGINE_READY: AtomicBool = AtomicBool::new(false);
/// CPU 1's TLB operations, for its IPI handler.
static AP_TLB: AtomicPtr<X86Tlb> = AtomicPtr::new(core::ptr::null_mut());

/// The shootdown engine both CPUs use (set up by [`run`]).
pub fn engine() -> &'static Shootdown<2> {
    ensure!(
        ENGINE_READY.load(Ordering::Acquire),
        "shootdown engine used before set-up"
    );
    // SAFETY: ENGINE was written before ENGINE_READY was set (Release/Acquire) and is never
    // written again, so shared references are fine.
    unsafe { (*core::ptr::addr_of!(ENGINE)).assume_init_ref() }
}

fn lapic_read(reg: u64) -> u32 {
    // SAFETY: the local APIC page is mapped uncached in the kernel table; reading a register
    // has no side effect for the registers used here.
    unsafe { core::ptr::read_volatile((LAPIC_BASE + reg) as *const u32) }
}

fn lapic_write(reg: u64, value: u32) {
    // SAFETY: as above; the writes (SVR, EOI, ICR) are the documented way to program it.
    unsafe { core::ptr::write_volatile((LAPIC_BASE + reg) as *mut u32, value) };
}

/// Software-enables the executing CPU's local APIC (spurious vector 0xff).
fn lapic_enable() {
    lapic_write(LAPIC_SVR, 0x1ff);
}

/// Sends an IPI with ICR low word `low` to APIC ID `dest`.
fn send_ipi(dest: u32, low: u32) {
    while lapic_read(LAPIC_ICR_LOW) & ICR_PENDING != 0 {
        core::hint::spin_loop();
    }
    lapic_write(LAPIC_ICR_HIGH, dest << 24);
    lapic_write(LAPIC_ICR_LOW, low);
}

/// IPIs through the local APIC (fixed delivery, vector 0x40).
#[derive(Debug)]
pub struct LapicIpi;

/// IPIs CPU 1 has served so far.
pub fn ipis_handled() -> u64 {
    IPIS_HANDLED.load(Ordering::Relaxed)
}

impl IpiSender for LapicIpi {
    fn send(&self, target: CpuIndex) {
        send_ipi(target.as_u32(), u32::from(trap::IPI_VECTOR));
    }
}

/// CPU 1's IPI handler: serves its shootdown mailbox, then signals end of interrupt.
fn ipi_handler() {
    let tlb = AP_TLB.load(Ordering::Acquire);
    // SAFETY: CPU 1 stores a pointer to its own X86Tlb, which lives for the rest of the run
    // (ap_main never returns), before enabling interrupts.
    if let Some(tlb) = unsafe { tlb.as_ref() } {
        must!(
            engine().handle(CpuIndex::new(crate::cpu_index() as u32), tlb),
            "serving the shootdown mailbox"
        );
        IPIS_HANDLED.fetch_add(1, Ordering::Relaxed);
    }
    lapic_write(LAPIC_EOI, 0);
}

fn wait_for(step: u64, who: &str) {
    for _ in 0..500_000_000u64 {
        if STEP.load(Ordering::Acquire) >= step {
            return;
        }
        core::hint::spin_loop();
    }
    report::fail(format_args!("{who} timed out waiting for step {step}"))
}

fn spin(n: u64) {
    for _ in 0..n {
        core::hint::spin_loop();
    }
}

/// CPU 0's side.
pub fn run<F: Format>(space: &AddressSpace<'_, F, X86Tlb>, cr3: u64) {
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

    // SAFETY: CPU 1 has not started; this is the only write to ENGINE.
    unsafe { (*core::ptr::addr_of_mut!(ENGINE)).write(Shootdown::new(10_000_000)) };
    ENGINE_READY.store(true, Ordering::Release);
    trap::IPI_HANDLER.store(ipi_handler as *const () as usize, Ordering::Release);
    let start = core::ptr::addr_of!(boot::ap_trampoline_start) as u64;
    let end = core::ptr::addr_of!(boot::ap_trampoline_end) as u64;
    // SAFETY: low memory 0x8000.. is identity-mapped read-write and unused; the trampoline is
    // a few dozen bytes. AP_CR3 is only read by CPU 1, which starts after this write.
    unsafe {
        core::ptr::copy_nonoverlapping(
            start as *const u8,
            AP_TRAMPOLINE as *mut u8,
            (end - start) as usize,
        );
        core::ptr::write_volatile(core::ptr::addr_of_mut!(boot::AP_CR3), cr3);
    }
    lapic_enable();
    // INIT, then two STARTUPs with vector 0x08 (page 0x8000) (Intel SDM Vol. 3A §9.4.4.1).
    send_ipi(1, 0x4500);
    spin(1_000_000);
    for _ in 0..2 {
        send_ipi(1, 0x4600 | (AP_TRAMPOLINE >> 12) as u32);
        spin(100_000);
    }
    wait_for(1, "cpu 0 (cpu 1 coming online)");

    STEP.store(2, Ordering::Release);
    wait_for(3, "cpu 0 (cpu 1 reading A)");
    let seen = ANSWERS[0].load(Ordering::Acquire);
    ensure!(seen == pattern(0x31, 0), "cpu 1 read {seen:#x}, expected A");
    ensure!(
        ANSWERS[1].load(Ordering::Acquire) == RANGE_PAGES,
        "cpu 1 misread the range"
    );

    let mut hook = ShootdownFlush {
        engine: engine(),
        me: CpuIndex::new(0),
        targets: CpuMask::from_bits(0b11),
        asid: space.asid,
        ops: space.tlb,
        ipi: &LapicIpi,
        error: None,
        shootdowns: 0,
    };
    // Remap to B, flushing both CPUs through the shootdown hook.
    {
        let mut pt = space.pt.lock();
        let pending = must!(
            pt.unmap_range(VirtAddr::new(PAGE), g, &mut hook, &mut *space.pool.lock()),
            "unmapping A"
        );
        must!(
            pt.finish(pending, &mut hook, &mut *space.pool.lock()),
            "shootdown of A"
        );
    }
    must!(space.map(PAGE, b, F::GRANULE, &DATA), "mapping B");
    ensure!(hook.error.is_none(), "shootdown failed: {:?}", hook.error);
    STEP.store(4, Ordering::Release);
    wait_for(5, "cpu 0 (cpu 1 reading B)");
    let seen = ANSWERS[0].load(Ordering::Acquire);
    ensure!(
        seen == pattern(0x32, 0),
        "cpu 1 read {seen:#x} after the remap, expected B (stale TLB on cpu 1)"
    );
    pass(
        "smp-remap",
        format_args!(
            "cpu 1 sees B after a shootdown IPI ({} IPI(s) served)",
            IPIS_HANDLED.load(Ordering::Relaxed)
        ),
    );

    // Unmap the page and the 40-page range in one batch, one shootdown.
    {
        let mut pt = space.pt.lock();
        let mut pending = must!(
            pt.unmap_range(VirtAddr::new(PAGE), g, &mut hook, &mut *space.pool.lock()),
            "unmapping B"
        );
        let range = must!(
            pt.unmap_range(
                VirtAddr::new(RANGE),
                RANGE_PAGES * g,
                &mut hook,
                &mut *space.pool.lock()
            ),
            "unmapping the range"
        );
        pt.merge_pending(&mut pending, range);
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
        "cpu 1's page faults were not counted"
    );
    pass(
        "smp-unmap",
        format_args!(
            "cpu 1 faults on the page and all {RANGE_PAGES} range pages after {} shootdowns, {} IPIs served",
            hook.shootdowns,
            IPIS_HANDLED.load(Ordering::Relaxed)
        ),
    );
    must!(space.unmap_range(PAGE + g, g), "anchor");
    for f in frames.into_iter().chain([a, b, anchor]) {
        space.free_frame(f);
    }
}

/// CPU 1's Rust entry point (long mode on the kernel's tables, interrupts off).
#[unsafe(no_mangle)]
extern "C" fn ap_main() -> ! {
    // SAFETY: CPL0, interrupts off; CPU 0 filled the IDT long ago (`first` = false only loads
    // it).
    unsafe { trap::init_idt(false) };
    lapic_enable();
    // SAFETY: CPL0 with paging on; CPU 1's own TLB operations, used only on CPU 1.
    let tlb = unsafe { X86Tlb::new(X86Features::detect()) };
    AP_TLB.store(core::ptr::from_ref(&tlb).cast_mut(), Ordering::Release);
    // SAFETY: the IDT and the IPI handler are in place; from here IPIs may interrupt us.
    unsafe { core::arch::asm!("sti", options(nomem, nostack)) };
    let g = 0x1000;
    STEP.store(1, Ordering::Release);

    wait_for(2, "cpu 1");
    ANSWERS[0].store(X86Cpu::read(PAGE).unwrap_or(0), Ordering::Relaxed);
    let ok = (0..RANGE_PAGES)
        .filter(|&i| X86Cpu::read(RANGE + i * g) == Some(pattern(0x33, i)))
        .count() as u64;
    ANSWERS[1].store(ok, Ordering::Relaxed);
    STEP.store(3, Ordering::Release);

    wait_for(4, "cpu 1");
    ANSWERS[0].store(X86Cpu::read(PAGE).unwrap_or(0), Ordering::Relaxed);
    STEP.store(5, Ordering::Release);

    wait_for(6, "cpu 1");
    let faulted = core::iter::once(PAGE)
        .chain((0..RANGE_PAGES).map(|i| RANGE + i * g))
        .filter(|&va| X86Cpu::read(va).is_none())
        .count() as u64;
    ANSWERS[2].store(faulted, Ordering::Relaxed);
    STEP.store(7, Ordering::Release);
    // Interrupts stay on: shootdown IPIs are served while CPU 1 waits for (and runs) the
    // jobs CPU 0 hands it (the VM checks). CPU 0 ends the run.
    machvm_boot_common::smp_job::serve()
}
