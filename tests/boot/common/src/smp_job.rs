//! Work for the second CPU: once CPU 1 has finished its architecture's own checks it calls
//! [`serve`], and CPU 0 hands it jobs with [`start_on_cpu1`] (a function and a context
//! pointer) and waits for them with [`join_cpu1`]. The VM checks use it to run an address space on CPU 1
//! while CPU 0 changes it.
//!
//! On x86_64 CPU 1 serves with interrupts enabled, so shootdown IPIs reach it while it waits
//! and while it runs a job.

use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use crate::report;

/// A job: called on CPU 1 with the context pointer.
pub type Job = unsafe fn(*const ());

const IDLE: u64 = 0;
const POSTED: u64 = 1;
const DONE: u64 = 2;

static STATE: AtomicU64 = AtomicU64::new(IDLE);
static JOB: AtomicUsize = AtomicUsize::new(0);
static CTX: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
static SERVING: AtomicU64 = AtomicU64::new(0);

/// Whether CPU 1 has called [`serve`].
pub fn cpu1_serving() -> bool {
    SERVING.load(Ordering::Acquire) != 0
}

/// CPU 1's idle loop: runs each job CPU 0 posts, forever.
pub fn serve() -> ! {
    SERVING.store(1, Ordering::Release);
    loop {
        if STATE.load(Ordering::Acquire) == POSTED {
            let raw = JOB.load(Ordering::Acquire);
            let ctx = CTX.load(Ordering::Acquire);
            // SAFETY: `run_on_cpu1` stores a `Job` in JOB before setting POSTED (Release,
            // read above with Acquire).
            let job = unsafe { core::mem::transmute::<usize, Job>(raw) };
            // SAFETY: `run_on_cpu1`'s caller keeps `ctx` valid until the job is done and
            // made the job safe to run on this CPU.
            unsafe { job(ctx) };
            STATE.store(DONE, Ordering::Release);
        }
        core::hint::spin_loop();
    }
}

/// Starts `job(ctx)` on CPU 1 (without waiting: CPU 0 may take part in it, then calls
/// [`join_cpu1`]); fails the run if CPU 1 is not serving or is busy.
///
/// # Safety
///
/// - `ctx` is valid for `job` until [`join_cpu1`] returns;
/// - `job` may run on CPU 1 (it touches only what CPU 0 does not touch meanwhile, or
///   synchronises with CPU 0 itself).
pub unsafe fn start_on_cpu1(job: Job, ctx: *const ()) {
    crate::ensure!(cpu1_serving(), "cpu 1 is not serving jobs");
    crate::ensure!(
        STATE.load(Ordering::Acquire) == IDLE,
        "cpu 1 is still running a job"
    );
    JOB.store(job as usize, Ordering::Release);
    CTX.store(ctx.cast_mut(), Ordering::Release);
    STATE.store(POSTED, Ordering::Release);
}

/// Waits until CPU 1 has finished the job [`start_on_cpu1`] gave it.
pub fn join_cpu1() {
    wait(
        || STATE.load(Ordering::Acquire) == DONE,
        "cpu 1 finishing its job",
    );
    STATE.store(IDLE, Ordering::Release);
}

/// Spins until `done()` holds; fails the run after a generous number of spins.
pub fn wait(done: impl Fn() -> bool, what: &str) {
    for _ in 0..1_000_000_000u64 {
        if done() {
            return;
        }
        core::hint::spin_loop();
    }
    report::fail(format_args!("timed out waiting for {what}"))
}
