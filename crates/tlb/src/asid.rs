//! Generation-based ASID allocation with a lock-free context-switch fast path.
//!
//! [`AsidAllocator`] hands out address-space identifiers (aarch64 ASIDs, or x86_64 PCIDs when
//! they are used as global tags) to address spaces, each represented by an [`AsidContext`].
//! [`AsidAllocator::switch_to`] is called on every context switch and returns an
//! [`AsidSwitch`]: the [`Asid`] to load and whether the CPU must first flush its local TLB.
//!
//! # Design
//!
//! The scheme is the generation-based one of the Linux arm64 kernel:
//!
//! - A global **generation** counts rollovers. Each [`AsidContext`] holds one atomic word,
//!   `generation << 16 | asid`; the context's ASID is valid while that generation is the
//!   current one. Word 0 means "never had an ASID" (generations start at 1).
//! - A **bitmap** (under the allocator's [`Mutex`]) marks the ASIDs handed out in the current
//!   generation. ASIDs are never freed one by one: when the bitmap is full, a **rollover** bumps
//!   the generation, clears the bitmap and so reclaims every ASID at once. There is therefore
//!   no `release`: dropping an [`AsidContext`] is enough, and its ASID comes back at the next
//!   rollover.
//! - Each CPU has an **active** word (an atomic, the context word it last switched to) and a
//!   **reserved** word (under the lock). A rollover moves every CPU's active word into its
//!   reserved word (keeping the old reserved word if the CPU has not switched since the last
//!   rollover) and marks those ASIDs used in the new generation: a context that is running
//!   somewhere keeps its ASID across the rollover, so the CPUs running it never see its ASID
//!   change under them. The next switch to such a context moves it into the new generation
//!   with the same ASID.
//! - A rollover also marks every CPU **flush pending**. A CPU's next slow-path switch clears
//!   its mark and reports [`AsidSwitch::needs_flush`]: the caller flushes the local TLB before
//!   loading the ASID, so translations cached under an ASID in an older generation, which may
//!   now belong to another address space, are gone before the ASID is used again. Each CPU is
//!   told exactly once per rollover (and once on its first switch, as the allocator cannot
//!   know what the TLB held before it existed).
//! - The **fast path** takes no lock: if the context's word is in the current generation and
//!   the CPU's active word is non-zero, one compare-exchange replaces the active word with the
//!   context's. A rollover swaps every active word to zero, and both operations are
//!   read-modify-writes of the same location, so they are totally ordered: either the
//!   compare-exchange comes first and the rollover sees (and reserves) the new ASID, or it
//!   fails on the zero and the CPU takes the slow path, where the lock orders it after the
//!   rollover and it learns about the flush. A non-zero active word therefore means "this CPU
//!   has been told to flush since the last rollover", which is why the fast path never needs a
//!   flush.
//! - The **slow path** takes the lock, gives the context a new ASID if its word is from an
//!   older generation (the one it had if a CPU reserved it, or if it is still free in the new
//!   generation; otherwise the next free one, round-robin; a rollover if none is free), clears
//!   the CPU's flush mark and stores the active word.
//!
//! Invariants (checked by `tests/asid.rs` against a reference model and by the loom models in
//! `tests/loom.rs`):
//!
//! - two contexts whose words are in the same generation never share an ASID, and no two CPUs
//!   run different contexts under the same ASID;
//! - a context's ASID does not change while a CPU runs it;
//! - after a rollover no CPU loads an ASID that belonged to another context without having
//!   been told to flush first;
//! - [`Asid::KERNEL`] (0) is never handed out.
//!
//! The allocator only decides; it never touches the hardware. The caller performs the flush
//! (for instance [`TlbOps::invalidate_all`](crate::TlbOps::invalidate_all) on the local CPU)
//! and loads the ASID (TTBR0 on aarch64, CR3 on x86_64).
//!
//! # Sizes
//!
//! The width is chosen at run time: 8 or 16 bits for aarch64 ASIDs, 12 for x86_64 PCIDs, and
//! smaller widths (down to what the CPU count allows, see [`AsidAllocator::new`]) for tests
//! that want frequent rollovers. The bitmap always has room for 16 bits (8 KiB), so the
//! allocator needs no heap. Generations are 48 bits wide; after 2^48 - 1 rollovers
//! [`AsidAllocator::switch_to`] reports [`AsidError::GenerationsExhausted`] rather than reuse a
//! generation.

use core::fmt;

use machvm_sync::atomic::{AtomicU64, Ordering};
use machvm_sync::{CpuIndex, Mutex, PerCpu};

use crate::ops::Asid;

/// The widest ASID the allocator supports, in bits (aarch64 with `TCR_EL1.AS = 1`).
pub const MAX_ASID_BITS: u8 = 16;

/// Bits of a context word below the generation: the ASID field.
const GEN_SHIFT: u32 = 16;
/// The ASID field of a context word.
const ASID_MASK: u64 = (1 << GEN_SHIFT) - 1;
/// One generation, as a context-word increment.
const GEN_UNIT: u64 = 1 << GEN_SHIFT;
/// The first generation, as a context-word prefix (generation 1: word 0 stays "no ASID").
const FIRST_GEN: u64 = GEN_UNIT;
/// 64-bit words in the bitmap: one bit per ASID of the widest width.
const MAP_WORDS: usize = (1 << MAX_ASID_BITS) / 64;

/// The ASID field of a context word.
#[inline]
const fn asid_of(word: u64) -> u16 {
    // Lossless: the mask keeps 16 bits.
    (word & ASID_MASK) as u16
}

/// Errors of [`AsidAllocator`].
///
/// Caller mistakes first (construction, CPU index), then resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AsidError {
    /// The width is 0 or above [`MAX_ASID_BITS`]. A caller mistake: retrying cannot succeed.
    UnsupportedWidth {
        /// The width asked for.
        bits: u8,
    },
    /// The width leaves no more user ASIDs (`2^bits - 1`, ASID 0 being the kernel's) than
    /// there are CPUs: after a rollover every ASID could be reserved by a CPU and none would be
    /// left to hand out. A caller mistake: choose a wider width.
    TooFewAsids {
        /// The width asked for.
        bits: u8,
        /// The number of CPUs of the allocator.
        cpus: usize,
    },
    /// The CPU index is not below the allocator's CPU count. A caller mistake; nothing changed.
    CpuOutOfRange {
        /// The index given.
        cpu: CpuIndex,
        /// The number of CPUs of the allocator.
        cpus: usize,
    },
    /// A rollover was needed but all 2^48 - 1 generations have been used (at one rollover
    /// per microsecond, after about nine years). Nothing changed; retrying cannot succeed.
    GenerationsExhausted,
    /// No ASID was free right after a rollover. Cannot happen when the width check of
    /// [`AsidAllocator::new`] holds; reported instead of panicking. The rollover itself
    /// happened (the generation advanced and every CPU is marked for a flush).
    NoFreeAsid,
}

impl fmt::Display for AsidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::UnsupportedWidth { bits } => {
                write!(f, "asid width {bits} is not in 1..={MAX_ASID_BITS} bits")
            }
            Self::TooFewAsids { bits, cpus } => write!(
                f,
                "a {bits}-bit asid space has no more user asids than the {cpus} cpus"
            ),
            Self::CpuOutOfRange { cpu, cpus } => {
                write!(f, "cpu {cpu} is out of range for {cpus} cpus")
            }
            Self::GenerationsExhausted => f.write_str("asid generations are exhausted"),
            Self::NoFreeAsid => f.write_str("no asid is free after a rollover"),
        }
    }
}

impl core::error::Error for AsidError {}

/// The ASID state of one address space: its current ASID and the generation it belongs to.
///
/// An address space owns one and passes it to [`AsidAllocator::switch_to`]. It starts without
/// an ASID; the first switch gives it one. Dropping it needs no call to the allocator: its ASID
/// is reclaimed at the next rollover. A context must be used with one allocator only.
///
/// # Examples
///
/// ```
/// use machvm_sync::CpuIndex;
/// use machvm_tlb::asid::{AsidAllocator, AsidContext};
///
/// let asids = AsidAllocator::<2>::new(8)?;
/// let space = AsidContext::new();
/// assert_eq!(space.asid(), None);
///
/// let switch = asids.switch_to(CpuIndex::new(0), &space)?;
/// assert_eq!(space.asid(), Some(switch.asid()));
/// assert_eq!(space.generation(), Some(asids.generation()));
/// # Ok::<(), machvm_tlb::asid::AsidError>(())
/// ```
pub struct AsidContext {
    /// `generation << 16 | asid`, or 0 before the first switch. Written only under the
    /// allocator's lock.
    word: AtomicU64,
}

impl AsidContext {
    /// Returns a context without an ASID.
    #[cfg(not(loom))]
    #[must_use]
    pub const fn new() -> Self {
        Self {
            word: AtomicU64::new(0),
        }
    }

    /// Returns a context without an ASID (not `const` under loom).
    #[cfg(loom)]
    #[must_use]
    pub fn new() -> Self {
        Self {
            word: AtomicU64::new(0),
        }
    }

    /// Returns the ASID the context was last given, or `None` if it never ran.
    ///
    /// This is the ASID to invalidate by after changing the address space's page tables. It
    /// changes only when a CPU switches to the context in a newer generation and the context
    /// was running nowhere at the rollover; no CPU can then hold translations of the context
    /// under the new ASID that predate the change of word.
    #[must_use]
    pub fn asid(&self) -> Option<Asid> {
        // Acquire: pairs with the Release store of the slow path, so a caller that sees the
        // new ASID also sees the rollover that made it (nothing else is read through it).
        let word = self.word.load(Ordering::Acquire);
        (word != 0).then(|| Asid::new(asid_of(word)))
    }

    /// Returns the generation of the context's ASID, or `None` if it never ran.
    ///
    /// The ASID is current while this equals [`AsidAllocator::generation`].
    #[must_use]
    pub fn generation(&self) -> Option<u64> {
        // Acquire: as in `asid`.
        let word = self.word.load(Ordering::Acquire);
        (word != 0).then_some(word >> GEN_SHIFT)
    }
}

impl Default for AsidContext {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for AsidContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Relaxed: a diagnostic snapshot.
        let word = self.word.load(Ordering::Relaxed);
        f.debug_struct("AsidContext")
            .field("generation", &(word >> GEN_SHIFT))
            .field("asid", &asid_of(word))
            .finish()
    }
}

/// What a CPU must do to run an address space: returned by [`AsidAllocator::switch_to`].
///
/// If [`needs_flush`](Self::needs_flush) is set, the CPU must invalidate every non-global
/// translation of its local TLB (all ASIDs) *before* it loads [`asid`](Self::asid).
///
/// # Examples
///
/// ```
/// use machvm_sync::CpuIndex;
/// use machvm_tlb::asid::{AsidAllocator, AsidContext};
///
/// let asids = AsidAllocator::<1>::new(8)?;
/// let space = AsidContext::new();
/// let switch = asids.switch_to(CpuIndex::new(0), &space)?;
/// if switch.needs_flush() {
///     // e.g. `TlbOps::invalidate_all` on this CPU
/// }
/// // ... then load `switch.asid()` into TTBR0_EL1 / CR3.
/// assert_ne!(switch.asid(), machvm_tlb::Asid::KERNEL);
/// # Ok::<(), machvm_tlb::asid::AsidError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "the CPU must flush its TLB first when `needs_flush` is set, then load the ASID"]
pub struct AsidSwitch {
    asid: Asid,
    needs_flush: bool,
}

impl AsidSwitch {
    /// Returns the ASID to load; never [`Asid::KERNEL`].
    #[inline]
    pub const fn asid(self) -> Asid {
        self.asid
    }

    /// Returns whether the CPU must flush its whole local TLB (all ASIDs) before loading the
    /// ASID: set once per CPU after each rollover, and on each CPU's first switch.
    #[inline]
    pub const fn needs_flush(self) -> bool {
        self.needs_flush
    }
}

/// The allocator's locked state: everything the slow path reads and writes.
struct State<const CPUS: usize> {
    /// Bit `a` set: ASID `a` is taken in the current generation. Bit 0 (the kernel's) is
    /// always set.
    map: [u64; MAP_WORDS],
    /// Where the next search for a free ASID starts (round-robin).
    cursor: u32,
    /// Per CPU: the context word kept across the last rollover (0 if none).
    reserved: [u64; CPUS],
    /// Per CPU: a rollover happened that this CPU has not been told about yet.
    flush_pending: [bool; CPUS],
}

impl<const CPUS: usize> State<CPUS> {
    /// The initial state: only ASID 0 taken, every CPU to flush on its first switch.
    const fn new() -> Self {
        let mut map = [0; MAP_WORDS];
        map[0] = 1;
        Self {
            map,
            cursor: 1,
            reserved: [0; CPUS],
            flush_pending: [true; CPUS],
        }
    }

    /// Marks `asid` taken; returns whether it was free. ASIDs outside the map are never free.
    fn claim(&mut self, asid: u32) -> bool {
        let Some(word) = self.map.get_mut((asid / 64) as usize) else {
            return false;
        };
        let bit = 1_u64 << (asid % 64);
        let was_free = *word & bit == 0;
        *word |= bit;
        was_free
    }

    /// Returns the first free ASID in `lo..hi`, if any.
    fn find_free_in(&self, lo: u32, hi: u32) -> Option<u32> {
        let mut word_index = lo / 64;
        while word_index * 64 < hi {
            let base = word_index * 64;
            let word = self
                .map
                .get(word_index as usize)
                .copied()
                .unwrap_or(u64::MAX);
            let mut free = !word;
            if lo > base {
                // Drop the bits below `lo` (only in the first word).
                free &= u64::MAX << (lo - base);
            }
            if hi - base < 64 {
                // Drop the bits from `hi` on (only in the last word).
                free &= (1_u64 << (hi - base)) - 1;
            }
            if free != 0 {
                return Some(base + free.trailing_zeros());
            }
            word_index += 1;
        }
        None
    }

    /// Returns a free ASID below `limit`, searching round-robin from the cursor.
    fn find_free(&self, limit: u32) -> Option<u32> {
        let cursor = self.cursor.clamp(1, limit);
        self.find_free_in(cursor, limit)
            .or_else(|| self.find_free_in(1, cursor))
    }

    /// If some CPU reserved `old` across a rollover, moves the reservation to `new` and returns
    /// true. Every CPU holding `old` is updated, so a later rollover re-reserves the new word.
    fn update_reserved(&mut self, old: u64, new: u64) -> bool {
        let mut hit = false;
        for reserved in &mut self.reserved {
            if *reserved == old {
                *reserved = new;
                hit = true;
            }
        }
        hit
    }
}

/// A generation-based ASID allocator for `CPUS` CPUs (see the [module docs](self) for the
/// design).
///
/// Everything is inline (about 8 KiB plus a cache line per CPU): no heap, so it can be a
/// `static` (outside loom, [`new`](Self::new) is `const`).
///
/// # Examples
///
/// Four address spaces on two CPUs with 2-bit ASIDs (three user ASIDs), so the fourth forces
/// a rollover:
///
/// ```
/// use machvm_sync::CpuIndex;
/// use machvm_tlb::asid::{AsidAllocator, AsidContext};
///
/// let (cpu0, cpu1) = (CpuIndex::new(0), CpuIndex::new(1));
/// let asids = AsidAllocator::<2>::new(2)?;
/// let [a, b, c, d] = [(); 4].map(|()| AsidContext::new());
///
/// let first = asids.switch_to(cpu0, &a)?;
/// assert!(first.needs_flush()); // every CPU flushes once before its first ASID
/// let on_cpu1 = asids.switch_to(cpu1, &b)?;
/// assert_ne!(on_cpu1.asid(), first.asid());
///
/// asids.switch_to(cpu0, &c)?; // the last free ASID of generation 1
/// assert_eq!(asids.generation(), 1);
/// let after = asids.switch_to(cpu0, &d)?; // none left: rollover
/// assert_eq!(asids.generation(), 2);
/// assert!(after.needs_flush());
///
/// // `b` was running on CPU 1 during the rollover, so it keeps its ASID; CPU 1 learns about
/// // the rollover (and flushes) on its next switch.
/// let again = asids.switch_to(cpu1, &b)?;
/// assert_eq!(again.asid(), on_cpu1.asid());
/// assert!(again.needs_flush());
/// # Ok::<(), machvm_tlb::asid::AsidError>(())
/// ```
///
/// A kernel keeps one in a `static`:
///
/// ```
/// use machvm_tlb::asid::AsidAllocator;
///
/// static ASIDS: AsidAllocator<4> = match AsidAllocator::new(16) {
///     Ok(asids) => asids,
///     Err(_) => panic!("16-bit ASIDs fit 4 CPUs"),
/// };
/// assert_eq!(ASIDS.capacity(), 65_535);
/// ```
pub struct AsidAllocator<const CPUS: usize> {
    /// The ASID width.
    bits: u8,
    /// The current generation as a context-word prefix (`generation << 16`). Written only under
    /// `state`'s lock.
    generation: AtomicU64,
    /// Per CPU: the context word last switched to, or 0 after a rollover (forces the slow
    /// path). Written by the CPU itself and, under the lock, by a rollover.
    active: PerCpu<AtomicU64, CPUS>,
    /// The slow path's state.
    state: Mutex<State<CPUS>>,
}

/// Checks `bits` for `cpus` CPUs (a `const fn`, for `AsidAllocator::new`).
const fn check_width(bits: u8, cpus: usize) -> Result<(), AsidError> {
    if bits == 0 || bits > MAX_ASID_BITS {
        return Err(AsidError::UnsupportedWidth { bits });
    }
    let user_asids = (1_usize << bits) - 1;
    if user_asids <= cpus {
        return Err(AsidError::TooFewAsids { bits, cpus });
    }
    Ok(())
}

impl<const CPUS: usize> AsidAllocator<CPUS> {
    /// Creates an allocator of `bits`-bit ASIDs for CPUs `0..CPUS`.
    ///
    /// Hardware widths are 8 or 16 (aarch64, `ID_AA64MMFR0_EL1.ASIDBits`) and 12 (x86_64
    /// PCIDs). Any width from 1 to 16 is accepted as long as it leaves more user ASIDs
    /// (`2^bits - 1`) than CPUs: small widths make rollovers frequent, which tests want.
    /// Every CPU's first switch reports a flush.
    ///
    /// # Errors
    ///
    /// - [`AsidError::UnsupportedWidth`] if `bits` is 0 or above [`MAX_ASID_BITS`].
    /// - [`AsidError::TooFewAsids`] if `2^bits - 1 <= CPUS`.
    #[cfg(not(loom))]
    pub const fn new(bits: u8) -> Result<Self, AsidError> {
        if let Err(e) = check_width(bits, CPUS) {
            return Err(e);
        }
        Ok(Self {
            bits,
            generation: AtomicU64::new(FIRST_GEN),
            active: PerCpu::new([const { AtomicU64::new(0) }; CPUS]),
            state: Mutex::new(State::new()),
        })
    }

    /// Creates an allocator of `bits`-bit ASIDs for CPUs `0..CPUS` (not `const` under loom).
    ///
    /// # Errors
    ///
    /// - [`AsidError::UnsupportedWidth`] if `bits` is 0 or above [`MAX_ASID_BITS`].
    /// - [`AsidError::TooFewAsids`] if `2^bits - 1 <= CPUS`.
    #[cfg(loom)]
    pub fn new(bits: u8) -> Result<Self, AsidError> {
        check_width(bits, CPUS)?;
        Ok(Self {
            bits,
            generation: AtomicU64::new(FIRST_GEN),
            active: PerCpu::from_fn(|_| AtomicU64::new(0)),
            state: Mutex::new(State::new()),
        })
    }

    /// Returns the ASID width in bits.
    #[must_use]
    pub const fn bits(&self) -> u8 {
        self.bits
    }

    /// Returns the number of ASIDs handed out per generation: `2^bits - 1` (0 is the kernel's).
    #[must_use]
    pub const fn capacity(&self) -> usize {
        (1 << self.bits) - 1
    }

    /// Returns the number of CPUs, `CPUS`.
    #[must_use]
    pub const fn cpus(&self) -> usize {
        CPUS
    }

    /// Returns the current generation: 1 at creation, plus one per rollover.
    #[must_use]
    pub fn generation(&self) -> u64 {
        // Relaxed: a snapshot; nothing is read through it.
        self.generation.load(Ordering::Relaxed) >> GEN_SHIFT
    }

    /// One past the largest ASID.
    const fn limit(&self) -> u32 {
        1 << self.bits
    }

    /// Gives CPU `cpu` the ASID of `ctx`, allocating one if `ctx` has none in the current
    /// generation, and says whether the CPU must flush its local TLB before loading it.
    ///
    /// Call it on `cpu`, with preemption disabled, on every switch to the address space `ctx`
    /// belongs to (also when switching back to the same one after a rollover). Do what the
    /// returned [`AsidSwitch`] says before running user code: flush if
    /// [`needs_flush`](AsidSwitch::needs_flush), then load the ASID.
    ///
    /// Lock-free when `ctx` already has an ASID of the current generation and `cpu` has
    /// switched since the last rollover; otherwise it takes the allocator's lock.
    ///
    /// # Errors
    ///
    /// - [`AsidError::CpuOutOfRange`] if `cpu` is not below `CPUS`; nothing changed.
    /// - [`AsidError::GenerationsExhausted`] if a rollover is needed and none is left; nothing
    ///   changed.
    /// - [`AsidError::NoFreeAsid`] never, given the width check of [`new`](Self::new).
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_sync::CpuIndex;
    /// use machvm_tlb::asid::{AsidAllocator, AsidContext};
    ///
    /// let asids = AsidAllocator::<2>::new(8)?;
    /// let space = AsidContext::new();
    /// let first = asids.switch_to(CpuIndex::new(0), &space)?;
    /// let again = asids.switch_to(CpuIndex::new(0), &space)?; // fast path
    /// assert_eq!(first.asid(), again.asid());
    /// assert!(!again.needs_flush());
    /// assert!(asids.switch_to(CpuIndex::new(2), &space).is_err());
    /// # Ok::<(), machvm_tlb::asid::AsidError>(())
    /// ```
    pub fn switch_to(&self, cpu: CpuIndex, ctx: &AsidContext) -> Result<AsidSwitch, AsidError> {
        let Some(active) = self.active.get(cpu) else {
            return Err(AsidError::CpuOutOfRange { cpu, cpus: CPUS });
        };

        // Fast path.
        // Acquire: pairs with the Release store of the slow path that wrote this word. If the
        // word was written after a rollover, the rollover's swap of our active word then
        // happens before the compare-exchange below, which must see it (and fail).
        let word = ctx.word.load(Ordering::Acquire);
        // Relaxed: only its own location's order matters here; a stale value at worst sends us
        // to the slow path, or lets the compare-exchange decide (see the module docs).
        let current = self.generation.load(Ordering::Relaxed);
        // Relaxed: only this CPU stores non-zero values, and the compare-exchange re-checks.
        let old = active.load(Ordering::Relaxed);
        if old != 0
            && (word ^ current) >> GEN_SHIFT == 0
            // Relaxed: read-modify-writes of one location are totally ordered, which is all
            // the race with a rollover's swap needs; nothing else is published through it.
            && active
                .compare_exchange(old, word, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Ok(AsidSwitch {
                asid: Asid::new(asid_of(word)),
                needs_flush: false,
            });
        }

        self.switch_slow(cpu, active, ctx)
    }

    /// The slow path of `switch_to`, under the lock.
    fn switch_slow(
        &self,
        cpu: CpuIndex,
        active: &AtomicU64,
        ctx: &AsidContext,
    ) -> Result<AsidSwitch, AsidError> {
        let pending_index = cpu.as_usize();
        if pending_index >= CPUS {
            return Err(AsidError::CpuOutOfRange { cpu, cpus: CPUS });
        }
        let mut state = self.state.lock();
        // Relaxed: context words and the generation are only written under this lock.
        let mut word = ctx.word.load(Ordering::Relaxed);
        let current = self.generation.load(Ordering::Relaxed);
        if (word ^ current) >> GEN_SHIFT != 0 {
            word = self.new_context(&mut state, word)?;
            // Release: a fast path that reads this word must also see the rollover (if any)
            // that came before it; see the Acquire load in `switch_to`.
            ctx.word.store(word, Ordering::Release);
        }
        let needs_flush = state
            .flush_pending
            .get_mut(pending_index)
            .is_some_and(|pending| core::mem::replace(pending, false));
        // Relaxed: rollovers write this word under the lock we hold, which orders them.
        active.store(word, Ordering::Relaxed);
        Ok(AsidSwitch {
            asid: Asid::new(asid_of(word)),
            needs_flush,
        })
    }

    /// Returns a context word of the current generation for a context whose word is `old`
    /// (from an older generation, or 0), rolling over if no ASID is free.
    fn new_context(&self, state: &mut State<CPUS>, old: u64) -> Result<u64, AsidError> {
        // Relaxed: written only under the lock we hold.
        let current = self.generation.load(Ordering::Relaxed);
        let old_asid = u32::from(asid_of(old));
        if old != 0 {
            let renewed = current | u64::from(old_asid);
            // A CPU kept the old ASID across a rollover: it is ours in this generation.
            if state.update_reserved(old, renewed) {
                return Ok(renewed);
            }
            // Still free in this generation: keep it (no CPU can hold translations of another
            // context under it without having been told to flush since).
            if old_asid != 0 && old_asid < self.limit() && state.claim(old_asid) {
                return Ok(renewed);
            }
        }
        if let Some(asid) = state.find_free(self.limit()) {
            state.claim(asid);
            state.cursor = asid;
            return Ok(current | u64::from(asid));
        }

        let next = self.rollover(state, current)?;
        match state.find_free(self.limit()) {
            Some(asid) => {
                state.claim(asid);
                state.cursor = asid;
                Ok(next | u64::from(asid))
            }
            None => Err(AsidError::NoFreeAsid),
        }
    }

    /// Starts a new generation: clears the bitmap, reserves what every CPU runs, marks every
    /// CPU for a flush. Returns the new generation prefix.
    fn rollover(&self, state: &mut State<CPUS>, current: u64) -> Result<u64, AsidError> {
        let next = match current.checked_add(GEN_UNIT) {
            Some(next) => next,
            None => return Err(AsidError::GenerationsExhausted),
        };
        // Relaxed: readers outside the lock only compare it with context words; the active
        // words' swaps below decide the races (see the module docs).
        self.generation.store(next, Ordering::Relaxed);
        state.map = [0; MAP_WORDS];
        state.claim(0);
        for (active, reserved) in self.active.iter().zip(state.reserved.iter_mut()) {
            // Relaxed: a read-modify-write, totally ordered with the fast path's
            // compare-exchange on the same word; the lock orders it with slow paths.
            let mut word = active.swap(0, Ordering::Relaxed);
            // A CPU that has not switched since the last rollover keeps its reservation.
            if word == 0 {
                word = *reserved;
            }
            *reserved = word;
        }
        for word in state.reserved {
            state.claim(u32::from(asid_of(word)));
        }
        state.flush_pending = [true; CPUS];
        state.cursor = 1;
        Ok(next)
    }
}

impl<const CPUS: usize> fmt::Debug for AsidAllocator<CPUS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsidAllocator")
            .field("bits", &self.bits)
            .field("cpus", &CPUS)
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use alloc::string::ToString;
    use alloc::vec::Vec;

    use super::*;

    const CPU0: CpuIndex = CpuIndex::new(0);
    const CPU1: CpuIndex = CpuIndex::new(1);

    #[test]
    fn widths_are_checked_against_the_cpu_count() {
        assert_eq!(
            AsidAllocator::<1>::new(0).err(),
            Some(AsidError::UnsupportedWidth { bits: 0 })
        );
        assert_eq!(
            AsidAllocator::<1>::new(17).err(),
            Some(AsidError::UnsupportedWidth { bits: 17 })
        );
        assert_eq!(
            AsidAllocator::<3>::new(2).err(),
            Some(AsidError::TooFewAsids { bits: 2, cpus: 3 })
        );
        assert!(AsidAllocator::<2>::new(2).is_ok());
        for bits in [8, 12, 16] {
            let a = AsidAllocator::<64>::new(bits).unwrap();
            assert_eq!(a.bits(), bits);
            assert_eq!(a.capacity(), (1 << bits) - 1);
            assert_eq!(a.cpus(), 64);
        }
    }

    #[test]
    fn out_of_range_cpu_is_an_error_and_changes_nothing() {
        let a = AsidAllocator::<2>::new(8).unwrap();
        let ctx = AsidContext::new();
        assert_eq!(
            a.switch_to(CpuIndex::new(2), &ctx),
            Err(AsidError::CpuOutOfRange {
                cpu: CpuIndex::new(2),
                cpus: 2
            })
        );
        assert_eq!(ctx.asid(), None);
    }

    #[test]
    fn first_switch_flushes_and_the_fast_path_does_not() {
        let a = AsidAllocator::<2>::new(8).unwrap();
        let ctx = AsidContext::new();
        let s = a.switch_to(CPU0, &ctx).unwrap();
        assert!(s.needs_flush());
        assert_eq!(s.asid(), Asid::new(1));
        let again = a.switch_to(CPU0, &ctx).unwrap();
        assert_eq!(
            again,
            AsidSwitch {
                asid: Asid::new(1),
                needs_flush: false
            }
        );
        // CPU 1 has never switched: it flushes once.
        assert!(a.switch_to(CPU1, &ctx).unwrap().needs_flush());
        assert!(!a.switch_to(CPU1, &ctx).unwrap().needs_flush());
    }

    #[test]
    fn asids_are_handed_out_round_robin_without_zero() {
        let a = AsidAllocator::<1>::new(3).unwrap();
        let ctxs: [AsidContext; 7] = Default::default();
        let got: Vec<u16> = ctxs
            .iter()
            .map(|c| a.switch_to(CPU0, c).unwrap().asid().as_u16())
            .collect();
        assert_eq!(got, [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(a.generation(), 1);
    }

    #[test]
    fn rollover_keeps_running_contexts_and_reclaims_the_rest() {
        let a = AsidAllocator::<2>::new(2).unwrap();
        let [x, y, z, w] = [(); 4].map(|()| AsidContext::new());
        let _ = a.switch_to(CPU1, &x).unwrap(); // x: 1, running on CPU 1
        let _ = a.switch_to(CPU0, &y).unwrap(); // y: 2
        let _ = a.switch_to(CPU0, &z).unwrap(); // z: 3, running on CPU 0
        let s = a.switch_to(CPU0, &w).unwrap(); // rollover; 1 and 3 reserved
        assert_eq!(a.generation(), 2);
        assert!(s.needs_flush());
        assert_eq!(s.asid(), Asid::new(2));
        let sx = a.switch_to(CPU1, &x).unwrap();
        assert_eq!(
            sx,
            AsidSwitch {
                asid: Asid::new(1),
                needs_flush: true
            }
        );
        assert_eq!(x.generation(), Some(2));
        // z is reserved by CPU 0's old active word; y lost its ASID to w.
        assert_eq!(a.switch_to(CPU1, &z).unwrap().asid(), Asid::new(3));
        let sy = a.switch_to(CPU0, &y).unwrap();
        assert_eq!(a.generation(), 3);
        assert!(sy.needs_flush());
    }

    #[test]
    fn a_free_old_asid_is_kept_after_rollover() {
        let a = AsidAllocator::<1>::new(2).unwrap();
        let [x, y, z] = [(); 3].map(|()| AsidContext::new());
        let _ = a.switch_to(CPU0, &x).unwrap(); // 1
        let _ = a.switch_to(CPU0, &y).unwrap(); // 2
        let _ = a.switch_to(CPU0, &z).unwrap(); // 3
        let _ = a.switch_to(CPU0, &x).unwrap(); // fast path
        let _ = a.switch_to(CPU0, &AsidContext::new()).unwrap(); // rollover: 1 reserved, gets 2
        assert_eq!(a.generation(), 2);
        // z's old ASID 3 is still free in generation 2.
        assert_eq!(a.switch_to(CPU0, &z).unwrap().asid(), Asid::new(3));
    }

    #[test]
    fn exhausted_generations_are_reported() {
        let a = AsidAllocator::<1>::new(2).unwrap();
        a.generation.store(!ASID_MASK, Ordering::Relaxed);
        let ctxs: [AsidContext; 4] = Default::default();
        for c in &ctxs[..3] {
            let _ = a.switch_to(CPU0, c).unwrap();
        }
        assert_eq!(
            a.switch_to(CPU0, &ctxs[3]),
            Err(AsidError::GenerationsExhausted)
        );
        assert_eq!(ctxs[3].asid(), None);
        assert_eq!(a.generation(), u64::MAX >> GEN_SHIFT);
    }

    #[test]
    fn errors_display_their_values() {
        assert_eq!(
            AsidError::TooFewAsids { bits: 2, cpus: 3 }.to_string(),
            "a 2-bit asid space has no more user asids than the 3 cpus"
        );
        assert_eq!(
            AsidError::CpuOutOfRange {
                cpu: CpuIndex::new(4),
                cpus: 2
            }
            .to_string(),
            "cpu 4 is out of range for 2 cpus"
        );
    }

    #[test]
    fn find_free_respects_bounds_across_words() {
        let mut s = State::<1>::new();
        assert_eq!(s.find_free_in(1, 200), Some(1));
        for a in 1..130 {
            assert!(s.claim(a));
        }
        assert!(!s.claim(5));
        assert_eq!(s.find_free_in(1, 200), Some(130));
        assert_eq!(s.find_free_in(1, 130), None);
        assert_eq!(s.find_free_in(131, 200), Some(131));
        assert!(!s.claim(1 << 16));
    }
}
