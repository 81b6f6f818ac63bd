//! Faults: per-CPU counters, the probe interface and the demand-paging hook.
//!
//! The checks read and write test addresses through *probes*: tiny assembly routines whose
//! one memory access the architecture's exception handler recognises by its address. When a
//! probe's access faults, the handler first offers the fault — address, read or write, and
//! what the MMU reported ([`HwFault`]) — to the demand-paging hook (which may map a page,
//! and the access is retried); otherwise it counts the fault and resumes the probe at its
//! recovery label, which reports "faulted" to the caller. Any other exception is fatal.

use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// CPUs the kernels support.
pub const MAX_CPUS: usize = 4;

/// What the shared checks need from the CPU they run on.
pub trait Cpu {
    /// Returns the index of the executing CPU (`0..MAX_CPUS`).
    fn index() -> usize;

    /// Reads the `u64` at `va`; `None` if the access faulted (and was counted).
    fn read(va: u64) -> Option<u64>;

    /// Writes `value` to the `u64` at `va`; `false` if the access faulted (and was counted).
    fn write(va: u64, value: u64) -> bool;
}

/// The result of a read probe, returned in two registers (x86_64 RAX:RDX, aarch64 x0:x1).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ProbeRead {
    /// The value read (0 if the access faulted).
    pub value: u64,
    /// Nonzero if the access faulted.
    pub faulted: u64,
}

static FAULTS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static DEMAND: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
static DEMAND_FN: AtomicUsize = AtomicUsize::new(0);
static DEMAND_HITS: AtomicU64 = AtomicU64::new(0);

/// Counts a fault a probe took on `cpu` (called by the exception handlers).
pub fn record(cpu: usize) {
    if let Some(counter) = FAULTS.get(cpu) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Returns the faults probes took on `cpu` so far.
pub fn count(cpu: usize) -> u64 {
    FAULTS.get(cpu).map_or(0, |c| c.load(Ordering::Relaxed))
}

/// Returns how many faults the demand hook resolved so far.
pub fn demand_hits() -> u64 {
    DEMAND_HITS.load(Ordering::Relaxed)
}

/// What the MMU reported about a fault (x86_64: the #PF error code's P bit; aarch64: the data
/// abort's fault status code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HwFaultKind {
    /// No valid translation (x86_64 P = 0, aarch64 translation fault).
    NotPresent,
    /// A valid translation that does not allow the access (x86_64 P = 1, aarch64 permission
    /// fault).
    Protection,
    /// aarch64 Access-flag fault (a valid translation with `AF` clear).
    AccessFlag,
    /// Anything else the handler let through (alignment, external abort, …).
    Other,
}

/// A fault taken by a probe's access, as the exception handler decoded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HwFault {
    /// The faulting virtual address (CR2 / FAR_EL1).
    pub va: u64,
    /// Whether the access was a write (x86_64 error code W/R, aarch64 ESR `WnR`).
    pub write: bool,
    /// What kind of fault the MMU reported.
    pub kind: HwFaultKind,
}

/// A demand-paging hook: given the context pointer and the fault, maps a page and returns
/// `true` (the access is retried), or returns `false` (the fault stands).
pub type DemandFn = unsafe fn(*const (), HwFault) -> bool;

/// Installs a demand-paging hook.
///
/// # Safety
///
/// - `ctx` stays valid for `f` until [`clear_demand_hook`] is called.
/// - `f(ctx, va)` may run inside an exception handler at any probe access: it must not take a
///   lock the interrupted code may hold (use `try_lock`).
pub unsafe fn set_demand_hook(f: DemandFn, ctx: *const ()) {
    DEMAND.store(ctx.cast_mut(), Ordering::Release);
    DEMAND_FN.store(f as usize, Ordering::Release);
}

/// Removes the demand-paging hook.
pub fn clear_demand_hook() {
    DEMAND_FN.store(0, Ordering::Release);
    DEMAND.store(core::ptr::null_mut(), Ordering::Release);
}

/// Offers a probe's fault to the demand hook; returns whether it mapped a page (called by
/// the exception handlers before counting a probe fault).
pub fn try_demand(fault: HwFault) -> bool {
    let raw = DEMAND_FN.load(Ordering::Acquire);
    if raw == 0 {
        return false;
    }
    let ctx = DEMAND.load(Ordering::Acquire);
    // SAFETY: nonzero values of DEMAND_FN are only stored by `set_demand_hook` from a
    // `DemandFn`, so the transmute restores that function pointer.
    let f = unsafe { core::mem::transmute::<usize, DemandFn>(raw) };
    // SAFETY: `set_demand_hook`'s caller keeps `ctx` valid until the hook is cleared, and the
    // hook was designed to run in exception context.
    let mapped = unsafe { f(ctx, fault) };
    if mapped {
        DEMAND_HITS.fetch_add(1, Ordering::Relaxed);
    }
    mapped
}
