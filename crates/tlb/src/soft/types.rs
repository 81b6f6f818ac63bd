//! The values the software TLB takes and returns: accesses, walks, cached entries,
//! translations, errors and counters.

use core::fmt;

use machvm_addr::{PageSize, PhysAddr, VirtAddr, VmProt};
use machvm_sync::CpuIndex;

use super::SoftTlb;
use crate::ops::Asid;

/// The kind of memory access a simulated CPU makes.
#[allow(clippy::exhaustive_enums)] // Read, write and execute are every kind of access there is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// A load.
    Read,
    /// A store.
    Write,
    /// An instruction fetch.
    Execute,
}

impl Access {
    /// Returns the protection this access needs ([`VmProt::READ`], [`VmProt::WRITE`] or
    /// [`VmProt::EXECUTE`]).
    #[inline]
    pub const fn prot(self) -> VmProt {
        match self {
            Self::Read => VmProt::READ,
            Self::Write => VmProt::WRITE,
            Self::Execute => VmProt::EXECUTE,
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Execute => "execute",
        })
    }
}

/// What the page table currently says about a virtual address: the result of a page-table walk
/// passed to [`SoftTlb::translate`].
///
/// Every valid translation is readable; `writable`, `executable` and `global` default to
/// `false`. Build one with [`new`](Self::new) and the `with_*` methods.
///
/// # Examples
///
/// ```
/// use machvm_addr::{PageSize, PhysAddr};
/// use machvm_tlb::soft::{Access, Walked};
///
/// let w = Walked::new(PhysAddr::new(0x20_0000), PageSize::Size2MiB).with_writable(true);
/// assert!(w.permits(Access::Write));
/// assert!(!w.permits(Access::Execute));
/// assert!(!w.global);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Walked {
    /// Physical address of the start of the page (or block) that contains the address; a
    /// multiple of `size`.
    pub pa: PhysAddr,
    /// Size of the page or block.
    pub size: PageSize,
    /// Stores are allowed.
    pub writable: bool,
    /// Instruction fetches are allowed.
    pub executable: bool,
    /// The translation is global: cached for every ASID (aarch64 `nG = 0`, `x86_64` PTE.G).
    pub global: bool,
}

impl Walked {
    /// Returns a read-only, non-executable, non-global translation to the page at `pa`.
    #[inline]
    #[must_use]
    pub const fn new(pa: PhysAddr, size: PageSize) -> Self {
        Self {
            pa,
            size,
            writable: false,
            executable: false,
            global: false,
        }
    }

    /// Returns the translation with `writable` set to `writable`.
    #[inline]
    #[must_use]
    pub const fn with_writable(mut self, writable: bool) -> Self {
        self.writable = writable;
        self
    }

    /// Returns the translation with `executable` set to `executable`.
    #[inline]
    #[must_use]
    pub const fn with_executable(mut self, executable: bool) -> Self {
        self.executable = executable;
        self
    }

    /// Returns the translation with `global` set to `global`.
    #[inline]
    #[must_use]
    pub const fn with_global(mut self, global: bool) -> Self {
        self.global = global;
        self
    }

    /// Returns whether the translation allows `access`.
    #[inline]
    pub const fn permits(&self, access: Access) -> bool {
        match access {
            Access::Read => true,
            Access::Write => self.writable,
            Access::Execute => self.executable,
        }
    }
}

impl fmt::Display for Walked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{size} page at pa {pa:#x} {perms}",
            size = self.size,
            pa = self.pa,
            perms = Perms(self.writable, self.executable, self.global),
        )
    }
}

/// Formats permissions as `r`, `w`/`-`, `x`/`-`, then ` global` if set.
struct Perms(bool, bool, bool);

impl fmt::Display for Perms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = if self.0 { 'w' } else { '-' };
        let x = if self.1 { 'x' } else { '-' };
        write!(f, "r{w}{x}")?;
        if self.2 {
            f.write_str(" global")?;
        }
        Ok(())
    }
}

/// A translation cached in a [`SoftTlb`] entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Cached {
    /// ASID of the access that filled the entry (for a global entry, any ASID may use it).
    pub asid: Asid,
    /// The entry serves every ASID.
    pub global: bool,
    /// Virtual address of the start of the page; a multiple of `size`.
    pub va: VirtAddr,
    /// Size of the page or block.
    pub size: PageSize,
    /// Physical address of the start of the page; a multiple of `size`.
    pub pa: PhysAddr,
    /// Stores are allowed.
    pub writable: bool,
    /// Instruction fetches are allowed.
    pub executable: bool,
    /// Epoch of the [`SoftTlb`] when the entry was filled (see [`SoftTlb::epoch`]).
    pub filled_at: u64,
}

impl Cached {
    /// Returns the entry's translation in the form a page-table walk gives it.
    #[inline]
    pub const fn walked(&self) -> Walked {
        Walked {
            pa: self.pa,
            size: self.size,
            writable: self.writable,
            executable: self.executable,
            global: self.global,
        }
    }

    /// Returns whether the entry's page contains `va`.
    #[inline]
    pub const fn covers(&self, va: VirtAddr) -> bool {
        va.as_u64() & !self.size.mask() == self.va.as_u64()
    }

    /// Returns whether an access of address space `asid` to `va` may use this entry: the page
    /// contains `va` and the entry is global or tagged with `asid`.
    #[inline]
    pub fn serves(&self, asid: Asid, va: VirtAddr) -> bool {
        (self.global || self.asid == asid) && self.covers(va)
    }

    /// Returns whether the entry allows `access`.
    #[inline]
    pub const fn permits(&self, access: Access) -> bool {
        self.walked().permits(access)
    }

    /// Returns whether the page table's `current` translation of this entry's address no
    /// longer allows what the entry allows: not mapped, another frame or page size, or write,
    /// execute or global permission removed. Using such an entry is a missed invalidation.
    pub fn is_stale_against(&self, current: Option<&Walked>) -> bool {
        match current {
            None => true,
            Some(w) => {
                w.size != self.size
                    || w.pa != self.pa
                    || (self.writable && !w.writable)
                    || (self.executable && !w.executable)
                    || (self.global && !w.global)
            }
        }
    }

    /// Returns the last byte of the page (inclusive, so pages at the top of the address space
    /// do not overflow).
    const fn last_byte(&self) -> u64 {
        self.va.as_u64() | self.size.mask()
    }

    /// Returns whether the page overlaps the inclusive byte range `first..=last`.
    pub(super) const fn overlaps(&self, first: u64, last: u64) -> bool {
        self.va.as_u64() <= last && self.last_byte() >= first
    }
}

impl fmt::Display for Cached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{size} page {va:#x} -> pa {pa:#x} {perms} (asid {asid}, filled at epoch {epoch})",
            size = self.size,
            va = self.va,
            pa = self.pa,
            perms = Perms(self.writable, self.executable, self.global),
            asid = self.asid.as_u16(),
            epoch = self.filled_at,
        )
    }
}

/// Where the translation returned by [`SoftTlb::translate`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// A cached entry that still matches the page table.
    Hit,
    /// A miss: the walk's translation was cached.
    Filled,
    /// A cached entry lacked a permission the page table now grants (an upgrade needs no
    /// flush); the entry was refilled from the walk, as hardware re-walks before faulting.
    Upgraded,
    /// The walk overlapped an invalidation of this CPU, so its translation was used once and
    /// not cached.
    Uncached,
    /// A stale entry inside an open [`UpdateWindow`](super::UpdateWindow): the old translation was used, as the
    /// hardware would before the shootdown reaches this CPU.
    StaleTolerated,
}

/// A successful translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Translated {
    /// Physical address the access goes to (page start plus the offset of the address).
    pub pa: PhysAddr,
    /// The translation used. For [`Source::Uncached`] it was not stored; its `filled_at` is the
    /// epoch of the walk.
    pub entry: Cached,
    /// Where the translation came from.
    pub source: Source,
}

impl Translated {
    /// Returns whether a cached entry served the access ([`Source::Hit`] or
    /// [`Source::StaleTolerated`]).
    #[inline]
    pub const fn is_hit(&self) -> bool {
        matches!(self.source, Source::Hit | Source::StaleTolerated)
    }
}

/// Why a translation faulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultKind {
    /// The page table does not map the address (translation fault).
    NotMapped,
    /// The page table maps the address without the permission the access needs.
    Permission,
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotMapped => "not mapped",
            Self::Permission => "permission denied",
        })
    }
}

/// Errors of [`SoftTlb`].
///
/// Ordered by kind: caller mistakes (retrying the same call fails again), then faults (the
/// simulated CPU takes a page fault; retrying after it is handled can succeed), then
/// [`Stale`](Self::Stale), the bug this model exists to find. A failed call leaves the entries
/// unchanged (except that a [`Fault`](Self::Fault) caused by permissions still caches the walk,
/// see [`SoftTlb::translate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SoftTlbError {
    /// The CPU count is zero or above [`SoftTlb::MAX_CPUS`].
    BadCpuCount {
        /// The requested count.
        cpus: usize,
    },
    /// The set count is zero, not a power of two or above [`SoftTlb::MAX_SETS`].
    BadSetCount {
        /// The requested count.
        sets: usize,
    },
    /// The way count is zero or above [`SoftTlb::MAX_WAYS`].
    BadWayCount {
        /// The requested count.
        ways: usize,
    },
    /// `cpus × sets × ways` is above [`SoftTlb::MAX_ENTRIES`].
    TooLarge {
        /// The requested number of entries (saturated at `usize::MAX`).
        entries: usize,
    },
    /// The CPU index is not below the TLB's CPU count.
    BadCpu {
        /// The index given.
        cpu: CpuIndex,
        /// The TLB's CPU count.
        cpus: usize,
    },
    /// The page-table walk returned a physical address that is not a multiple of its page size.
    BadWalk {
        /// The address walked.
        va: VirtAddr,
        /// What the walk returned.
        walked: Walked,
    },
    /// The access faults: the page table does not map the address or lacks the permission.
    /// Retrying after the fault is handled can succeed.
    Fault {
        /// The CPU that accessed.
        cpu: CpuIndex,
        /// The address space it accessed in.
        asid: Asid,
        /// The address accessed.
        va: VirtAddr,
        /// The kind of access.
        access: Access,
        /// Why it faulted.
        kind: FaultKind,
    },
    /// A missed invalidation: `cpu` used (or, from the `check_*` methods, still holds) a cached
    /// translation that the page table no longer allows. Retrying gives the same error until
    /// the entry is invalidated.
    Stale {
        /// The CPU holding the entry.
        cpu: CpuIndex,
        /// The address space of the access (or check).
        asid: Asid,
        /// The address accessed (or checked).
        va: VirtAddr,
        /// The cached translation.
        cached: Cached,
        /// What the page table says now (`None`: not mapped).
        current: Option<Walked>,
    },
}

impl SoftTlbError {
    /// Returns whether this is a [`Fault`](Self::Fault).
    #[inline]
    pub const fn is_fault(&self) -> bool {
        matches!(self, Self::Fault { .. })
    }

    /// Returns whether this is a [`Stale`](Self::Stale) report.
    #[inline]
    pub const fn is_stale(&self) -> bool {
        matches!(self, Self::Stale { .. })
    }
}

impl fmt::Display for SoftTlbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadCpuCount { cpus } => write!(
                f,
                "soft TLB cpu count {cpus} is not in 1..={}",
                SoftTlb::MAX_CPUS
            ),
            Self::BadSetCount { sets } => write!(
                f,
                "soft TLB set count {sets} is not a power of two in 1..={}",
                SoftTlb::MAX_SETS
            ),
            Self::BadWayCount { ways } => write!(
                f,
                "soft TLB way count {ways} is not in 1..={}",
                SoftTlb::MAX_WAYS
            ),
            Self::TooLarge { entries } => write!(
                f,
                "soft TLB of {entries} entries is above the limit of {}",
                SoftTlb::MAX_ENTRIES
            ),
            Self::BadCpu { cpu, cpus } => {
                write!(f, "cpu {cpu} is out of range for a soft TLB of {cpus} cpus")
            }
            Self::BadWalk { va, walked } => write!(
                f,
                "walk of va {va:#x} returned pa {pa:#x}, not aligned to its {size} page",
                pa = walked.pa,
                size = walked.size,
            ),
            Self::Fault {
                cpu,
                asid,
                va,
                access,
                kind,
            } => write!(
                f,
                "{access} fault on cpu {cpu}, asid {asid}, va {va:#x}: {kind}",
                asid = asid.as_u16(),
            ),
            Self::Stale {
                cpu,
                asid,
                va,
                cached,
                current,
            } => {
                write!(
                    f,
                    "stale translation on cpu {cpu}, asid {asid}, va {va:#x}: cached {cached}, \
                     but the page table has ",
                    asid = asid.as_u16(),
                )?;
                match current {
                    Some(w) => write!(f, "{w}"),
                    None => f.write_str("no mapping"),
                }
            }
        }
    }
}

impl core::error::Error for SoftTlbError {}

/// Event counts of a [`SoftTlb`] (of one CPU, or summed over all).
///
/// Every [`translate`](SoftTlb::translate) that reaches the lookup counts one hit or one miss;
/// the other counters are independent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub struct SoftTlbStats {
    /// Translations served by a cached entry (including permission faults on one and
    /// tolerated stale uses).
    pub hits: u64,
    /// Translations with no usable entry (fills, upgrades, uncached walks, faults on a miss).
    pub misses: u64,
    /// Entries written (fills and upgrades).
    pub fills: u64,
    /// Valid entries replaced to make room.
    pub evictions: u64,
    /// Entries refilled because the page table granted a missing permission.
    pub upgrades: u64,
    /// Walks used once and not cached because they overlapped an invalidation.
    pub uncached_walks: u64,
    /// Translations that returned [`SoftTlbError::Fault`].
    pub faults: u64,
    /// Translations that returned [`SoftTlbError::Stale`].
    pub stale_reports: u64,
    /// Stale uses inside an open [`UpdateWindow`](super::UpdateWindow) (not reported).
    pub stale_tolerated: u64,
    /// Invalidation operations applied to the CPU (a broadcast counts once per CPU).
    pub invalidations: u64,
    /// Entries those operations removed.
    pub entries_invalidated: u64,
    /// [`TlbOps::sync`](crate::TlbOps::sync) calls through a handle issued by the CPU.
    pub syncs: u64,
    /// [`TlbOps::complete`](crate::TlbOps::complete) calls through a handle issued by the CPU.
    pub completes: u64,
    /// Invalidations issued through a [`TlbOps`](crate::TlbOps) handle outside a `sync … complete` bracket,
    /// and `complete` calls with no open `sync`.
    pub unsynced_invalidations: u64,
}

impl SoftTlbStats {
    /// Adds every counter of `other` to `self`.
    pub(super) fn add(&mut self, other: &Self) {
        self.hits += other.hits;
        self.misses += other.misses;
        self.fills += other.fills;
        self.evictions += other.evictions;
        self.upgrades += other.upgrades;
        self.uncached_walks += other.uncached_walks;
        self.faults += other.faults;
        self.stale_reports += other.stale_reports;
        self.stale_tolerated += other.stale_tolerated;
        self.invalidations += other.invalidations;
        self.entries_invalidated += other.entries_invalidated;
        self.syncs += other.syncs;
        self.completes += other.completes;
        self.unsynced_invalidations += other.unsynced_invalidations;
    }
}
