//! Cross-CPU TLB shootdown.
//!
//! When a mapping changes, every CPU that may still cache it must drop it before the change is
//! relied on (before a frame is reused, before write access is considered gone). On aarch64 a
//! broadcast `TLBI …IS` followed by `DSB ISH` does that by itself; on x86_64 each CPU can only
//! invalidate its own TLB, so the initiator asks the others with inter-processor interrupts.
//!
//! [`Shootdown`] implements both:
//!
//! - each CPU has a mailbox: a short queue of flush requests, a count of requests posted and a
//!   count of requests done;
//! - the initiator posts its request in the mailbox of every target in the address space's
//!   [`CpuSet`], sends each an IPI through the caller's [`IpiSender`], flushes locally, then
//!   waits until every target has acknowledged — serving its own mailbox meanwhile, so two
//!   CPUs shooting at each other cannot deadlock — and gives up after a bounded number of
//!   spins, reporting which CPUs did not answer;
//! - a target's IPI handler calls [`Shootdown::handle`], which takes every queued request at
//!   once: concurrent initiators are served in one pass, not one after another;
//! - when the local [`TlbOps`] broadcast ([`TlbCaps::broadcast`](crate::TlbCaps)), no mailbox
//!   or IPI is used at all;
//! - [`Shootdown::shootdown_space`] takes its targets from the address space's
//!   [`SpaceCpus`]: only the CPUs running the space are interrupted, CPUs that switched away
//!   catch up lazily when they switch back.

use machvm_sync::atomic::{AtomicU64, Ordering};
use machvm_sync::{Backoff, CachePadded, CpuIndex, Mutex};

use crate::gather::{FlushGather, FlushRecord};
use crate::ops::{Asid, TlbOps};
use crate::space::SpaceCpus;

/// Requests a mailbox queues before it degrades to one full flush.
pub const MAILBOX_DEPTH: usize = 8;

/// A set of CPUs `0..64` (bit `i` stands for CPU `i`), updated atomically.
///
/// Every access is sequentially consistent: [`SpaceCpus`] relies on a
/// CPU's insertion and an initiator's snapshot being ordered with the generation counter it
/// pairs them with.
///
/// An address space keeps one: a CPU is added when it switches to the address space and may
/// be removed once it switched away *and* flushed the address space's translations (or
/// kept, "lazily", until the next shootdown reaches it).
///
/// # Examples
///
/// ```
/// use machvm_sync::CpuIndex;
/// use machvm_tlb::shootdown::CpuSet;
///
/// let set = CpuSet::new();
/// set.insert(CpuIndex::new(3))?;
/// assert!(set.snapshot().contains(CpuIndex::new(3)));
/// assert_eq!(set.snapshot().iter().count(), 1);
/// # Ok::<(), machvm_tlb::shootdown::ShootdownError>(())
/// ```
#[derive(Debug, Default)]
pub struct CpuSet(AtomicU64);

impl CpuSet {
    /// Returns an empty set.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Returns an empty set.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Adds `cpu`.
    ///
    /// # Errors
    ///
    /// [`ShootdownError::CpuOutOfRange`] if `cpu` is 64 or above.
    pub fn insert(&self, cpu: CpuIndex) -> Result<(), ShootdownError> {
        let bit = CpuMask::bit(cpu)?;
        self.0.fetch_or(bit, Ordering::SeqCst);
        Ok(())
    }

    /// Removes `cpu`.
    ///
    /// # Errors
    ///
    /// [`ShootdownError::CpuOutOfRange`] if `cpu` is 64 or above.
    pub fn remove(&self, cpu: CpuIndex) -> Result<(), ShootdownError> {
        let bit = CpuMask::bit(cpu)?;
        self.0.fetch_and(!bit, Ordering::SeqCst);
        Ok(())
    }

    /// Returns the members now.
    pub fn snapshot(&self) -> CpuMask {
        CpuMask(self.0.load(Ordering::SeqCst))
    }
}

/// A fixed set of CPUs `0..64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuMask(u64);

impl CpuMask {
    /// The empty set.
    pub const EMPTY: Self = Self(0);

    /// Returns the set with the CPUs whose bits are set in `bits`.
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// Returns the raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    fn bit(cpu: CpuIndex) -> Result<u64, ShootdownError> {
        1u64.checked_shl(cpu.as_u32())
            .ok_or(ShootdownError::CpuOutOfRange { cpu })
    }

    /// Returns whether `cpu` is in the set.
    pub fn contains(self, cpu: CpuIndex) -> bool {
        Self::bit(cpu).is_ok_and(|bit| self.0 & bit != 0)
    }

    /// Returns the set with `cpu` added (unchanged if `cpu` is 64 or above).
    #[must_use]
    pub fn with(self, cpu: CpuIndex) -> Self {
        Self(self.0 | Self::bit(cpu).unwrap_or(0))
    }

    /// Returns the set without `cpu`.
    #[must_use]
    pub fn without(self, cpu: CpuIndex) -> Self {
        Self(self.0 & !Self::bit(cpu).unwrap_or(0))
    }

    /// Returns whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Returns the CPUs of the set in increasing order.
    pub fn iter(self) -> impl Iterator<Item = CpuIndex> {
        (0..64u32)
            .filter(move |i| self.0 & (1 << i) != 0)
            .map(CpuIndex::new)
    }
}

/// Sends inter-processor interrupts (the kernel's APIC or GIC code).
pub trait IpiSender {
    /// Interrupts `target`, whose handler calls [`Shootdown::handle`].
    fn send(&self, target: CpuIndex);
}

/// Why a shootdown failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShootdownError {
    /// A CPU index is outside what the engine or set was built for.
    CpuOutOfRange {
        /// The rejected CPU.
        cpu: CpuIndex,
    },
    /// These CPUs did not acknowledge within the spin budget. Their mailboxes still hold the
    /// request; they flush when they next handle them, but until then they may use the old
    /// translation, so the caller must not reuse what it unmapped.
    Timeout {
        /// The CPUs that did not answer.
        cpus: CpuMask,
    },
}

impl core::fmt::Display for ShootdownError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::CpuOutOfRange { cpu } => {
                write!(f, "CPU {} is out of range", cpu.as_u32())
            }
            Self::Timeout { cpus } => write!(
                f,
                "shootdown not acknowledged by CPUs {:#x} (bit i = CPU i)",
                cpus.bits()
            ),
        }
    }
}

impl core::error::Error for ShootdownError {}

/// One queued flush.
#[derive(Debug, Clone, Copy)]
struct Request {
    asid: Asid,
    record: FlushRecord,
}

/// A CPU's queue of requests.
#[derive(Debug)]
struct Queue {
    requests: [Option<Request>; MAILBOX_DEPTH],
    len: usize,
    /// More requests came than fit: flush everything instead.
    overflow: bool,
}

/// A CPU's mailbox.
#[derive(Debug)]
struct Mailbox {
    queue: Mutex<Queue>,
    /// Requests posted so far (tickets), incremented under the queue lock.
    posted: AtomicU64,
    /// Requests whose flush is complete, raised by the owning CPU.
    done: AtomicU64,
}

/// An empty mailbox (one body for the `const` constructor and the loom one, where the lock
/// cannot be built in a `const fn`).
macro_rules! empty_mailbox {
    () => {
        Mailbox {
            queue: Mutex::new(Queue {
                requests: [None; MAILBOX_DEPTH],
                len: 0,
                overflow: false,
            }),
            posted: AtomicU64::new(0),
            done: AtomicU64::new(0),
        }
    };
}

impl Mailbox {
    #[cfg(not(loom))]
    const fn new() -> Self {
        empty_mailbox!()
    }

    #[cfg(loom)]
    fn new() -> Self {
        empty_mailbox!()
    }

    /// Queues `request` and returns its ticket.
    fn post(&self, request: Request) -> u64 {
        let mut q = self.queue.lock();
        let len = q.len;
        if let Some(slot) = q.requests.get_mut(len) {
            *slot = Some(request);
            q.len += 1;
        } else {
            q.overflow = true;
        }
        // Under the lock, so `handle` sees every request up to the ticket it reads.
        self.posted.fetch_add(1, Ordering::AcqRel) + 1
    }
}

/// The shootdown engine for `CPUS` CPUs (at most 64).
///
/// # Examples
///
/// Two host threads as CPUs, an IPI being a flag the target polls:
///
/// ```
/// use machvm_addr::{PageSize, VirtAddr};
/// use machvm_sync::CpuIndex;
/// use machvm_tlb::gather::FlushRecord;
/// use machvm_tlb::shootdown::{CpuMask, IpiSender, Shootdown};
/// use machvm_tlb::{Asid, TlbCaps, TlbOps};
/// use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
///
/// /// A CPU-local TLB that only counts invalidations.
/// #[derive(Default)]
/// struct Local(AtomicU64);
/// impl TlbOps for Local {
///     fn caps(&self) -> TlbCaps { TlbCaps::new(false, false, true, 12) }
///     fn sync(&self) {}
///     fn invalidate_page(&self, _: Asid, _: VirtAddr, _: bool) { self.0.fetch_add(1, Ordering::Relaxed); }
///     fn invalidate_asid(&self, _: Asid) { self.0.fetch_add(1, Ordering::Relaxed); }
///     fn invalidate_all(&self) { self.0.fetch_add(1, Ordering::Relaxed); }
///     fn complete(&self) {}
/// }
/// struct Flag<'a>(&'a AtomicBool);
/// impl IpiSender for Flag<'_> {
///     fn send(&self, _: CpuIndex) { self.0.store(true, Ordering::Release); }
/// }
///
/// let engine = Shootdown::<2>::new(1 << 24);
/// let (cpu0, cpu1) = (Local::default(), Local::default());
/// let ipi = AtomicBool::new(false);
/// let stop = AtomicBool::new(false);
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         // CPU 1's interrupt handler, polled.
///         while !stop.load(Ordering::Acquire) {
///             if ipi.swap(false, Ordering::AcqRel) {
///                 engine.handle(CpuIndex::new(1), &cpu1).unwrap();
///             }
///             std::hint::spin_loop();
///         }
///     });
///     let record = FlushRecord::new(VirtAddr::new(0x4000_0000), 0x1000, PageSize::Size4KiB);
///     let targets = CpuMask::from_bits(0b11);
///     engine.shootdown(CpuIndex::new(0), targets, Asid::new(3), record, &cpu0, &Flag(&ipi)).unwrap();
///     stop.store(true, Ordering::Release);
/// });
/// assert_eq!((cpu0.0.load(Ordering::Relaxed), cpu1.0.load(Ordering::Relaxed)), (1, 1));
/// ```
#[derive(Debug)]
pub struct Shootdown<const CPUS: usize> {
    boxes: [CachePadded<Mailbox>; CPUS],
    spin_limit: u64,
}

impl<const CPUS: usize> Shootdown<CPUS> {
    /// Returns an engine whose initiators wait at most `spin_limit` backoff steps per target
    /// for an acknowledgement. `const`, so an engine can live in a plain `static`.
    #[cfg(not(loom))]
    pub const fn new(spin_limit: u64) -> Self {
        Self {
            boxes: [const { CachePadded::new(Mailbox::new()) }; CPUS],
            spin_limit,
        }
    }

    /// Returns an engine whose initiators wait at most `spin_limit` backoff steps per target
    /// for an acknowledgement (not `const` under loom).
    #[cfg(loom)]
    pub fn new(spin_limit: u64) -> Self {
        Self {
            boxes: core::array::from_fn(|_| CachePadded::new(Mailbox::new())),
            spin_limit,
        }
    }

    fn mailbox(&self, cpu: CpuIndex) -> Result<&Mailbox, ShootdownError> {
        self.boxes
            .get(cpu.as_usize())
            .map(|b| &**b)
            .ok_or(ShootdownError::CpuOutOfRange { cpu })
    }

    /// Flushes `record` of address space `asid` on every CPU of `targets` and returns when
    /// all of them have (or reports the ones that did not answer in time).
    ///
    /// `me` is the calling CPU and `local` its TLB operations. With broadcasting operations
    /// the local flush reaches everyone and no IPI is sent.
    ///
    /// # Errors
    ///
    /// - [`ShootdownError::CpuOutOfRange`] if `me` or a target is not below `CPUS` (nothing is
    ///   sent);
    /// - [`ShootdownError::Timeout`] with the CPUs that did not acknowledge.
    pub fn shootdown<T: TlbOps + ?Sized, I: IpiSender + ?Sized>(
        &self,
        me: CpuIndex,
        targets: CpuMask,
        asid: Asid,
        record: FlushRecord,
        local: &T,
        ipi: &I,
    ) -> Result<(), ShootdownError> {
        self.check(me, targets)?;
        let late = self.run(me, targets, asid, record, local, ipi)?;
        if late.is_empty() {
            Ok(())
        } else {
            Err(ShootdownError::Timeout { cpus: late })
        }
    }

    /// Flushes `record` of the address space whose CPUs `space` tracks, under its ASID
    /// `asid`: interrupts only the CPUs running the space now; the ones that ran it and
    /// switched away catch up at their next [`SpaceCpus::switch_in`]. Call it after the
    /// page-table change is written.
    ///
    /// With broadcasting operations the local flush reaches every CPU and `space` is not
    /// consulted.
    ///
    /// # Errors
    ///
    /// - [`ShootdownError::CpuOutOfRange`] if `me` is not below `CPUS` (nothing is sent);
    /// - [`ShootdownError::Timeout`] with the running CPUs that did not acknowledge (they stay
    ///   behind in `space` and flush the whole ASID at their next switch-in).
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_addr::{PageSize, VirtAddr};
    /// use machvm_sync::CpuIndex;
    /// use machvm_tlb::gather::FlushRecord;
    /// use machvm_tlb::shootdown::{IpiSender, Shootdown};
    /// use machvm_tlb::{Asid, SpaceCpus, TlbCaps, TlbOps};
    ///
    /// struct Local;
    /// impl TlbOps for Local {
    ///     fn caps(&self) -> TlbCaps { TlbCaps::new(false, false, true, 12) }
    ///     fn sync(&self) {}
    ///     fn invalidate_page(&self, _: Asid, _: VirtAddr, _: bool) {}
    ///     fn invalidate_asid(&self, _: Asid) {}
    ///     fn invalidate_all(&self) {}
    ///     fn complete(&self) {}
    /// }
    /// struct NoIpi;
    /// impl IpiSender for NoIpi {
    ///     fn send(&self, _: CpuIndex) { unreachable!("CPU 1 is lazy, not interrupted") }
    /// }
    ///
    /// let engine = Shootdown::<2>::new(1 << 20);
    /// let space = SpaceCpus::<2>::new();
    /// let (cpu0, cpu1, asid) = (CpuIndex::new(0), CpuIndex::new(1), Asid::new(7));
    /// let _ = space.switch_in(cpu0)?;
    /// let _ = space.switch_in(cpu1)?;
    /// space.switch_out(cpu1)?; // CPU 1 runs something else now
    /// let record = FlushRecord::new(VirtAddr::new(0x40_0000), 0x1000, PageSize::Size4KiB);
    /// engine.shootdown_space(cpu0, &space, asid, record, &Local, &NoIpi)?;
    /// // CPU 1 flushes the space's ASID when it comes back.
    /// assert!(space.switch_in(cpu1)?.apply(asid, &Local));
    /// # Ok::<(), machvm_tlb::ShootdownError>(())
    /// ```
    pub fn shootdown_space<T: TlbOps + ?Sized, I: IpiSender + ?Sized>(
        &self,
        me: CpuIndex,
        space: &SpaceCpus<CPUS>,
        asid: Asid,
        record: FlushRecord,
        local: &T,
        ipi: &I,
    ) -> Result<(), ShootdownError> {
        self.check(me, CpuMask::EMPTY)?;
        if local.caps().broadcast {
            let mut gather = FlushGather::new(asid);
            gather.add(record);
            gather.flush(local);
            return Ok(());
        }
        let (generation, targets) = space.begin_shootdown();
        // `SpaceCpus` has exactly `CPUS` slots, so every running CPU is in range.
        let late = self.run(me, targets, asid, record, local, ipi)?;
        for cpu in targets.iter().filter(|&c| !late.contains(c)) {
            space.acknowledged(cpu, generation);
        }
        if late.is_empty() {
            Ok(())
        } else {
            Err(ShootdownError::Timeout { cpus: late })
        }
    }

    /// Waits, without a limit, until every CPU of `cpus` other than `me` has served every
    /// request posted to it so far, serving `me`'s own mailbox through `local` meanwhile.
    ///
    /// This is what to do after a [`ShootdownError::Timeout`] when the caller cannot go on
    /// without the flush (the page-table hook [`ShootdownFlush`](crate::ShootdownFlush) must
    /// not let table frames be freed early): the late CPUs' requests are still queued.
    ///
    /// # Errors
    ///
    /// [`ShootdownError::CpuOutOfRange`] if `me` or a CPU of `cpus` is not below `CPUS`.
    pub fn wait<T: TlbOps + ?Sized>(
        &self,
        me: CpuIndex,
        cpus: CpuMask,
        local: &T,
    ) -> Result<(), ShootdownError> {
        self.check(me, cpus)?;
        for cpu in cpus.without(me).iter() {
            let target = self.mailbox(cpu)?;
            let posted = target.posted.load(Ordering::Acquire);
            let mut backoff = Backoff::new();
            while target.done.load(Ordering::Acquire) < posted {
                self.handle(me, local)?;
                backoff.spin();
            }
        }
        Ok(())
    }

    /// Checks that `me` and every target are below `CPUS`.
    fn check(&self, me: CpuIndex, targets: CpuMask) -> Result<(), ShootdownError> {
        self.mailbox(me)?;
        match targets.iter().find(|&c| c.as_usize() >= CPUS) {
            Some(cpu) => Err(ShootdownError::CpuOutOfRange { cpu }),
            None => Ok(()),
        }
    }

    /// Flushes locally (if `me` is a target) and through the mailboxes of the other targets;
    /// returns the targets that did not acknowledge in time.
    fn run<T: TlbOps + ?Sized, I: IpiSender + ?Sized>(
        &self,
        me: CpuIndex,
        targets: CpuMask,
        asid: Asid,
        record: FlushRecord,
        local: &T,
        ipi: &I,
    ) -> Result<CpuMask, ShootdownError> {
        let mut gather = FlushGather::new(asid);
        gather.add(record);
        if local.caps().broadcast {
            gather.flush(local);
            return Ok(CpuMask::EMPTY);
        }
        // Post everywhere first, then interrupt: the targets work while we flush locally.
        let mut tickets = [0u64; 64];
        let others = targets.without(me);
        for cpu in others.iter() {
            let ticket = self.mailbox(cpu)?.post(Request { asid, record });
            if let Some(t) = tickets.get_mut(cpu.as_usize()) {
                *t = ticket;
            }
        }
        for cpu in others.iter() {
            ipi.send(cpu);
        }
        if targets.contains(me) {
            gather.flush(local);
        }
        let mut late = CpuMask::EMPTY;
        for cpu in others.iter() {
            let ticket = tickets.get(cpu.as_usize()).copied().unwrap_or(0);
            let target = self.mailbox(cpu)?;
            let mut backoff = Backoff::new();
            let mut spins = 0u64;
            while target.done.load(Ordering::Acquire) < ticket {
                if spins >= self.spin_limit {
                    late = late.with(cpu);
                    break;
                }
                // Serve requests aimed at us while we wait: another initiator may be waiting
                // for us right now.
                self.handle(me, local)?;
                backoff.spin();
                spins += 1;
            }
        }
        Ok(late)
    }

    /// Performs every flush queued for CPU `me` through its `local` operations and
    /// acknowledges them; returns how many requests it served. Call it from `me`'s IPI handler
    /// (and it is called by initiators while they wait). Only `me` itself may call it.
    ///
    /// # Errors
    ///
    /// [`ShootdownError::CpuOutOfRange`] if `me` is not below `CPUS`.
    pub fn handle<T: TlbOps + ?Sized>(
        &self,
        me: CpuIndex,
        local: &T,
    ) -> Result<u64, ShootdownError> {
        let mailbox = self.mailbox(me)?;
        let (requests, len, overflow, upto) = {
            let mut q = mailbox.queue.lock();
            let taken = (q.requests, q.len, q.overflow);
            q.requests = [None; MAILBOX_DEPTH];
            q.len = 0;
            q.overflow = false;
            let upto = mailbox.posted.load(Ordering::Acquire);
            (taken.0, taken.1, taken.2, upto)
        };
        let served = upto.saturating_sub(mailbox.done.load(Ordering::Acquire));
        if overflow {
            local.sync();
            local.invalidate_all();
            local.complete();
        } else {
            for request in requests.iter().take(len).flatten() {
                let mut gather = FlushGather::new(request.asid);
                gather.add(request.record);
                gather.flush(local);
            }
        }
        mailbox.done.fetch_max(upto, Ordering::AcqRel);
        Ok(served)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use core::cell::Cell;

    use machvm_addr::{PageSize, VirtAddr};

    use super::*;
    use crate::ops::TlbCaps;

    #[derive(Default)]
    struct Count {
        broadcast: bool,
        pages: Cell<u64>,
        all: Cell<u64>,
    }

    impl TlbOps for Count {
        fn caps(&self) -> TlbCaps {
            TlbCaps::new(self.broadcast, false, true, 16)
        }
        fn sync(&self) {}
        fn invalidate_page(&self, _asid: Asid, _va: VirtAddr, _leaf_only: bool) {
            self.pages.set(self.pages.get() + 1);
        }
        fn invalidate_asid(&self, _asid: Asid) {}
        fn invalidate_all(&self) {
            self.all.set(self.all.get() + 1);
        }
        fn complete(&self) {}
    }

    struct NoIpi;
    impl IpiSender for NoIpi {
        fn send(&self, _target: CpuIndex) {}
    }

    fn record() -> FlushRecord {
        FlushRecord::new(VirtAddr::new(0x1000), 0x2000, PageSize::Size4KiB)
    }

    #[test]
    fn an_engine_can_be_a_static() {
        static ENGINE: Shootdown<4> = Shootdown::new(8);
        let local = Count::default();
        assert_eq!(ENGINE.handle(CpuIndex::new(3), &local), Ok(0));
    }

    #[test]
    fn broadcast_needs_no_mailbox() {
        let engine = Shootdown::<4>::new(10);
        let local = Count {
            broadcast: true,
            ..Count::default()
        };
        engine
            .shootdown(
                CpuIndex::new(0),
                CpuMask::from_bits(0b1111),
                Asid::new(1),
                record(),
                &local,
                &NoIpi,
            )
            .unwrap();
        assert_eq!(local.pages.get(), 2);
        assert_eq!(
            engine
                .mailbox(CpuIndex::new(1))
                .unwrap()
                .posted
                .load(Ordering::Relaxed),
            0
        );
    }

    #[test]
    fn unanswered_targets_time_out_and_are_named() {
        let engine = Shootdown::<4>::new(5);
        let local = Count::default();
        let err = engine
            .shootdown(
                CpuIndex::new(0),
                CpuMask::from_bits(0b0111),
                Asid::new(1),
                record(),
                &local,
                &NoIpi,
            )
            .unwrap_err();
        assert_eq!(
            err,
            ShootdownError::Timeout {
                cpus: CpuMask::from_bits(0b0110)
            }
        );
        // The local flush happened; the late CPUs flush when they handle their mailbox.
        assert_eq!(local.pages.get(), 2);
        let cpu1 = Count::default();
        assert_eq!(engine.handle(CpuIndex::new(1), &cpu1).unwrap(), 1);
        assert_eq!(cpu1.pages.get(), 2);
    }

    #[test]
    fn a_full_mailbox_degrades_to_one_full_flush() {
        let engine = Shootdown::<2>::new(0);
        let local = Count::default();
        for _ in 0..MAILBOX_DEPTH + 3 {
            let _ = engine.shootdown(
                CpuIndex::new(0),
                CpuMask::from_bits(0b10),
                Asid::new(1),
                record(),
                &local,
                &NoIpi,
            );
        }
        let cpu1 = Count::default();
        assert_eq!(
            engine.handle(CpuIndex::new(1), &cpu1).unwrap(),
            MAILBOX_DEPTH as u64 + 3
        );
        assert_eq!((cpu1.all.get(), cpu1.pages.get()), (1, 0));
    }

    #[test]
    fn out_of_range_cpus_are_refused() {
        let engine = Shootdown::<2>::new(1);
        let local = Count::default();
        let r = engine.shootdown(
            CpuIndex::new(0),
            CpuMask::from_bits(0b100),
            Asid::new(1),
            record(),
            &local,
            &NoIpi,
        );
        assert_eq!(
            r,
            Err(ShootdownError::CpuOutOfRange {
                cpu: CpuIndex::new(2)
            })
        );
        assert!(CpuSet::new().insert(CpuIndex::new(64)).is_err());
    }
}
