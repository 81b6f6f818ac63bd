//! Zones: fixed-size elements carved from chunks, with per-CPU magazines and a depot.
//!
//! Three layers, after Bonwick and Adams ("Magazines and Vmem") and XNU's zalloc:
//!
//! 1. **Per-CPU cache**: each CPU holds two magazines (arrays of free elements), *loaded* and
//!    *previous*. Allocation pops from the loaded magazine and freeing pushes to it; when it
//!    runs empty (or full) and the previous one is full (or empty) they swap. This path takes
//!    no lock and no atomic read-modify-write.
//! 2. **Depot**: full and empty magazines shared by all CPUs under the zone lock. A CPU whose
//!    two magazines are both empty trades an empty one for a full one (or fills one from the
//!    chunks); one whose magazines are both full trades a full one for an empty one. The depot
//!    is not capped (unless [`ZoneConfig::depot_limit`] says so): like XNU's recirculation
//!    depot, it is shrunk by the zone GC, [`Zone::trim`], to its working set — the magazines
//!    that stayed unused since the previous trim return their elements to the chunks, but for
//!    128 KiB of elements per CPU. When the page source runs dry, the depot is emptied into
//!    the chunks before an allocation fails.
//! 3. **Chunks**: runs of pages from the [`PageSource`], each with a header, an allocation
//!    bitmap and a freelist (see `chunk.rs`), kept on empty / partial / full lists. Empty chunks
//!    go back to the source when the zone is trimmed or drained.
//!
//! With [`ZoneFlags::CHECK_FREE`] every element has a state byte in its chunk's metadata (with a
//! user, or free): a free of a free element is a double free. With
//! [`ZoneFlags::ZERO_ON_FREE`] free elements are zero (but for a chunk freelist link) and checked
//! on allocation. The zone never reads the contents of an element a user hands back (they may
//! be uninitialised); it reads only memory it wrote itself.

use core::fmt;
use core::ptr::{self, NonNull};

use machvm_sync::atomic::{AtomicBool, AtomicU64, Ordering};
use machvm_sync::{CpuIndex, Mutex, PerCpu, PerCpuCell};

use crate::chunk::{self, ChunkHeader, ChunkList, Codec, Geometry, ListKind};
use crate::cpu::CpuLocal;
use crate::error::{Violation, ViolationHandler, ViolationKind, ZoneError, panic_on_violation};
use crate::pac::PacKeys;
use crate::source::{PageSource, PageSourceError};
use crate::specialized::{FlagCase, RuntimeFlags};
use crate::stats::ZoneStats;

/// Largest element a zone holds (XNU's `ZONE_MAX_ALLOC_SIZE`).
pub const MAX_ELEMENT_SIZE: usize = 32 * 1024;
/// Smallest element stride.
pub const MIN_ELEMENT_SIZE: usize = 16;
/// Longest zone name, in bytes.
pub const MAX_NAME: usize = 32;
/// Most elements a magazine holds.
pub const MAX_MAGAZINE: usize = 64;

/// Per-zone hardening and caching choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ZoneFlags(u32);

impl ZoneFlags {
    /// Nothing: no checks, plain freelist links.
    pub const NONE: Self = Self(0);
    /// Zero every element when it is freed and check on allocation that it is still zero: a
    /// write after free is reported ([`ViolationKind::ModifiedAfterFree`]), and allocations
    /// return zeroed memory.
    pub const ZERO_ON_FREE: Self = Self(1 << 0);
    /// Check every free: the pointer must be an element of one of the zone's chunks, and not
    /// free already (a state byte per element in the chunk's metadata). Reports
    /// [`ViolationKind::ForeignPointer`], [`ViolationKind::NotAnElement`] and
    /// [`ViolationKind::DoubleFree`].
    pub const CHECK_FREE: Self = Self(1 << 1);
    /// Encode chunk freelist links with the zone secret and the link's own address, and check
    /// every decoded link ([`ViolationKind::FreelistCorrupted`]).
    pub const ENCODE_FREELIST: Self = Self(1 << 2);
    /// No per-CPU magazines: every operation takes the zone lock.
    pub const NO_CACHE: Self = Self(1 << 3);
    /// Keep the last page of every chunk free of elements and make it inaccessible, so a
    /// linear overflow off the end of the last element faults. Needs a page source that can
    /// protect pages ([`PageSource::can_protect`]).
    pub const GUARD_PAGES: Self = Self(1 << 4);
    /// Read-only elements: after allocation an element changes only through
    /// [`Zone::mutate`]. Each element carries a checksum of its contents, checked by
    /// [`Zone::verify`], `mutate` and `free` ([`ViolationKind::ReadOnlyWrite`]); with a page
    /// source that can protect pages the element pages are also mapped read-only, so a stray
    /// write faults. Implies [`ZERO_ON_FREE`](Self::ZERO_ON_FREE) and
    /// [`CHECK_FREE`](Self::CHECK_FREE), and no per-CPU cache.
    pub const READ_ONLY: Self = Self(1 << 5);

    /// What release builds use unless a zone chooses: checked frees and encoded freelists.
    pub const RELEASE_DEFAULT: Self = Self(Self::CHECK_FREE.0 | Self::ENCODE_FREELIST.0);
    /// Every hardening check.
    pub const HARDENED: Self =
        Self(Self::ZERO_ON_FREE.0 | Self::CHECK_FREE.0 | Self::ENCODE_FREELIST.0);
    /// The default of this build: [`HARDENED`](Self::HARDENED) with debug assertions,
    /// [`RELEASE_DEFAULT`](Self::RELEASE_DEFAULT) without.
    pub const BUILD_DEFAULT: Self = if cfg!(debug_assertions) {
        Self::HARDENED
    } else {
        Self::RELEASE_DEFAULT
    };

    /// Returns whether every flag of `other` is set.
    #[inline]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Returns the union.
    #[must_use]
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Returns `self` without `other`'s flags.
    #[must_use]
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

/// How to build a zone.
///
/// # Examples
///
/// ```
/// use machvm_zone_alloc::{ZoneConfig, ZoneFlags};
///
/// let config = ZoneConfig::new("vm.objects", 96)
///     .align(16)
///     .limit(10_000)
///     .flags(ZoneFlags::HARDENED)
///     .secret(0x9e37_79b9_7f4a_7c15);
/// assert_eq!(config.element_size(), 96);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ZoneConfig<'n> {
    name: &'n str,
    size: usize,
    align: usize,
    limit: Option<usize>,
    flags: ZoneFlags,
    magazine: Option<usize>,
    depot_bytes: Option<usize>,
    secret: Option<usize>,
    pac: Option<PacKeys>,
    on_violation: ViolationHandler,
    on_exhaustion: Option<fn(&ZoneStats)>,
}

impl<'n> ZoneConfig<'n> {
    /// A zone named `name` of `size`-byte elements, aligned to 16 bytes, without a limit, with
    /// [`ZoneFlags::BUILD_DEFAULT`] and the panicking violation handler.
    pub const fn new(name: &'n str, size: usize) -> Self {
        Self {
            name,
            size,
            align: 16,
            limit: None,
            flags: ZoneFlags::BUILD_DEFAULT,
            magazine: None,
            depot_bytes: None,
            secret: None,
            pac: None,
            on_violation: panic_on_violation,
            on_exhaustion: None,
        }
    }

    /// Signs the freelist links with pointer authentication (aarch64 `FEAT_PAuth`, data key
    /// A, modifier: the link's address mixed with the zone secret) instead of the software
    /// encoding, when [`ZoneFlags::ENCODE_FREELIST`] is set. A link whose signature does not
    /// match is reported as [`ViolationKind::FreelistCorrupted`](crate::ViolationKind). On
    /// other architectures this changes nothing. See [`PacKeys`].
    #[must_use]
    pub const fn pac_freelist(mut self, keys: PacKeys) -> Self {
        self.pac = Some(keys);
        self
    }

    /// Sets the element alignment (a power of two, at most the page size).
    #[must_use]
    pub const fn align(mut self, align: usize) -> Self {
        self.align = align;
        self
    }

    /// Limits the zone to `elements` elements out of its chunks at once.
    ///
    /// Elements cached in other CPUs' magazines count against the limit; when it is reached
    /// the depot is emptied back into the chunks before the allocation fails.
    #[must_use]
    pub const fn limit(mut self, elements: usize) -> Self {
        self.limit = Some(elements);
        self
    }

    /// Sets the hardening and caching flags.
    #[must_use]
    pub const fn flags(mut self, flags: ZoneFlags) -> Self {
        self.flags = flags;
        self
    }

    /// Sets the magazine size (1 to [`MAX_MAGAZINE`]); by default it shrinks as elements
    /// grow, from 64 elements of 64 bytes or less to 4 for the largest elements.
    #[must_use]
    pub const fn magazine_size(mut self, elements: usize) -> Self {
        self.magazine = Some(elements);
        self
    }

    /// Caps the depot: at most `bytes` of free elements (in full magazines) wait there for
    /// reuse; beyond that a CPU that frees returns elements to their chunks. By default the
    /// depot is not capped, and [`Zone::trim`] shrinks it to its working set instead (see
    /// there). A cap below 128 KiB per CPU is raised to that (XNU's per-CPU cache allowance).
    #[must_use]
    pub const fn depot_limit(mut self, bytes: usize) -> Self {
        self.depot_bytes = Some(bytes);
        self
    }

    /// Sets the secret that encodes freelist links and chunk headers. Pass a
    /// random value (a kernel draws it from its entropy source, e.g. `machvm-aslr`); each zone
    /// mixes it with its own serial number. Without one the zone derives a value from its name
    /// and a stack address, which is only as unpredictable as the kernel's layout.
    #[must_use]
    pub const fn secret(mut self, secret: usize) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Sets the function called on a hardening violation (default:
    /// [`panic_on_violation`]).
    #[must_use]
    pub const fn on_violation(mut self, handler: ViolationHandler) -> Self {
        self.on_violation = handler;
        self
    }

    /// Sets a function called (outside every lock) when the zone first passes 90 % of its
    /// limit; it is called again after usage fell below 80 % and rose again.
    #[must_use]
    pub const fn on_exhaustion(mut self, callback: fn(&ZoneStats)) -> Self {
        self.on_exhaustion = Some(callback);
        self
    }

    /// Returns the element size.
    pub const fn element_size(&self) -> usize {
        self.size
    }
}

/// A zone name stored inline.
#[derive(Clone, Copy)]
pub(crate) struct ZoneName {
    bytes: [u8; MAX_NAME],
    len: usize,
}

impl ZoneName {
    pub(crate) fn new(name: &str) -> Option<Self> {
        let src = name.as_bytes();
        let mut bytes = [0; MAX_NAME];
        bytes.get_mut(..src.len())?.copy_from_slice(src);
        Some(Self {
            bytes,
            len: src.len(),
        })
    }

    pub(crate) fn as_str(&self) -> &str {
        // The bytes are a copy of a `&str` prefix that ends on the original's end, so they are
        // valid UTF-8; `unwrap_or` only guards the impossible case.
        core::str::from_utf8(self.bytes.get(..self.len).unwrap_or(&[])).unwrap_or("")
    }
}

impl fmt::Debug for ZoneName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A magazine: a stack of free elements. Lives in magazine pages from the page source.
#[repr(C)]
struct Magazine {
    count: usize,
    /// Link on a depot list (towards older magazines on the full list).
    next: *mut Magazine,
    /// Link towards newer magazines on the depot's full list (unused on the empty list).
    prev: *mut Magazine,
    slots: [*mut u8; MAX_MAGAZINE],
}

// A magazine page holds at least one magazine (page sizes are at least 4096 bytes).
const _: () = assert!(size_of::<MagazinePage>() + size_of::<Magazine>() <= 4096);

/// A page of magazines: this header, then magazines.
#[repr(C)]
struct MagazinePage {
    next: *mut MagazinePage,
    /// Magazines of this page on the depot's empty list: when all of them are, `trim` gives
    /// the page back.
    idle: usize,
}

/// One CPU's two magazines (null until first used).
///
/// The loaded magazine's element count lives here, next to its pointer, while it is loaded
/// (its own `count` field is stale until [`store_count`](Self::store_count)): the fast path
/// then reads the pointer and the count in parallel instead of one after the other.
///
/// Invariant the fast paths rely on (instead of null and bounds checks):
/// `count <= room <= MAX_MAGAZINE`, and `room == 0` whenever `loaded` is null (always, on a
/// CPU at or above the zone's `cached_cpus`: only the slow paths load magazines, after
/// testing it).
struct CpuCache {
    loaded: *mut Magazine,
    /// Elements in the loaded magazine (0 when there is none).
    count: usize,
    /// Slots the loaded magazine may fill: the zone's magazine size, 0 when none is loaded.
    room: usize,
    /// The zone's magazine size (at most `MAX_MAGAZINE`).
    capacity: usize,
    previous: *mut Magazine,
    /// Null, or the state byte of the loaded magazine's top element: what the free that
    /// pushed it had located, so that an allocation that pops it right back (LIFO use) need
    /// not locate it again. Every change of the loaded magazine or its count other than
    /// [`Zone::push`] clears it.
    top_state: *mut u8,
}

impl CpuCache {
    /// Writes the loaded magazine's count back into it, before it leaves the cache or is
    /// emptied.
    fn store_count(&mut self) {
        // SAFETY: the cache's magazines are this CPU's (the caller holds its slot).
        if let Some(m) = unsafe { self.loaded.as_mut() } {
            m.count = self.count;
        }
    }

    /// Makes `m` (null, or a magazine whose `count` is current) the loaded magazine; the
    /// previous loaded one must have been stored or handed over already.
    fn load(&mut self, m: *mut Magazine) {
        self.loaded = m;
        self.top_state = ptr::null_mut();
        // SAFETY: as above.
        let (count, room) = unsafe { m.as_ref() }.map_or((0, 0), |m| (m.count, self.capacity));
        debug_assert!(count <= room && room <= MAX_MAGAZINE);
        self.count = count;
        self.room = room;
    }

    /// Swaps the loaded and the previous magazine.
    fn swap(&mut self) {
        self.store_count();
        let previous = self.previous;
        self.previous = self.loaded;
        self.load(previous);
    }

    /// Returns the previous magazine's count (0 when there is none).
    fn previous_count(&self) -> Option<usize> {
        // SAFETY: as above.
        unsafe { self.previous.as_ref() }.map(|m| m.count)
    }
}

/// One CPU's counters: written only by that CPU (load + store, no read-modify-write), read by
/// anyone for statistics.
struct CpuCounters {
    allocs: AtomicU64,
    frees: AtomicU64,
}

impl CpuCounters {
    #[inline]
    fn bump(counter: &AtomicU64) {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }
}

/// Everything behind the zone lock.
struct Core {
    empty: ChunkList,
    partial: ChunkList,
    full: ChunkList,
    /// Chunks whose freelist was found corrupt: never used again, freed with the zone.
    quarantine: ChunkList,
    chunks: usize,
    peak_chunks: usize,
    /// Elements out of chunks (with users or in magazines).
    out: usize,
    /// Full magazines, most recently given first (linked both ways).
    depot_full: *mut Magazine,
    /// The full magazine given longest ago (the end `trim` flushes from).
    depot_full_tail: *mut Magazine,
    depot_full_len: usize,
    /// Full magazines the depot takes before a free returns elements to their chunks.
    depot_max: usize,
    /// The fewest full magazines the depot held since the last `trim`: that many sat unused
    /// through the whole interval (Bonwick's working-set estimate).
    depot_low: usize,
    depot_empty: *mut Magazine,
    magazine_pages: *mut MagazinePage,
    /// Magazines in all magazine pages.
    magazines: usize,
    /// Allocations and frees that bypassed the per-CPU caches.
    locked_allocs: u64,
    locked_frees: u64,
    /// Elements out of their chunks that were taken out of circulation after a violation
    /// (found modified in a magazine).
    quarantined: usize,
    /// Chunks retired because their freelist was corrupt.
    quarantined_chunks: usize,
    /// The exhaustion callback fired and usage has not fallen below 80 % since.
    exhausted: bool,
    /// The first violation found while the lock was held, reported after it is released.
    pending: Option<(ViolationKind, usize)>,
}

impl Core {
    /// Puts full magazine `m` at the new end of the depot's full list.
    ///
    /// # Safety
    ///
    /// `m` is a magazine of the zone on no list, reached under the lock.
    unsafe fn push_full(&mut self, m: *mut Magazine) {
        // SAFETY: the caller's contract; the list's magazines are the zone's, under the lock.
        unsafe {
            (*m).next = self.depot_full;
            (*m).prev = ptr::null_mut();
            match self.depot_full.as_mut() {
                Some(newest) => newest.prev = m,
                None => self.depot_full_tail = m,
            }
        }
        self.depot_full = m;
        self.depot_full_len += 1;
    }

    /// Takes the full magazine given last (for a CPU to allocate from: its elements are the
    /// most likely to be in cache).
    fn pop_newest_full(&mut self) -> Option<*mut Magazine> {
        let m = NonNull::new(self.depot_full)?.as_ptr();
        // SAFETY: the list's magazines are the zone's, reached under the lock.
        unsafe {
            self.depot_full = (*m).next;
            match self.depot_full.as_mut() {
                Some(next) => next.prev = ptr::null_mut(),
                None => self.depot_full_tail = ptr::null_mut(),
            }
        }
        self.depot_full_len -= 1;
        Some(m)
    }

    /// Takes the full magazine given longest ago (for `trim` and `drain`).
    fn pop_oldest_full(&mut self) -> Option<*mut Magazine> {
        let m = NonNull::new(self.depot_full_tail)?.as_ptr();
        // SAFETY: as above.
        unsafe {
            self.depot_full_tail = (*m).prev;
            match self.depot_full_tail.as_mut() {
                Some(prev) => prev.next = ptr::null_mut(),
                None => self.depot_full = ptr::null_mut(),
            }
        }
        self.depot_full_len -= 1;
        Some(m)
    }
}

/// A zone of fixed-size elements.
///
/// `S` provides the memory, `C` tells the zone which CPU it runs on, and `CPUS` is the number
/// of per-CPU caches (CPU indices at or above it use the zone lock).
///
/// # Examples
///
/// ```
/// use machvm_zone_alloc::{NoCpuCache, SystemPages, Zone, ZoneConfig, ZoneFlags};
///
/// let zone: Zone<_, _, 4> = Zone::new(
///     ZoneConfig::new("example", 48).flags(ZoneFlags::HARDENED),
///     SystemPages::new(),
///     NoCpuCache,
/// )?;
/// let p = zone.alloc()?;
/// // SAFETY: `p` is 48 writable bytes from this zone.
/// unsafe { p.as_ptr().write_bytes(0xab, 48) };
/// // SAFETY: `p` came from this zone and is not used afterwards.
/// unsafe { zone.free(p)? };
/// let stats = zone.stats();
/// assert_eq!((stats.in_use, stats.alloc_count), (0, 1));
/// # Ok::<(), machvm_zone_alloc::ZoneError>(())
/// ```
pub struct Zone<S: PageSource, C: CpuLocal, const CPUS: usize> {
    name: ZoneName,
    size: usize,
    geometry: Geometry,
    flags: ZoneFlags,
    /// CPUs with a cache: `CPUS`, or 0 with [`ZoneFlags::NO_CACHE`]. Tested on the slow
    /// paths only: a CPU without a cache never loads a magazine, so its fast paths fail.
    cached_cpus: usize,
    /// Full magazines `trim` leaves in the depot (128 KiB of elements per CPU).
    depot_keep: usize,
    /// Read-only zone over a source that protects pages: element pages are mapped read-only.
    protect_elements: bool,
    /// The fast paths' case of the zone's flags (one test instead of one per flag).
    mode: FastMode,
    page: usize,
    magazine_size: usize,
    limit: Option<usize>,
    on_violation: ViolationHandler,
    on_exhaustion: Option<fn(&ZoneStats)>,
    /// A copy of the codec for the lock-free paths (the secret is fixed at creation).
    codec: Codec,
    source: S,
    cpu: C,
    caches: PerCpuCell<CpuCache, CPUS>,
    counters: PerCpu<CpuCounters, CPUS>,
    core: Mutex<Core>,
    /// Set under the lock when usage crosses 90 % of the limit; the next allocation calls the
    /// exhaustion callback outside the lock.
    exhaust_pending: AtomicBool,
    /// Set when `Core::pending` holds a violation to report.
    violation_pending: AtomicBool,
}

// SAFETY: the raw pointers in `Core` and `CpuCache` point into memory the zone owns (chunks and
// magazine pages from its page source); `Core` is only reached under the zone lock and each
// `CpuCache` only by its CPU (the `CpuLocal` contract) or through `&mut self`. Sending the zone
// to another thread moves the ownership of that memory with it, and the source and CPU
// provider must themselves be `Send`/`Sync`.
unsafe impl<S: PageSource + Send, C: CpuLocal + Send, const CPUS: usize> Send for Zone<S, C, CPUS> {}
// SAFETY: see `Send`; shared use goes through the lock, the per-CPU contract, or atomics.
unsafe impl<S: PageSource + Sync, C: CpuLocal + Sync, const CPUS: usize> Sync for Zone<S, C, CPUS> {}

impl<S: PageSource, C: CpuLocal, const CPUS: usize> fmt::Debug for Zone<S, C, CPUS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Zone")
            .field("name", &self.name)
            .field("size", &self.size)
            .field("chunk_size", &self.geometry.chunk_size)
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}

/// The flags the allocation and free fast paths depend on, as one of the common cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum FastMode {
    /// `CHECK_FREE` without `ZERO_ON_FREE` and `READ_ONLY`: the release default.
    Checked,
    /// `CHECK_FREE` and `ZERO_ON_FREE` without `READ_ONLY`: the hardened set.
    CheckedZeroed,
    /// Anything else: every flag tested on its own.
    General,
}

/// The fast paths' const parameter for "the zone's own [`FastMode`], read at run time"; any
/// other value is a `FastMode` fixed at compile time (see `FlagCase`).
pub(crate) const RUNTIME: u8 = u8::MAX;

impl FastMode {
    /// Returns the mode whose `as u8` value is `m` (a `FlagCase` fixes `Checked` or
    /// `CheckedZeroed`), or `runtime` for [`RUNTIME`].
    #[inline(always)]
    const fn fixed_or(m: u8, runtime: Self) -> Self {
        if m == Self::Checked as u8 {
            Self::Checked
        } else if m == Self::CheckedZeroed as u8 {
            Self::CheckedZeroed
        } else {
            runtime
        }
    }

    fn of(flags: ZoneFlags) -> Self {
        let has = |f| flags.contains(f);
        match (
            has(ZoneFlags::CHECK_FREE),
            has(ZoneFlags::ZERO_ON_FREE),
            has(ZoneFlags::READ_ONLY),
        ) {
            (true, false, false) => Self::Checked,
            (true, true, false) => Self::CheckedZeroed,
            _ => Self::General,
        }
    }
}

/// What the per-CPU part of an operation ended with (handlers run outside it).
enum Outcome<T> {
    Done(T),
    Violation(ViolationKind, usize),
    Failed(ZoneError),
    /// The CPU cache could not help: take the locked path.
    Locked,
}

/// Returns a pointer to `addr` with the provenance of the zone memory there.
///
/// Callers hand elements back with pointers whose provenance covers only what they asked for
/// (a `Box<[u8; 40]>` covers 40 bytes); the zone must also reach the rest of the element and
/// its chunk's header. Chunks expose their provenance when they are made (`new_chunk`), and this
/// picks it up again from the address. In compiled code it is a plain cast; under miri it keeps
/// the allocator's accesses within what the memory model allows.
#[inline(always)]
fn zone_ptr(addr: usize) -> *mut u8 {
    ptr::with_exposed_provenance_mut(addr)
}

/// Zeroes the `stride` bytes of element `elem`: up to 128 bytes with two runs of 16-byte
/// stores, one from the start and one ending at the end (they overlap unless the stride is
/// twice a run), so the common strides cost one to three compares and no jump table.
///
/// # Safety
///
/// `elem` is valid for writes of `stride >= 16` bytes.
#[inline(always)]
unsafe fn zero(elem: *mut u8, stride: usize) {
    #[inline(always)]
    unsafe fn runs<const N: usize>(elem: *mut u8, stride: usize) {
        let tail = elem.wrapping_add(stride - 16 * N);
        for i in 0..N {
            // SAFETY: the caller's contract: `16 * N <= stride`, so both runs lie in the
            // element.
            unsafe {
                elem.add(16 * i).cast::<u128>().write_unaligned(0);
                tail.add(16 * i).cast::<u128>().write_unaligned(0);
            }
        }
    }
    debug_assert!(stride >= MIN_ELEMENT_SIZE);
    // SAFETY: the caller's contract; each arm covers `stride` bytes (`16 * N <= stride <=
    // 32 * N`).
    unsafe {
        if stride <= 32 {
            runs::<1>(elem, stride);
        } else if stride <= 64 {
            runs::<2>(elem, stride);
        } else if stride <= 128 {
            runs::<4>(elem, stride);
        } else {
            ptr::write_bytes(elem, 0, stride);
        }
    }
}

/// Returns whether the `stride` bytes of element `elem` are all zero (the same two runs as
/// [`zero`] up to 128 bytes).
///
/// # Safety
///
/// `elem` is valid for reads of `stride >= 16` bytes, and 8-aligned; `stride` is a multiple
/// of 8 (every zone's stride is).
#[inline(always)]
unsafe fn is_zero(elem: *mut u8, stride: usize) -> bool {
    #[inline(always)]
    unsafe fn runs<const N: usize>(elem: *const u8, stride: usize) -> bool {
        let tail = elem.wrapping_add(stride - 16 * N);
        let mut any = 0;
        for i in 0..N {
            // SAFETY: as in `zero`.
            unsafe {
                any |= elem.add(16 * i).cast::<u128>().read_unaligned();
                any |= tail.add(16 * i).cast::<u128>().read_unaligned();
            }
        }
        any == 0
    }
    let elem = elem.cast_const();
    // SAFETY: the caller's contract; each arm reads `stride` bytes.
    unsafe {
        if stride <= 32 {
            runs::<1>(elem, stride)
        } else if stride <= 64 {
            runs::<2>(elem, stride)
        } else if stride <= 128 {
            runs::<4>(elem, stride)
        } else {
            let words = elem.cast::<usize>();
            (0..stride / size_of::<usize>()).all(|i| words.add(i).read() == 0)
        }
    }
}

/// Zeroes an element the caller's pointer covers only partly: its first `len` bytes through
/// `user`, the rest through `elem` (the zone's pointer to the same element). Out of line so
/// the free fast path of full-size frees stays small.
///
/// # Safety
///
/// `user` covers `len` writable bytes, `elem` the element's `stride >= len` writable bytes,
/// both at the same address.
#[cold]
#[inline(never)]
unsafe fn zero_split(user: *mut u8, len: usize, elem: *mut u8, stride: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        ptr::write_bytes(user, 0, len);
        ptr::write_bytes(elem.add(len), 0, stride - len);
    }
}

/// Numbers zones, so that zones configured with the same secret still get distinct ones. A
/// `core` atomic (not the loom shim): it only has to be unique and lives in a `static`.
/// Full magazines a depot capped at `bytes` holds (`None`: no cap), never fewer than `keep`.
fn depot_magazines(bytes: Option<usize>, magazine_bytes: usize, keep: usize) -> usize {
    bytes.map_or(usize::MAX, |b| (b / magazine_bytes).max(keep))
}

static ZONE_SERIAL: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1);

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser.
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl<S: PageSource, C: CpuLocal, const CPUS: usize> Zone<S, C, CPUS> {
    /// Creates an empty zone (no memory is taken until the first allocation).
    ///
    /// # Errors
    ///
    /// [`ZoneError::BadConfig`] for a page source whose page size is not a power of two of at
    /// least 4096 bytes, an element size of zero or above [`MAX_ELEMENT_SIZE`], an
    /// alignment that is not a power of two or exceeds the page size, a name longer than
    /// [`MAX_NAME`] bytes or a magazine size of zero or above [`MAX_MAGAZINE`].
    pub fn new(config: ZoneConfig<'_>, source: S, cpu: C) -> Result<Self, ZoneError> {
        let page = source.page_size();
        if !page.is_power_of_two()
            || page < 4096
            || config.size == 0
            || config.size > MAX_ELEMENT_SIZE
            || !config.align.is_power_of_two()
            || config.align > page
            || config.magazine.is_some_and(|m| m == 0 || m > MAX_MAGAZINE)
        {
            return Err(ZoneError::BadConfig);
        }
        let name = ZoneName::new(config.name).ok_or(ZoneError::BadConfig)?;
        let read_only = config.flags.contains(ZoneFlags::READ_ONLY);
        let flags = if read_only {
            config
                .flags
                .with(ZoneFlags::ZERO_ON_FREE)
                .with(ZoneFlags::CHECK_FREE)
                .with(ZoneFlags::NO_CACHE)
        } else {
            config.flags
        };
        let guard = flags.contains(ZoneFlags::GUARD_PAGES);
        if guard && !source.can_protect() {
            return Err(ZoneError::BadConfig);
        }
        let protect_elements = read_only && source.can_protect();
        // Read-only elements carry a checksum word after their contents.
        let payload = if read_only {
            config.size.next_multiple_of(size_of::<usize>()) + size_of::<usize>()
        } else {
            config.size
        };
        let stride = payload
            .max(MIN_ELEMENT_SIZE)
            .next_multiple_of(config.align.max(size_of::<usize>()));
        let layout = chunk::Layout {
            guard,
            page_aligned: protect_elements,
        };
        let geometry = Geometry::new(stride, config.align.max(16), page, layout)
            .ok_or(ZoneError::BadConfig)?;
        let magazine_size = config
            .magazine
            .unwrap_or_else(|| (4096 / stride).clamp(4, MAX_MAGAZINE));
        // Each zone gets its own secret even when several are configured with the same one:
        // chunk ownership (`CHECK_FREE`, `require`) rests on it.
        let serial = ZONE_SERIAL.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        let base = config.secret.map_or_else(
            || {
                let seed = config.name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
                seed ^ (&raw const config).addr() as u64
            },
            |s| s as u64,
        );
        let secret = mix(base ^ serial.wrapping_mul(0x9e37_79b9_7f4a_7c15)) as usize;
        let mut codec = Codec::new(
            secret,
            flags.contains(ZoneFlags::ENCODE_FREELIST),
            flags.contains(ZoneFlags::CHECK_FREE),
            flags.contains(ZoneFlags::ZERO_ON_FREE),
        );
        codec.pac = cfg!(target_arch = "aarch64")
            && config.pac.is_some()
            && flags.contains(ZoneFlags::ENCODE_FREELIST);
        // `trim` leaves up to 128 KiB of cached elements per CPU in the depot (XNU's per-CPU
        // cache allowance), and at least two full magazines per CPU; beyond that the depot
        // plays the part of XNU's recirculation depot, trimmed to its working set.
        let magazine_bytes = (magazine_size * stride).max(1);
        let depot_keep = (CPUS.max(1) * (128 << 10) / magazine_bytes).max(2 * CPUS.max(1));
        let depot_max = depot_magazines(config.depot_bytes, magazine_bytes, depot_keep);
        Ok(Self {
            name,
            size: config.size,
            geometry,
            flags,
            cached_cpus: if flags.contains(ZoneFlags::NO_CACHE) {
                0
            } else {
                CPUS
            },
            depot_keep,
            protect_elements,
            page,
            magazine_size,
            mode: FastMode::of(flags),
            limit: config.limit,
            on_violation: config.on_violation,
            on_exhaustion: config.on_exhaustion,
            codec,
            source,
            cpu,
            caches: PerCpuCell::from_fn(|_| CpuCache {
                loaded: ptr::null_mut(),
                count: 0,
                room: 0,
                capacity: magazine_size,
                previous: ptr::null_mut(),
                top_state: ptr::null_mut(),
            }),
            counters: PerCpu::from_fn(|_| CpuCounters {
                allocs: AtomicU64::new(0),
                frees: AtomicU64::new(0),
            }),
            core: Mutex::new(Core {
                empty: ChunkList::new(ListKind::Empty),
                partial: ChunkList::new(ListKind::Partial),
                full: ChunkList::new(ListKind::Full),
                quarantine: ChunkList::new(ListKind::Quarantine),
                chunks: 0,
                peak_chunks: 0,
                out: 0,
                depot_full: ptr::null_mut(),
                depot_full_tail: ptr::null_mut(),
                depot_full_len: 0,
                depot_max,
                depot_low: 0,
                depot_empty: ptr::null_mut(),
                magazine_pages: ptr::null_mut(),
                magazines: 0,
                locked_allocs: 0,
                locked_frees: 0,
                quarantined: 0,
                quarantined_chunks: 0,
                exhausted: false,
                pending: None,
            }),
            violation_pending: AtomicBool::new(false),
            exhaust_pending: AtomicBool::new(false),
        })
    }

    /// Returns the zone's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// Returns the element size the zone was created with.
    pub const fn element_size(&self) -> usize {
        self.size
    }

    /// Returns the bytes between elements (the size rounded up to the alignment, at least
    /// [`MIN_ELEMENT_SIZE`]): what an element really occupies.
    pub const fn stride(&self) -> usize {
        self.geometry.stride
    }

    /// Returns the alignment every element has: at least the configured one, often more
    /// (elements start `stride` bytes apart from an aligned offset in an aligned chunk).
    pub const fn element_align(&self) -> usize {
        let g = &self.geometry;
        // `first` and `stride` are non-zero (a chunk header precedes element 0).
        let first = 1 << g.first.trailing_zeros();
        let stride = 1 << g.stride.trailing_zeros();
        if first < stride { first } else { stride }
    }

    /// Returns the chunk size.
    pub const fn chunk_size(&self) -> usize {
        self.geometry.chunk_size
    }

    /// Returns the zone's flags.
    pub const fn flags(&self) -> ZoneFlags {
        self.flags
    }

    /// Returns the page source.
    pub const fn source(&self) -> &S {
        &self.source
    }

    /// Returns the fast paths' case of the zone's flags.
    pub(crate) const fn fast_mode(&self) -> FastMode {
        self.mode
    }

    fn report(&self, kind: ViolationKind, addr: usize) -> ZoneError {
        (self.on_violation)(&Violation {
            zone: self.name.as_str(),
            kind,
            addr,
        });
        ZoneError::Violation(kind)
    }

    fn finish<T>(&self, outcome: Outcome<T>) -> Result<T, ZoneError> {
        match outcome {
            Outcome::Done(v) => Ok(v),
            Outcome::Violation(kind, addr) => Err(self.report(kind, addr)),
            Outcome::Failed(e) => Err(e),
            Outcome::Locked => Err(ZoneError::BadConfig),
        }
    }

    #[inline(always)]
    fn cpu_slot(&self, cpu: Option<CpuIndex>) -> Option<CpuIndex> {
        cpu.filter(|c| c.as_usize() < self.cached_cpus)
    }

    // ---------------------------------------------------------------------------------------
    // Allocation.

    /// Allocates one element (of [`element_size`](Self::element_size) bytes, aligned as
    /// configured). With [`ZoneFlags::ZERO_ON_FREE`] its contents are zero; otherwise they are
    /// unspecified (an element reused from the CPU cache keeps what its last user wrote).
    ///
    /// # Errors
    ///
    /// [`ZoneError::LimitReached`], [`ZoneError::Source`] when no memory is left, and
    /// [`ZoneError::Violation`] when a corrupt free element was found (after the handler
    /// returned; the element is quarantined).
    #[inline(always)]
    pub fn alloc(&self) -> Result<NonNull<u8>, ZoneError> {
        self.alloc_as::<RuntimeFlags>()
    }

    /// [`alloc`](Self::alloc) with the fast path compiled for case `F` of the flags: the
    /// zone's own case (see [`specialize`](Self::specialize)) or [`RuntimeFlags`].
    #[inline(always)]
    pub(crate) fn alloc_as<F: FlagCase>(&self) -> Result<NonNull<u8>, ZoneError> {
        // The fast path: pop from this CPU's loaded magazine. Everything else (swapping
        // magazines, the depot, the chunks, violations, callbacks) is out of line.
        let fast = self.cpu.with_cpu(
            #[inline(always)]
            |cpu| {
                // No test of `cached_cpus`: a CPU without a cache never has a magazine
                // loaded (its count and room stay 0), so it takes the slow path, which tests.
                let cpu = cpu?;
                // SAFETY: `CpuLocal` guarantees that this context alone uses `cpu`'s slot for the
                // duration of the closure, and `pop` does not re-enter the cell.
                unsafe {
                    self.caches.with_mut(
                        cpu,
                        #[inline(always)]
                        |cache| self.pop::<F>(cpu, cache),
                    )
                }
                .flatten()
            },
        );
        match fast {
            Some(elem) => Ok(elem),
            None => self.alloc_slow(),
        }
    }

    /// Pops a checked element from the loaded magazine, if it has one (with the checks of
    /// case `F`, as in [`alloc_as`](Self::alloc_as)).
    #[inline(always)]
    fn pop<F: FlagCase>(&self, cpu: CpuIndex, cache: &mut CpuCache) -> Option<NonNull<u8>> {
        let mode = FastMode::fixed_or(F::MODE, self.mode);
        let top = cache.count.checked_sub(1)?;
        // SAFETY: `count > 0`, so (`CpuCache`'s invariant) a magazine is loaded — one of this
        // zone's that only this CPU uses — and `top < count <= MAX_MAGAZINE` is a slot.
        let elem = unsafe { *(*cache.loaded).slots.get_unchecked(top) };
        // The release default first, then the hardened set.
        let free_state_ok = if mode == FastMode::Checked {
            true
        } else if mode == FastMode::CheckedZeroed {
            // SAFETY: magazine slots hold elements of this zone in the free state, `stride`
            // bytes each.
            unsafe { is_zero(elem, self.geometry.stride) }
        } else {
            // SAFETY: as above.
            unsafe { self.verify_free_state(elem) }.is_ok()
        };
        if !free_state_ok {
            // Written after it was freed. Left in place: the slow path pops it again and
            // reports it.
            return None;
        }
        cache.count = top;
        if mode != FastMode::General || self.codec.mark {
            let state = if cache.top_state.is_null() {
                self.geometry.state_of_own(elem)
            } else {
                cache.top_state
            };
            debug_assert_eq!(state, self.geometry.state_of_own(elem));
            // SAFETY: `elem` is an element of this zone (it was in a magazine), so its state
            // byte is in its chunk (`top_state` is that byte when set); the element is this
            // CPU's, and so is the byte.
            unsafe { state.write(1) };
        }
        cache.top_state = ptr::null_mut();
        if let Some(c) = self.counters.get(cpu) {
            CpuCounters::bump(&c.allocs);
        }
        NonNull::new(elem)
    }

    /// Allocation when the loaded magazine cannot serve it.
    #[cold]
    #[inline(never)]
    fn alloc_slow(&self) -> Result<NonNull<u8>, ZoneError> {
        let outcome = self.cpu.with_cpu(|cpu| match self.cpu_slot(cpu) {
            // SAFETY: `CpuLocal` guarantees that this context alone uses `cpu`'s slot for the
            // duration of the closure, and `alloc_cached` does not re-enter the cell.
            Some(cpu) => unsafe {
                self.caches
                    .with_mut(cpu, |cache| self.alloc_cached(cpu, cache))
                    .unwrap_or(Outcome::Locked)
            },
            None => Outcome::Locked,
        });
        let outcome = match outcome {
            Outcome::Locked => self.alloc_locked(),
            other => other,
        };
        let result = self.finish(outcome);
        self.check_exhaustion();
        self.report_pending();
        result
    }

    /// The per-CPU allocation path.
    #[inline]
    fn alloc_cached(&self, cpu: CpuIndex, cache: &mut CpuCache) -> Outcome<NonNull<u8>> {
        loop {
            if let Some(elem) = self.pop::<RuntimeFlags>(cpu, cache) {
                return Outcome::Done(elem);
            }
            if cache.count > 0 {
                // `pop` refused the top element: it was written after it was freed.
                return self.quarantine_top(cache);
            }
            if cache.previous_count().is_some_and(|n| n > 0) {
                cache.swap();
                continue;
            }
            if let Err(outcome) = self.reload(cache) {
                return outcome;
            }
        }
    }

    /// Takes the loaded magazine's top element out of circulation (it failed its free-state
    /// check) and reports why.
    #[cold]
    fn quarantine_top(&self, cache: &mut CpuCache) -> Outcome<NonNull<u8>> {
        // SAFETY: `count > 0` implies a loaded magazine of this CPU.
        let Some(m) = (unsafe { cache.loaded.as_ref() }) else {
            return Outcome::Failed(ZoneError::BadConfig);
        };
        cache.count -= 1;
        cache.top_state = ptr::null_mut();
        let elem = m.slots[cache.count];
        // SAFETY: magazine slots hold elements of this zone.
        let kind = unsafe { self.verify_free_state(elem) }
            .err()
            .unwrap_or(ViolationKind::ModifiedAfterFree);
        self.quarantine_element();
        Outcome::Violation(kind, elem as usize)
    }

    /// Both magazines are empty: trade the loaded one for a full one from the depot, or fill it
    /// from the chunks.
    #[cold]
    fn reload(&self, cache: &mut CpuCache) -> Result<(), Outcome<NonNull<u8>>> {
        let mut core = self.core.lock();
        if let Some(full) = core.pop_newest_full() {
            core.depot_low = core.depot_low.min(core.depot_full_len);
            cache.store_count();
            // The raw pointer, not a reference: `put_empty` reaches the magazine's page header
            // through it.
            if !cache.loaded.is_null() {
                // SAFETY: the loaded magazine is this CPU's, emptied (both magazines were),
                // and about to be replaced; the pointer is the page-wide one it was handed.
                unsafe { self.put_empty(&mut core, cache.loaded) };
            }
            cache.load(full);
            return Ok(());
        }
        if cache.loaded.is_null() {
            let m = self.empty_magazine(&mut core).map_err(Outcome::Failed)?;
            cache.load(m);
        }
        // SAFETY: `cache.loaded` is non-null and this CPU's.
        let m = unsafe { &mut *cache.loaded };
        let want = self.magazine_size;
        let got = self
            .fill(&mut core, &mut m.slots[..want])
            .map_err(|(e, addr)| match e {
                ZoneError::Violation(kind) => Outcome::Violation(kind, addr),
                e => Outcome::Failed(e),
            })?;
        m.count = got;
        cache.count = got;
        cache.top_state = ptr::null_mut();
        Ok(())
    }

    /// Allocation under the lock, without a CPU cache.
    #[cold]
    fn alloc_locked(&self) -> Outcome<NonNull<u8>> {
        let mut core = self.core.lock();
        let mut one = [ptr::null_mut(); 1];
        match self.fill(&mut core, &mut one) {
            Ok(_) => {
                core.locked_allocs += 1;
                if self.codec.mark {
                    self.set_state(one[0], 1);
                }
                // SAFETY: `fill` returned one element, inside a chunk, so non-null.
                Outcome::Done(unsafe { NonNull::new_unchecked(one[0]) })
            }
            Err((ZoneError::Violation(kind), addr)) => Outcome::Violation(kind, addr),
            Err((e, _)) => Outcome::Failed(e),
        }
    }

    /// Takes up to `out.len()` elements out of the chunks (at least one, or an error), in the
    /// allocated state (zeroed whole if the zone zeroes; an element off a freelist has its
    /// link word cleared).
    fn fill(&self, core: &mut Core, out: &mut [*mut u8]) -> Result<usize, (ZoneError, usize)> {
        let room = match self.limit {
            Some(limit) => {
                if core.out >= limit {
                    self.flush_depot(core);
                }
                limit.saturating_sub(core.out)
            }
            None => usize::MAX,
        };
        let want = out.len().min(room);
        if want == 0 {
            return Err((
                ZoneError::LimitReached {
                    limit: self.limit.unwrap_or(0),
                },
                0,
            ));
        }
        let mut got = 0;
        while got < want {
            let chunk = if !core.partial.head.is_null() {
                core.partial.head
            } else if !core.empty.head.is_null() {
                core.empty.head
            } else {
                match self.new_chunk(core) {
                    Ok(c) => c,
                    // Out of pages: elements waiting in the depot go back to their chunks
                    // before the allocation fails.
                    Err(ZoneError::Source(PageSourceError::Exhausted))
                        if self.flush_depot(core) > 0 =>
                    {
                        continue;
                    }
                    Err(e) if got == 0 => return Err((e, 0)),
                    Err(_) => break,
                }
            };
            if let Err(e) = self.elements_writable(chunk, true) {
                return Err((e.into(), 0));
            }
            // SAFETY: `chunk` is an initialised chunk of this zone on one of its lists.
            let taken =
                unsafe { chunk::take(chunk, &self.geometry, &self.codec, &mut out[got..want]) };
            if self.flags.contains(ZoneFlags::READ_ONLY) {
                let n = *taken.as_ref().unwrap_or(&0);
                for &elem in &out[got..got + n] {
                    // SAFETY: a freshly taken (zeroed) element of this zone, pages writable.
                    unsafe { self.seal(elem) };
                }
            }
            // Read-only again; a failure here leaves the pages writable, which the checksum
            // still covers.
            self.elements_writable(chunk, false).ok();
            match taken {
                Ok(n) => {
                    got += n;
                    core.out += n;
                    // SAFETY: as above.
                    unsafe { self.relist(core, chunk) };
                }
                Err((kind, addr)) => {
                    // The freelist is corrupt: keep what was taken, retire the chunk.
                    // SAFETY: `chunk` is on the list its header names.
                    unsafe {
                        let (_, list) = chunk::state(chunk);
                        self.list_mut(core, list).remove(chunk);
                        core.quarantine.push(chunk);
                    }
                    core.quarantined_chunks += 1;
                    if got == 0 {
                        return Err((ZoneError::Violation(kind), addr as usize));
                    }
                    (self.on_violation)(&Violation {
                        zone: self.name.as_str(),
                        kind,
                        addr: addr as usize,
                    });
                }
            }
        }
        if let Some(limit) = self.limit {
            let high = core.out.saturating_mul(10) >= limit.saturating_mul(9);
            if high && !core.exhausted && self.on_exhaustion.is_some() {
                self.exhaust_pending.store(true, Ordering::Relaxed);
            }
            core.exhausted |= high;
        }
        Ok(got)
    }

    /// Allocates and initialises a chunk and puts it on the empty list.
    fn new_chunk(&self, core: &mut Core) -> Result<*mut ChunkHeader, ZoneError> {
        let size = self.geometry.chunk_size;
        let mem = self.source.allocate(size, size)?;
        // Elements come back with narrower provenance: see `zone_ptr`.
        let _ = mem.as_ptr().expose_provenance();
        let chunk = mem.as_ptr().cast::<ChunkHeader>();
        // SAFETY: the source gave us `size` bytes aligned to `size`, used by nothing else.
        unsafe { chunk::init(chunk, &self.geometry, &self.codec) };
        if let Err(e) = self.protect_chunk(chunk, true) {
            self.protect_chunk(chunk, false).ok();
            // SAFETY: the chunk came from `allocate(size, size)` and is on no list.
            unsafe { self.source.deallocate(mem, size, size) };
            return Err(e.into());
        }
        // SAFETY: an initialised chunk on no list.
        unsafe { core.empty.push(chunk) };
        core.chunks += 1;
        core.peak_chunks = core.peak_chunks.max(core.chunks);
        Ok(chunk)
    }

    /// Returns the pointer `offset` bytes into `chunk`.
    fn at(chunk: *mut ChunkHeader, offset: usize) -> Option<NonNull<u8>> {
        NonNull::new(chunk.cast::<u8>().wrapping_add(offset))
    }

    /// Sets up (`on`) or takes down the page protections of a chunk: its guard page, and the
    /// element pages of a protected read-only zone.
    fn protect_chunk(
        &self,
        chunk: *mut ChunkHeader,
        on: bool,
    ) -> Result<(), crate::source::PageSourceError> {
        use crate::source::PageAccess;
        let g = &self.geometry;
        if g.tail > 0 {
            if let Some(guard) = Self::at(chunk, g.chunk_size - g.tail) {
                let access = if on {
                    PageAccess::None
                } else {
                    PageAccess::ReadWrite
                };
                self.source.protect(guard, g.tail, access)?;
            }
        }
        if self.protect_elements {
            self.elements_writable(chunk, !on)?;
        }
        Ok(())
    }

    /// Maps the element pages of `chunk` read-write or read-only (protected read-only zones
    /// only; the zone lock is held around every write window).
    fn elements_writable(
        &self,
        chunk: *mut ChunkHeader,
        writable: bool,
    ) -> Result<(), crate::source::PageSourceError> {
        use crate::source::PageAccess;
        if !self.protect_elements {
            return Ok(());
        }
        let (start, end) = self.geometry.element_pages(self.page);
        let access = if writable {
            PageAccess::ReadWrite
        } else {
            PageAccess::ReadOnly
        };
        match Self::at(chunk, start) {
            Some(p) => self.source.protect(p, end - start, access),
            None => Ok(()),
        }
    }

    fn list_mut<'c>(&self, core: &'c mut Core, kind: ListKind) -> &'c mut ChunkList {
        match kind {
            ListKind::Empty => &mut core.empty,
            ListKind::Partial => &mut core.partial,
            ListKind::Full => &mut core.full,
            ListKind::Quarantine => &mut core.quarantine,
        }
    }

    /// Moves `chunk` to the list its fill state calls for.
    ///
    /// # Safety
    ///
    /// `chunk` is an initialised chunk of this zone on the list its header names.
    unsafe fn relist(&self, core: &mut Core, chunk: *mut ChunkHeader) {
        // SAFETY: the caller's guarantee.
        let (out, list) = unsafe { chunk::state(chunk) };
        if list == ListKind::Quarantine {
            // Retired for good: elements still come back to it, it is never used again.
            return;
        }
        let want = if out == 0 {
            ListKind::Empty
        } else if out == self.geometry.per_chunk {
            ListKind::Full
        } else {
            ListKind::Partial
        };
        if want != list {
            // SAFETY: the chunk is on `list`, and goes to exactly one other list.
            unsafe {
                self.list_mut(core, list).remove(chunk);
                self.list_mut(core, want).push(chunk);
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Free.

    /// Frees `elem` back to the zone.
    ///
    /// # Safety
    ///
    /// `elem` was returned by [`alloc`](Self::alloc) of this zone, has not been freed since,
    /// and is not used afterwards. With [`ZoneFlags::CHECK_FREE`] the zone detects most
    /// violations of this contract (a double free, a pointer into the zone that is not an
    /// element, a pointer to another zone's chunk) and calls the violation handler; it still
    /// reads the chunk header of the chunk-aligned block around `elem`, so a wild pointer
    /// into unmapped memory faults.
    ///
    /// # Errors
    ///
    /// [`ZoneError::Violation`] if a check failed and the handler returned (the element is
    /// left alone).
    #[inline(always)]
    pub unsafe fn free(&self, elem: NonNull<u8>) -> Result<(), ZoneError> {
        // SAFETY: the caller's contract; its pointer covers the element's size.
        unsafe { self.free_as::<RuntimeFlags>(elem) }
    }

    /// [`free`](Self::free) compiled for case `F`, as in [`alloc_as`](Self::alloc_as).
    ///
    /// # Safety
    ///
    /// As for [`free`](Self::free).
    #[inline(always)]
    pub(crate) unsafe fn free_as<F: FlagCase>(&self, elem: NonNull<u8>) -> Result<(), ZoneError> {
        // SAFETY: the caller's contract; its pointer covers the element's size.
        unsafe { self.free_sized_as::<F>(elem, self.size) }
    }

    /// [`free`](Self::free) for a caller whose pointer covers only the first `len` bytes of
    /// the element (kalloc: the requested size). The zone writes those bytes through the
    /// caller's pointer and everything else (the rest of the element, the chunk metadata)
    /// through its own, so it never steps on what the caller's pointer protects.
    ///
    /// # Safety
    ///
    /// As for [`free`](Self::free); `len` is at most the element size.
    #[inline(always)]
    pub(crate) unsafe fn free_sized(&self, user: NonNull<u8>, len: usize) -> Result<(), ZoneError> {
        // SAFETY: the caller's contract.
        unsafe { self.free_sized_as::<RuntimeFlags>(user, len) }
    }

    /// [`free_sized`](Self::free_sized) compiled for case `F`, as in
    /// [`alloc_as`](Self::alloc_as).
    ///
    /// # Safety
    ///
    /// As for [`free_sized`](Self::free_sized).
    #[inline(always)]
    unsafe fn free_sized_as<F: FlagCase>(
        &self,
        user: NonNull<u8>,
        len: usize,
    ) -> Result<(), ZoneError> {
        let mode = FastMode::fixed_or(F::MODE, self.mode);
        let user = user.as_ptr();
        let elem = zone_ptr(user.addr());
        // The release default first, in its own arm (no test for zeroing on its way), then
        // the hardened set. `state`: the element's state byte where the free located it.
        let state;
        if mode == FastMode::Checked {
            // SAFETY: the caller's contract makes the chunk-aligned block around `elem`
            // readable.
            state = match unsafe { self.check_free(elem) } {
                Ok(state) => state,
                Err(kind) => return Err(self.report(kind, elem as usize)),
            };
            // SAFETY: `state` is the state byte of `elem`, an element the caller gives up.
            unsafe { state.write(0) };
        } else if mode == FastMode::CheckedZeroed {
            // The hardened set: checked, then zeroed.
            // SAFETY: as above.
            state = match unsafe { self.check_free(elem) } {
                Ok(state) => state,
                Err(kind) => return Err(self.report(kind, elem as usize)),
            };
            let stride = self.geometry.stride;
            // SAFETY: the element spans `stride` writable bytes; the caller's pointer
            // covers the first `len <= stride` of them, the zone's own pointer all;
            // `state` is as above.
            unsafe {
                if len >= stride {
                    zero(user, stride);
                } else {
                    zero_split(user, len, elem, stride);
                }
                state.write(0);
            }
        } else {
            state = ptr::null_mut();
            // SAFETY: the caller's contract.
            if unsafe { self.free_state_general(user, elem, len) }? {
                // A read-only element: freed under the lock already.
                return Ok(());
            }
        }
        self.push_freed(elem, state, user, len)
    }

    /// The free path of zones other than the release default: checks (if the zone checks),
    /// read-only elements, then the free state (zeroed, marked). Returns `true` when the
    /// element is freed already (read-only zones free under the lock), `false` when it is in
    /// the free state, ready for a magazine.
    ///
    /// # Safety
    ///
    /// As for [`free_sized`](Self::free_sized), with `elem` the zone's pointer to `user`.
    #[inline(always)]
    unsafe fn free_state_general(
        &self,
        user: *mut u8,
        elem: *mut u8,
        len: usize,
    ) -> Result<bool, ZoneError> {
        let mut state = ptr::null_mut();
        if self.flags.contains(ZoneFlags::CHECK_FREE) {
            // SAFETY: the caller's contract makes the chunk-aligned block around `elem`
            // readable.
            match unsafe { self.check_free(elem) } {
                Ok(byte) => state = byte,
                Err(kind) => return Err(self.report(kind, elem as usize)),
            }
        }
        if self.flags.contains(ZoneFlags::READ_ONLY) {
            // SAFETY: the caller's contract.
            let result = unsafe { self.free_read_only(elem) };
            return result
                .map(|()| true)
                .map_err(|kind| self.report(kind, elem as usize));
        }
        // SAFETY: `elem` is an element of this zone that the caller gives up, `user` the
        // caller's pointer to its first `len` bytes, `state` null or its state byte.
        unsafe { self.enter_free_state(user, elem, len, state) };
        Ok(false)
    }

    /// Puts a freed element (in the free state) on this CPU's loaded magazine, or takes the
    /// slow path; `state` is null or the element's state byte.
    #[inline(always)]
    fn push_freed(
        &self,
        elem: *mut u8,
        state: *mut u8,
        user: *mut u8,
        len: usize,
    ) -> Result<(), ZoneError> {
        let pushed = self.cpu.with_cpu(
            #[inline(always)]
            |cpu| {
                // As in `alloc`: CPUs without a cache fail `push` (room 0).
                let cpu = cpu?;
                // SAFETY: as in `alloc`.
                unsafe {
                    self.caches.with_mut(
                        cpu,
                        #[inline(always)]
                        |cache| self.push(cpu, cache, elem, state).then_some(()),
                    )
                }
                .flatten()
            },
        );
        match pushed {
            Some(()) => Ok(()),
            None => self.free_slow(elem, (user, len)),
        }
    }

    /// Pushes a free-state element on the loaded magazine, if it has room; `state` is null or
    /// the element's state byte (kept for the allocation that may pop it back).
    #[inline(always)]
    fn push(&self, cpu: CpuIndex, cache: &mut CpuCache, elem: *mut u8, state: *mut u8) -> bool {
        let count = cache.count;
        if count >= cache.room {
            return false;
        }
        // SAFETY: `count < room`, so (`CpuCache`'s invariant) a magazine is loaded — this
        // CPU's — and `count < room <= MAX_MAGAZINE` is a slot.
        unsafe { *(*cache.loaded).slots.get_unchecked_mut(count) = elem };
        cache.count = count + 1;
        cache.top_state = state;
        if let Some(c) = self.counters.get(cpu) {
            CpuCounters::bump(&c.frees);
        }
        true
    }

    /// Free when the loaded magazine is full (or missing); `elem` is in the free state.
    #[cold]
    #[inline(never)]
    fn free_slow(&self, elem: *mut u8, user: (*mut u8, usize)) -> Result<(), ZoneError> {
        let outcome = self.cpu.with_cpu(|cpu| match self.cpu_slot(cpu) {
            // SAFETY: as in `alloc`.
            Some(cpu) => unsafe {
                self.caches
                    .with_mut(cpu, |cache| self.free_cached(cpu, cache, elem))
                    .unwrap_or(Outcome::Locked)
            },
            None => Outcome::Locked,
        });
        let outcome = match outcome {
            Outcome::Locked => self.free_locked(elem, user),
            other => other,
        };
        let result = self.finish(outcome);
        self.report_pending();
        result
    }

    /// The per-CPU free path; `elem` is already in the free state.
    #[inline]
    fn free_cached(&self, cpu: CpuIndex, cache: &mut CpuCache, elem: *mut u8) -> Outcome<()> {
        loop {
            if self.push(cpu, cache, elem, ptr::null_mut()) {
                return Outcome::Done(());
            }
            if cache.previous_count() == Some(0) {
                cache.swap();
                continue;
            }
            if let Err(e) = self.unload(cache) {
                return Outcome::Failed(e);
            }
        }
    }

    /// The loaded magazine is full (or missing) and the previous one is not empty: give a full
    /// magazine to the depot (or empty it into the chunks) and load an empty one.
    #[cold]
    fn unload(&self, cache: &mut CpuCache) -> Result<(), ZoneError> {
        let mut core = self.core.lock();
        if cache.loaded.is_null() {
            let m = self.empty_magazine(&mut core)?;
            cache.load(m);
            return Ok(());
        }
        if cache.previous.is_null() {
            cache.previous = self.empty_magazine(&mut core)?;
            cache.swap();
            return Ok(());
        }
        // Both magazines are full: the previous one goes to the depot (or back to the chunks
        // when the depot is capped and holds enough), and an empty one takes its place.
        let full = cache.previous;
        if core.depot_full_len < core.depot_max {
            if let Ok(empty) = self.empty_magazine(&mut core) {
                // SAFETY: `full` is this CPU's magazine, handed to the depot under the lock.
                unsafe { core.push_full(full) };
                cache.previous = empty;
                cache.swap();
                return Ok(());
            }
        }
        // SAFETY: `full` is this CPU's magazine, reached under the lock.
        unsafe { self.empty_into_chunks(&mut core, &mut *full) };
        cache.swap();
        Ok(())
    }

    /// Free under the lock, without a CPU cache; `elem` is in the free state.
    #[cold]
    fn free_locked(&self, elem: *mut u8, user: (*mut u8, usize)) -> Outcome<()> {
        let mut core = self.core.lock();
        let chunk = self.geometry.chunk_of(elem);
        // SAFETY: `elem` is an element of this zone (checked, or by the caller's contract), so
        // `chunk` is an initialised chunk of the zone.
        match unsafe { chunk::put(chunk, &self.geometry, &self.codec, elem, Some(user)) } {
            Ok(()) => {
                core.out -= 1;
                core.locked_frees += 1;
                // SAFETY: as above.
                unsafe { self.relist(&mut core, chunk) };
                self.clear_exhaustion(&mut core);
                Outcome::Done(())
            }
            Err(kind) => Outcome::Violation(kind, elem as usize),
        }
    }

    /// Returns the elements of magazine `m` to their chunks (checking their free state).
    ///
    /// # Safety
    ///
    /// `m` is a magazine of this zone reached under the lock (or through `&mut self`).
    unsafe fn empty_into_chunks(&self, core: &mut Core, m: &mut Magazine) {
        for i in 0..m.count {
            let elem = m.slots[i];
            // SAFETY: magazine elements are elements of this zone in the free state, checked
            // when they were freed; they go back loose (no link written, the element is not
            // touched), and their contents are checked again when they are taken.
            let ok = {
                let chunk = self.geometry.chunk_of(elem);
                // SAFETY: the element's chunk is an initialised chunk of this zone.
                unsafe { chunk::put_loose(chunk, &self.geometry, elem) }.is_ok()
            };
            if ok {
                core.out -= 1;
                // SAFETY: as above.
                unsafe { self.relist(core, self.geometry.chunk_of(elem)) };
            } else {
                core.quarantined += 1;
                // Reported once the lock is released (see `report_pending`).
                core.pending
                    .get_or_insert((ViolationKind::ModifiedAfterFree, elem as usize));
                self.violation_pending.store(true, Ordering::Relaxed);
            }
        }
        m.count = 0;
        self.clear_exhaustion(core);
    }

    /// Returns every depot magazine's elements to the chunks, under one hold of the lock (for
    /// the paths that need the elements at once: a limit reached, a dry page source); returns
    /// how many elements that was.
    fn flush_depot(&self, core: &mut Core) -> usize {
        let mut flushed = 0;
        while let Some(m) = core.pop_oldest_full() {
            // SAFETY: just taken off the depot, under the lock.
            flushed += unsafe { self.flush_magazine(core, m) };
        }
        core.depot_low = 0;
        flushed
    }

    /// Returns the elements of full magazine `m` (taken off the depot) to their chunks and
    /// puts it on the empty list; returns how many elements it held.
    ///
    /// # Safety
    ///
    /// `m` is a magazine of the zone on no list, reached under the lock, through the pointer
    /// the depot held (page-wide provenance).
    unsafe fn flush_magazine(&self, core: &mut Core, m: *mut Magazine) -> usize {
        // SAFETY: the caller's contract.
        unsafe {
            let magazine = &mut *m;
            let count = magazine.count;
            self.empty_into_chunks(core, magazine);
            self.put_empty(core, m);
            count
        }
    }

    /// Returns up to `n` of the depot's oldest full magazines to the chunks, taking the lock
    /// once per magazine so other CPUs wait for one magazine's elements at most; stops when
    /// the depot is down to `floor` magazines.
    fn flush_oldest_batched(&self, mut n: usize, floor: usize) {
        while n > 0 {
            let mut core = self.core.lock();
            if core.depot_full_len <= floor {
                break;
            }
            let Some(m) = core.pop_oldest_full() else {
                break;
            };
            // SAFETY: just taken off the depot, under the lock.
            unsafe { self.flush_magazine(&mut core, m) };
            n -= 1;
        }
    }

    /// Magazines in one magazine page, and the offset of the first.
    fn magazine_layout(&self) -> (usize, usize) {
        let first = size_of::<MagazinePage>().next_multiple_of(align_of::<Magazine>());
        ((self.page - first) / size_of::<Magazine>(), first)
    }

    /// The page header of a magazine (magazine pages are page-aligned).
    fn page_of(&self, m: *mut Magazine) -> *mut MagazinePage {
        let offset = m.addr() & (self.page - 1);
        m.cast::<u8>().wrapping_sub(offset).cast()
    }

    /// Puts magazine `m` (its elements gone) on the empty list.
    ///
    /// # Safety
    ///
    /// `m` is a magazine of one of the zone's magazine pages, on no list, reached under the
    /// lock, and carries the provenance of its whole page (not derived from a reference to
    /// the magazine): the page header is reached through it.
    unsafe fn put_empty(&self, core: &mut Core, m: *mut Magazine) {
        let page = self.page_of(m);
        // SAFETY: the caller's contract; `page` is the header of `m`'s page.
        unsafe {
            (*m).count = 0;
            (*m).next = core.depot_empty;
            (*m).prev = ptr::null_mut();
            (*page).idle += 1;
        }
        core.depot_empty = m;
    }

    /// Returns an empty magazine from the depot, allocating a magazine page if needed.
    fn empty_magazine(&self, core: &mut Core) -> Result<*mut Magazine, ZoneError> {
        if core.depot_empty.is_null() {
            let page = self.page;
            let mem = self.source.allocate(page, page)?;
            let header = mem.as_ptr().cast::<MagazinePage>();
            let (count, first) = self.magazine_layout();
            // SAFETY: the page is ours, `first + count * size_of::<Magazine>() <= page`, and
            // the offsets keep every magazine aligned (the page is page-aligned); each new
            // magazine is on no list, its pointer derived from the page's.
            unsafe {
                header.write(MagazinePage {
                    next: core.magazine_pages,
                    idle: 0,
                });
                core.magazine_pages = header;
                for i in 0..count {
                    let m = mem
                        .as_ptr()
                        .add(first + i * size_of::<Magazine>())
                        .cast::<Magazine>();
                    self.put_empty(core, m);
                }
            }
            core.magazines += count;
        }
        let m = core.depot_empty;
        // SAFETY: a non-null depot magazine of the zone, and its page's header.
        unsafe {
            core.depot_empty = (*m).next;
            (*self.page_of(m)).idle -= 1;
        }
        Ok(m)
    }

    /// Gives back the magazine pages none of whose magazines is in use; returns the bytes.
    fn release_idle_magazine_pages(&self, core: &mut Core) -> usize {
        let (count, _) = self.magazine_layout();
        let idle = |p: *mut MagazinePage| {
            // SAFETY: `p` is one of the zone's magazine pages, under the lock.
            unsafe { (*p).idle == count }
        };
        let mut any = false;
        let mut p = core.magazine_pages;
        while !p.is_null() {
            any |= idle(p);
            // SAFETY: as above.
            p = unsafe { (*p).next };
        }
        if !any {
            return 0;
        }
        // Take the idle pages' magazines off the empty list, then the pages off theirs.
        let mut link: *mut *mut Magazine = &raw mut core.depot_empty;
        // SAFETY: the empty list holds magazines of the zone's pages, under the lock; `link`
        // points at the list head or at a kept magazine's `next`.
        unsafe {
            while !(*link).is_null() {
                let m = *link;
                if idle(self.page_of(m)) {
                    *link = (*m).next;
                } else {
                    link = &raw mut (*m).next;
                }
            }
        }
        let mut released = 0;
        let mut link: *mut *mut MagazinePage = &raw mut core.magazine_pages;
        // SAFETY: as above, for the page list; an idle page's magazines are on no list now,
        // so nothing refers to the page any more.
        unsafe {
            while let Some(p) = NonNull::new(*link) {
                if idle(p.as_ptr()) {
                    *link = (*p.as_ptr()).next;
                    self.source.deallocate(p.cast(), self.page, self.page);
                    core.magazines -= count;
                    released += self.page;
                } else {
                    link = &raw mut (*p.as_ptr()).next;
                }
            }
        }
        released
    }

    // ---------------------------------------------------------------------------------------
    // Hardening.

    /// Checks a pointer given to `free`: one of our chunks, an element boundary, not free.
    /// Returns the element's state byte.
    ///
    /// # Safety
    ///
    /// The chunk-aligned block around `elem` is readable.
    #[inline(always)]
    unsafe fn check_free(&self, elem: *mut u8) -> Result<*mut u8, ViolationKind> {
        let chunk = self.geometry.chunk_of(elem);
        // SAFETY: the caller's guarantee.
        if !unsafe { chunk::is_zones(chunk, self.codec.magic_key) } {
            return Err(ViolationKind::ForeignPointer);
        }
        let index = self
            .geometry
            .index_of(chunk, elem)
            .ok_or(ViolationKind::NotAnElement)?;
        let state = self.geometry.state(chunk, index);
        // SAFETY: `index` is an element of this chunk, whose state byte the zone wrote.
        if unsafe { state.read() } == 0 {
            return Err(ViolationKind::DoubleFree);
        }
        Ok(state)
    }

    /// Sets the state byte of element `elem` (1: with a user, 0: free).
    #[inline(always)]
    fn set_state(&self, elem: *mut u8, state: u8) {
        let chunk = self.geometry.chunk_of(elem);
        if let Some(index) = self.geometry.index_of(chunk, elem) {
            // SAFETY: `elem` is an element of one of this zone's chunks (the callers only pass
            // elements the zone handed out or took back), so its state byte is in the chunk;
            // each element has its own byte.
            unsafe { self.geometry.state(chunk, index).write(state) };
        }
    }

    /// Puts a freed element in the free state: zeroed if the zone zeroes, its state byte set to
    /// free if the zone checks frees.
    ///
    /// # Safety
    ///
    /// `elem` is an element of this zone no one else uses, reached through the zone's own
    /// pointer; `user` is the caller's pointer to its first `len` bytes; `state` is null or
    /// the element's state byte.
    #[inline(always)]
    unsafe fn enter_free_state(&self, user: *mut u8, elem: *mut u8, len: usize, state: *mut u8) {
        let stride = self.geometry.stride;
        // SAFETY: the element spans `stride` writable bytes; the caller's pointer covers the
        // first `len <= stride` of them, the zone's own pointer all of them; `state` is the
        // element's own byte.
        unsafe {
            if self.codec.zero {
                if len >= stride {
                    zero(user, stride);
                } else {
                    zero_split(user, len, elem, stride);
                }
            }
            if self.codec.mark {
                if state.is_null() {
                    self.set_state(elem, 0);
                } else {
                    state.write(0);
                }
            }
        }
    }

    /// Checks that a cached element is still in the free state (zero when the zone zeroes).
    /// Reads only memory the zone wrote.
    ///
    /// # Safety
    ///
    /// `elem` is an element of this zone held in a magazine.
    #[inline(always)]
    unsafe fn verify_free_state(&self, elem: *mut u8) -> Result<(), ViolationKind> {
        // SAFETY: the element spans `stride` readable bytes.
        unsafe {
            if self.codec.zero && !is_zero(elem, self.geometry.stride) {
                return Err(ViolationKind::ModifiedAfterFree);
            }
        }
        Ok(())
    }

    /// Counts an element taken out of circulation after a violation on the fast path.
    fn quarantine_element(&self) {
        // The element stays "out" of its chunk forever; account for it under the lock the
        // next time the zone takes it (here, to keep the fast path lock-free, immediately).
        self.core.lock().quarantined += 1;
    }

    /// The checksum of a read-only element: its contents, address and the zone secret.
    ///
    /// # Safety
    ///
    /// `elem` is an element of this zone.
    unsafe fn checksum(&self, elem: *mut u8) -> usize {
        let words = self.size.div_ceil(size_of::<usize>());
        let mut h = mix((self.codec.secret ^ elem as usize) as u64);
        for i in 0..words {
            // SAFETY: the element spans `words + 1` words (contents, then the checksum).
            h = mix(h ^ unsafe { elem.cast::<usize>().add(i).read() } as u64);
        }
        h as usize
    }

    /// Writes a read-only element's checksum.
    ///
    /// # Safety
    ///
    /// `elem` is an element of this read-only zone whose pages are writable now.
    unsafe fn seal(&self, elem: *mut u8) {
        let words = self.size.div_ceil(size_of::<usize>());
        // SAFETY: the checksum word follows the contents inside the stride.
        unsafe {
            let sum = self.checksum(elem);
            elem.cast::<usize>().add(words).write(sum);
        }
    }

    /// Checks a read-only element's checksum.
    ///
    /// # Safety
    ///
    /// `elem` is an allocated element of this read-only zone.
    unsafe fn check_seal(&self, elem: *mut u8) -> Result<(), ViolationKind> {
        let words = self.size.div_ceil(size_of::<usize>());
        // SAFETY: as in `seal`.
        let (stored, now) =
            unsafe { (elem.cast::<usize>().add(words).read(), self.checksum(elem)) };
        if stored == now {
            Ok(())
        } else {
            Err(ViolationKind::ReadOnlyWrite)
        }
    }

    /// Frees an element of a read-only zone: checks its seal, then returns it under the lock
    /// with its pages writable for the moment.
    ///
    /// # Safety
    ///
    /// As for [`free`](Self::free).
    unsafe fn free_read_only(&self, elem: *mut u8) -> Result<(), ViolationKind> {
        let mut core = self.core.lock();
        // SAFETY: the caller's contract: an allocated element of this zone.
        unsafe { self.check_seal(elem)? };
        let chunk = self.geometry.chunk_of(elem);
        self.elements_writable(chunk, true)
            .map_err(|_| ViolationKind::ReadOnlyWrite)?;
        // SAFETY: an element of this zone, pages writable, under the lock.
        let result = unsafe {
            self.enter_free_state(elem, elem, self.geometry.stride, ptr::null_mut());
            chunk::put(chunk, &self.geometry, &self.codec, elem, None)
        };
        self.elements_writable(chunk, false).ok();
        result?;
        core.out -= 1;
        core.locked_frees += 1;
        // SAFETY: `chunk` is an initialised chunk of the zone.
        unsafe { self.relist(&mut core, chunk) };
        self.clear_exhaustion(&mut core);
        Ok(())
    }

    /// Changes bytes `[offset, offset + data.len())` of an element of a read-only zone (XNU's
    /// `zalloc_ro_mut`): checks the element's seal, writes (with its pages writable for the
    /// moment, under the zone lock) and seals it again.
    ///
    /// # Safety
    ///
    /// `elem` is an allocated element of this zone.
    ///
    /// # Errors
    ///
    /// [`ZoneError::BadConfig`] if the zone is not read-only or the range exceeds the element
    /// (nothing is written); [`ZoneError::Violation`] with
    /// [`ViolationKind::ReadOnlyWrite`] if the element was changed behind the zone's back
    /// (after the handler returned; nothing is written).
    pub unsafe fn mutate(
        &self,
        elem: NonNull<u8>,
        offset: usize,
        data: &[u8],
    ) -> Result<(), ZoneError> {
        if !self.flags.contains(ZoneFlags::READ_ONLY)
            || offset
                .checked_add(data.len())
                .is_none_or(|end| end > self.size)
        {
            return Err(ZoneError::BadConfig);
        }
        let elem = zone_ptr(elem.as_ptr().addr());
        let result = {
            let _core = self.core.lock();
            // SAFETY: the caller's contract: an allocated element of this zone.
            match unsafe { self.check_seal(elem) } {
                Err(kind) => Err(kind),
                Ok(()) => {
                    let chunk = self.geometry.chunk_of(elem);
                    self.elements_writable(chunk, true)?;
                    // SAFETY: the range lies inside the element (checked), pages writable.
                    unsafe {
                        ptr::copy_nonoverlapping(data.as_ptr(), elem.add(offset), data.len());
                        self.seal(elem);
                    }
                    self.elements_writable(chunk, false)?;
                    Ok(())
                }
            }
        };
        result.map_err(|kind| self.report(kind, elem as usize))
    }

    /// Checks that a read-only element is unchanged since its last
    /// [`mutate`](Self::mutate) (or allocation).
    ///
    /// # Safety
    ///
    /// `elem` is an allocated element of this zone.
    ///
    /// # Errors
    ///
    /// [`ViolationKind::ReadOnlyWrite`] after the handler returned; zones that are not
    /// read-only always pass.
    pub unsafe fn verify(&self, elem: NonNull<u8>) -> Result<(), ViolationKind> {
        if !self.flags.contains(ZoneFlags::READ_ONLY) {
            return Ok(());
        }
        // SAFETY: the caller's contract.
        let result = unsafe { self.check_seal(zone_ptr(elem.as_ptr().addr())) };
        if let Err(kind) = result {
            self.report(kind, elem.as_ptr() as usize);
        }
        result
    }

    /// Checks that `elem` is an element of this zone (XNU's `zone_require`).
    ///
    /// # Safety
    ///
    /// The chunk-aligned block around `elem` must be readable (true for any pointer into a
    /// chunk of any zone of the same page source).
    ///
    /// # Errors
    ///
    /// [`ViolationKind::ForeignPointer`] or [`ViolationKind::NotAnElement`]; the violation
    /// handler is called first.
    pub unsafe fn require(&self, elem: NonNull<u8>) -> Result<(), ViolationKind> {
        let chunk = self.geometry.chunk_of(zone_ptr(elem.as_ptr().addr()));
        // SAFETY: the caller's guarantee.
        let result = if unsafe { chunk::is_zones(chunk, self.codec.magic_key) } {
            self.geometry
                .index_of(chunk, elem.as_ptr())
                .map(|_| ())
                .ok_or(ViolationKind::NotAnElement)
        } else {
            Err(ViolationKind::ForeignPointer)
        };
        if let Err(kind) = result {
            self.report(kind, elem.as_ptr() as usize);
        }
        result
    }

    // ---------------------------------------------------------------------------------------
    // Exhaustion, garbage collection, statistics.

    /// Reports a violation found under the lock (a cached element found modified when its
    /// magazine went back to the chunks), outside the lock.
    #[inline]
    fn report_pending(&self) {
        if self.violation_pending.load(Ordering::Relaxed)
            && self.violation_pending.swap(false, Ordering::Relaxed)
        {
            let pending = self.core.lock().pending.take();
            if let Some((kind, addr)) = pending {
                self.report(kind, addr);
            }
        }
    }

    #[inline]
    fn check_exhaustion(&self) {
        // A plain load on the fast path; the swap only when the flag is set.
        if self.exhaust_pending.load(Ordering::Relaxed)
            && self.exhaust_pending.swap(false, Ordering::Relaxed)
        {
            if let Some(callback) = self.on_exhaustion {
                callback(&self.stats());
            }
        }
    }

    fn clear_exhaustion(&self, core: &mut Core) {
        if let Some(limit) = self.limit {
            if core.out.saturating_mul(10) < limit.saturating_mul(8) {
                core.exhausted = false;
            }
        }
    }

    /// Trims the zone (XNU's zone GC at its trim level); returns the bytes given back to the
    /// page source.
    ///
    /// 1. The depot shrinks to its working set: the full magazines that stayed in it, unused,
    ///    since the previous `trim` (Bonwick's estimate) return their elements to their
    ///    chunks, but for 128 KiB of elements per CPU that the depot always keeps. Call `trim`
    ///    periodically (XNU's GC runs every few seconds and under memory pressure): the depot
    ///    is not capped otherwise (see [`ZoneConfig::depot_limit`]), and what it frees at
    ///    one call is what the calls before showed to be idle.
    /// 2. Empty chunks go back to the page source, but for `keep` of them.
    /// 3. So do magazine pages whose magazines are all unused.
    ///
    /// Magazines go back one per hold of the zone lock, so the other CPUs wait for one
    /// magazine's elements at most, however large the depot grew. [`drain`](Self::drain)
    /// empties the whole depot.
    pub fn trim(&self, keep: usize) -> usize {
        let idle = {
            let core = self.core.lock();
            core.depot_low
                .min(core.depot_full_len.saturating_sub(self.depot_keep))
        };
        self.flush_oldest_batched(idle, self.depot_keep);
        let mut core = self.core.lock();
        core.depot_low = core.depot_full_len;
        let released = self.trim_locked(&mut core, keep);
        drop(core);
        self.report_pending();
        released
    }

    /// Gives empty chunks back (but for `keep`), then idle magazine pages.
    fn trim_locked(&self, core: &mut Core, keep: usize) -> usize {
        let mut released = 0;
        while core.empty.len > keep {
            // SAFETY: the empty list holds initialised chunks of this zone.
            let Some(chunk) = (unsafe { core.empty.pop() }) else {
                break;
            };
            self.release_chunk(core, chunk);
            released += self.geometry.chunk_size;
        }
        released + self.release_idle_magazine_pages(core)
    }

    fn release_chunk(&self, core: &mut Core, chunk: NonNull<ChunkHeader>) {
        let size = self.geometry.chunk_size;
        // Guard and read-only pages become plain memory again before they go back.
        self.protect_chunk(chunk.as_ptr(), false).ok();
        // SAFETY: the chunk came from `allocate(size, size)`, is on no list and holds no element
        // anyone uses (it is empty, or the zone is going away). Its magic is cleared first so a
        // stale pointer into recycled memory is not taken for ours.
        unsafe {
            chunk.as_ptr().cast::<usize>().write(0);
            self.source.deallocate(chunk.cast(), size, size);
        }
        core.chunks -= 1;
    }

    /// Returns every depot magazine's elements to their chunks (one magazine per hold of the
    /// zone lock, as in [`trim`](Self::trim)) and every empty chunk and idle magazine page to
    /// the page source (XNU's zone drain, under memory pressure); returns the bytes given
    /// back. Elements in the CPUs' own magazines stay (see
    /// [`drain_cpu_cache`](Self::drain_cpu_cache)).
    pub fn drain(&self) -> usize {
        // What the depot holds now: magazines other CPUs give meanwhile are not waited for.
        let held = self.core.lock().depot_full_len;
        self.flush_oldest_batched(held, 0);
        let mut core = self.core.lock();
        core.depot_low = 0;
        let released = self.trim_locked(&mut core, 0);
        drop(core);
        self.report_pending();
        released
    }

    /// Caps the depot at `bytes` of free elements, or lifts the cap (`None`), as
    /// [`ZoneConfig::depot_limit`] does at creation; a depot above the new cap gives its
    /// oldest magazines back to the chunks at once (one per hold of the lock).
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_zone_alloc::{NoCpuCache, SystemPages, Zone, ZoneConfig};
    ///
    /// let zone: Zone<_, _, 2> = Zone::new(ZoneConfig::new("capped", 64), SystemPages::new(), NoCpuCache)?;
    /// zone.set_depot_limit(Some(256 << 10));
    /// zone.set_depot_limit(None);
    /// # Ok::<(), machvm_zone_alloc::ZoneError>(())
    /// ```
    pub fn set_depot_limit(&self, bytes: Option<usize>) {
        let magazine_bytes = (self.magazine_size * self.geometry.stride).max(1);
        let max = depot_magazines(bytes, magazine_bytes, self.depot_keep);
        let excess = {
            let mut core = self.core.lock();
            core.depot_max = max;
            core.depot_full_len.saturating_sub(max)
        };
        self.flush_oldest_batched(excess, max);
        self.report_pending();
    }

    /// Returns the calling CPU's cached elements to their chunks (call on each CPU, e.g.
    /// before taking it offline).
    pub fn drain_cpu_cache(&self) {
        self.cpu.with_cpu(|cpu| {
            if let Some(cpu) = self.cpu_slot(cpu) {
                // SAFETY: as in `alloc`: the slot is this context's alone during the call.
                unsafe { self.caches.with_mut(cpu, |cache| self.empty_cache(cache)) };
            }
        });
        self.report_pending();
    }

    /// Returns CPU `cpu`'s cached elements to their chunks, from another CPU (for a CPU taken
    /// offline, or a stopped one).
    ///
    /// # Safety
    ///
    /// CPU `cpu` runs no code of this zone during the call (it is offline, or parked with
    /// interrupts masked), so its cache can be taken over.
    pub unsafe fn drain_offline_cpu(&self, cpu: CpuIndex) {
        // SAFETY: the caller guarantees the owner of the slot does not use it meanwhile, and
        // this call does not re-enter the cell.
        unsafe { self.caches.with_mut(cpu, |cache| self.empty_cache(cache)) };
        self.report_pending();
    }

    /// Returns both magazines of a CPU cache to the chunks (they stay with the cache, empty).
    fn empty_cache(&self, cache: &mut CpuCache) {
        let mut core = self.core.lock();
        cache.store_count();
        for m in [cache.loaded, cache.previous] {
            // SAFETY: the cache's magazines are the zone's, reached under the lock by the
            // context that holds the cache.
            if let Some(m) = unsafe { m.as_mut() } {
                // SAFETY: as above.
                unsafe { self.empty_into_chunks(&mut core, m) };
            }
        }
        cache.count = 0;
        cache.top_state = ptr::null_mut();
    }

    /// Returns the zone's statistics now (the per-CPU counters are read without stopping the
    /// CPUs, so a busy zone's figures are a close snapshot).
    pub fn stats(&self) -> ZoneStats {
        let core = self.core.lock();
        let (mut allocs, mut frees) = (core.locked_allocs, core.locked_frees);
        for c in self.counters.iter() {
            allocs = allocs.wrapping_add(c.allocs.load(Ordering::Relaxed));
            frees = frees.wrapping_add(c.frees.load(Ordering::Relaxed));
        }
        let g = &self.geometry;
        let in_use = usize::try_from(allocs.wrapping_sub(frees)).unwrap_or(0);
        ZoneStats {
            name: self.name,
            element_size: self.size,
            stride: g.stride,
            chunk_size: g.chunk_size,
            cur_size: core.chunks * g.chunk_size,
            max_size: core.peak_chunks * g.chunk_size,
            cur_elements: core.chunks * g.per_chunk,
            max_elements: self.limit,
            in_use,
            cached: core.out.saturating_sub(in_use + core.quarantined),
            quarantined_chunks: core.quarantined_chunks,
            alloc_count: allocs,
            elements_per_chunk: g.per_chunk,
            empty_chunks: core.empty.len,
            quarantined: core.quarantined,
            magazine_bytes: core.magazines * size_of::<Magazine>(),
        }
    }
}

impl<S: PageSource, C: CpuLocal, const CPUS: usize> crate::leaks::LeakScan for Zone<S, C, CPUS> {
    unsafe fn for_each_allocated(&self, f: &mut dyn FnMut(&str, usize, usize)) {
        let core = self.core.lock();
        let name = self.name.as_str();
        for list in [&core.partial, &core.full, &core.quarantine] {
            let mut chunk = list.head;
            while !chunk.is_null() {
                // SAFETY: chunks on the zone's lists are initialised chunks of the zone, and
                // the caller keeps everyone else out of the zone during the scan, so reading
                // the element state bytes races with nothing.
                unsafe {
                    chunk::for_each_out(chunk, &self.geometry, |elem| {
                        let cached = self.codec.mark
                            && self
                                .geometry
                                .index_of(chunk, elem)
                                .is_some_and(|i| self.geometry.state(chunk, i).read() == 0);
                        if !cached {
                            f(name, elem as usize, self.size);
                        }
                    });
                    chunk = (*chunk).next;
                }
            }
        }
    }
}

/// Gives a chunk's pages read-write access back (`Drop` cannot borrow the zone whole).
fn restore<S: PageSource>(
    source: &S,
    chunk: *mut ChunkHeader,
    g: &Geometry,
    page: usize,
    elements: bool,
) {
    use crate::source::PageAccess;
    let base = chunk.cast::<u8>();
    if g.tail > 0 {
        if let Some(p) = NonNull::new(base.wrapping_add(g.chunk_size - g.tail)) {
            source.protect(p, g.tail, PageAccess::ReadWrite).ok();
        }
    }
    if elements {
        let (start, end) = g.element_pages(page);
        if let Some(p) = NonNull::new(base.wrapping_add(start)) {
            source.protect(p, end - start, PageAccess::ReadWrite).ok();
        }
    }
}

impl<S: PageSource, C: CpuLocal, const CPUS: usize> Drop for Zone<S, C, CPUS> {
    fn drop(&mut self) {
        let core = self.core.get_mut();
        let size = self.geometry.chunk_size;
        for list in [
            &mut core.empty,
            &mut core.partial,
            &mut core.full,
            &mut core.quarantine,
        ] {
            // SAFETY: the lists hold chunks from `allocate(size, size)`; the zone is going
            // away, so no element is used any more (the caller's `free`/`alloc` contracts).
            while let Some(chunk) = unsafe { list.pop() } {
                // Writable and without guard again before the memory goes back.
                if self.geometry.tail > 0 || self.protect_elements {
                    let (g, page) = (self.geometry, self.page);
                    restore(
                        &self.source,
                        chunk.as_ptr(),
                        &g,
                        page,
                        self.protect_elements,
                    );
                }
                // SAFETY: as above.
                unsafe { self.source.deallocate(chunk.cast(), size, size) };
            }
        }
        let page = self.source.page_size();
        let mut p = core.magazine_pages;
        while let Some(pg) = NonNull::new(p) {
            // SAFETY: magazine pages came from `allocate(page, page)` and their magazines are
            // no longer used (the CPU caches die with the zone).
            unsafe {
                p = (*pg.as_ptr()).next;
                self.source.deallocate(pg.cast(), page, page);
            }
        }
    }
}
