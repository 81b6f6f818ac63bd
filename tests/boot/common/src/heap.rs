//! The kernels' heap: `machvm-zone-alloc` as the global allocator over a static arena, and the
//! zone checks that run on it.
//!
//! Each kernel declares
//! `#[global_allocator] static HEAP: KernelHeap<ItsCpu> = KernelHeap::new(&ARENA_PAGES, …)`
//! (see [`KernelHeap`]), so every `Box`, `Vec` and `BTreeMap` below is served by kalloc's zones
//! (per-CPU magazines, hardened chunks), and the large ones by [`ArenaPages`].

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

use machvm_sync::{CpuIndex, Mutex};
use machvm_zone_alloc::{
    CpuLocal, GlobalKalloc, NoCpuCache, PageSource, PageSourceError, Violation, ViolationKind,
    Zone, ZoneConfig, ZoneError, ZoneFlags, ZprintTable,
};

use crate::fault::Cpu;
use crate::report::{info, pass};
use crate::{ensure, must};

/// Bytes of the heap arena.
pub const ARENA_BYTES: usize = 8 << 20;
/// The arena's page size.
const PAGE: usize = 4096;
const PAGES: usize = ARENA_BYTES / PAGE;
/// CPUs with a per-CPU cache in the kernel heap.
pub const HEAP_CPUS: usize = 2;

/// The arena's memory: aligned to 1 MiB, the largest chunk a zone asks for.
#[repr(C, align(1048576))]
pub struct ArenaMemory([u8; ARENA_BYTES]);

impl core::fmt::Debug for ArenaMemory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ArenaMemory({ARENA_BYTES} bytes)")
    }
}

/// The heap arena (in `.bss`, identity-mapped with the kernel image).
static mut ARENA: ArenaMemory = ArenaMemory([0; ARENA_BYTES]);

/// A page source over the static arena: runs of 4 KiB pages found first-fit in a bitmap.
#[derive(Debug)]
pub struct ArenaPages {
    used: Mutex<[u64; PAGES / 64]>,
    in_use: AtomicUsize,
}

/// The kernels' page source.
pub static ARENA_PAGES: ArenaPages = ArenaPages {
    used: Mutex::new([0; PAGES / 64]),
    in_use: AtomicUsize::new(0),
};

impl ArenaPages {
    fn base() -> usize {
        core::ptr::addr_of_mut!(ARENA) as usize
    }

    /// Bytes handed out now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }
}

fn is_used(map: &[u64; PAGES / 64], page: usize) -> bool {
    map[page / 64] & (1 << (page % 64)) != 0
}

fn set(map: &mut [u64; PAGES / 64], page: usize, used: bool) {
    if used {
        map[page / 64] |= 1 << (page % 64);
    } else {
        map[page / 64] &= !(1 << (page % 64));
    }
}

// SAFETY: runs handed out are inside the arena, aligned as asked (the arena is 1 MiB aligned
// and runs start at multiples of `align / PAGE` pages), never overlap (the bitmap marks them
// under the lock) and stay valid until returned.
unsafe impl PageSource for ArenaPages {
    fn page_size(&self) -> usize {
        PAGE
    }

    fn allocate(&self, bytes: usize, align: usize) -> Result<NonNull<u8>, PageSourceError> {
        let bad = PageSourceError::BadRequest { bytes, align };
        if bytes == 0 || !align.is_power_of_two() || align > 1 << 20 {
            return Err(bad);
        }
        let n = bytes.div_ceil(PAGE);
        let step = (align / PAGE).max(1);
        let mut map = self.used.lock();
        let mut start = 0;
        while start + n <= PAGES {
            if let Some(busy) = (start..start + n).rev().find(|&p| is_used(&map, p)) {
                start = (busy + 1).next_multiple_of(step);
                continue;
            }
            for p in start..start + n {
                set(&mut map, p, true);
            }
            self.in_use.fetch_add(n * PAGE, Ordering::Relaxed);
            let addr = Self::base() + start * PAGE;
            return NonNull::new(addr as *mut u8).ok_or(bad);
        }
        Err(PageSourceError::Exhausted)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, bytes: usize, _align: usize) {
        let first = (ptr.as_ptr() as usize - Self::base()) / PAGE;
        let n = bytes.div_ceil(PAGE);
        let mut map = self.used.lock();
        for p in first..(first + n).min(PAGES) {
            set(&mut map, p, false);
        }
        self.in_use.fetch_sub(n * PAGE, Ordering::Relaxed);
    }
}

/// The CPU identity of a kernel heap: `C::index()` of the running CPU. Nothing in these
/// kernels is preempted, and the only allocations in exception context are those of the VM
/// checks' page faults, taken at a probe's access — never inside an allocator call — so a
/// CPU's cache is used by one context at a time.
#[derive(Debug)]
pub struct KernelCpu<C: Cpu>(PhantomData<C>);

impl<C: Cpu> KernelCpu<C> {
    /// The identity.
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<C: Cpu> Default for KernelCpu<C> {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: see the type's documentation: no allocation from an exception that interrupted an
// allocation, no preemption, and each CPU has its own index.
unsafe impl<C: Cpu> CpuLocal for KernelCpu<C> {
    fn with_cpu<R>(&self, f: impl FnOnce(Option<CpuIndex>) -> R) -> R {
        let index = C::index();
        f((index < HEAP_CPUS).then(|| CpuIndex::new(index as u32)))
    }
}

/// The kernels' global allocator type.
pub type KernelHeap<C> = GlobalKalloc<ArenaPages, KernelCpu<C>, HEAP_CPUS>;

/// Violations seen by the checks' zones (their handler records instead of panicking).
static VIOLATIONS: AtomicU32 = AtomicU32::new(0);
/// The last violation's kind (its `ViolationKind as u32 + 1`; 0: none).
static LAST_KIND: AtomicU32 = AtomicU32::new(0);

fn record(v: &Violation<'_>) {
    VIOLATIONS.fetch_add(1, Ordering::Relaxed);
    LAST_KIND.store(kind_code(v.kind), Ordering::Relaxed);
}

fn kind_code(kind: ViolationKind) -> u32 {
    match kind {
        ViolationKind::DoubleFree => 1,
        ViolationKind::ForeignPointer => 2,
        ViolationKind::NotAnElement => 3,
        ViolationKind::ModifiedAfterFree => 4,
        ViolationKind::FreelistCorrupted => 5,
        _ => 99,
    }
}

/// A checked zone over the arena, without CPU caches (frees go straight to the freelist),
/// recording violations.
pub fn checked_zone(
    name: &'static str,
    flags: ZoneFlags,
) -> Zone<&'static ArenaPages, NoCpuCache, 1> {
    let config = ZoneConfig::new(name, 64)
        .flags(flags.with(ZoneFlags::NO_CACHE))
        .secret(0x5eed_cafe_f00d_0001)
        .on_violation(record);
    must!(
        Zone::new(config, &ARENA_PAGES, NoCpuCache),
        "creating zone {name}"
    )
}

/// Expects `result` to be the violation `kind`, recorded once by the handler.
pub fn expect_violation<T>(result: Result<T, ZoneError>, kind: ViolationKind, what: &str) {
    match result {
        Err(ZoneError::Violation(k)) if k == kind => {}
        Err(e) => crate::report::fail(format_args!("{what}: expected {kind:?}, got {e:?}")),
        Ok(_) => crate::report::fail(format_args!("{what}: expected {kind:?}, it succeeded")),
    }
    ensure!(
        LAST_KIND.load(Ordering::Relaxed) == kind_code(kind),
        "{what}: the violation handler did not see {kind:?}"
    );
}

/// The heap checks: the global allocator under `Box` / `Vec` / `BTreeMap` / `String` load
/// (small objects from kalloc's zones, large ones from the arena), everything returned at the
/// end, and a hardened zone catching a double free, a foreign pointer, an interior pointer and
/// a write after free.
pub fn check<C: Cpu>(heap: &'static KernelHeap<C>) {
    let kalloc = must!(heap.heap().ok_or("no heap"), "building the kernel heap");
    let arena_before = ARENA_PAGES.in_use();
    {
        let mut v: Vec<u64> = Vec::new();
        for i in 0..50_000u64 {
            v.push(i * 3);
        }
        let mut map = BTreeMap::new();
        for i in 0..2_000u32 {
            map.insert(i.wrapping_mul(2_654_435_761), Box::new([i; 8]));
        }
        let mut s = String::new();
        for i in 0..500 {
            let _ = write!(s, "{i},");
        }
        ensure!(
            v.iter().enumerate().all(|(i, x)| *x == i as u64 * 3),
            "Vec contents"
        );
        ensure!(
            map.iter()
                .all(|(k, b)| b[0].wrapping_mul(2_654_435_761) == *k && b[7] == b[0]),
            "BTreeMap contents"
        );
        ensure!(s.len() == 1890, "String contents ({} bytes)", s.len());
        let zones_used = kalloc.zone_stats().filter(|z| z.alloc_count > 0).count();
        let large = kalloc.large_stats();
        pass(
            "heap-global",
            format_args!(
                "Vec of 50,000 u64 (large blocks: {} allocated), BTreeMap of 2,000 boxes, a \
                 String: served by {zones_used} kalloc zones; arena {} KiB in use",
                large.alloc_count,
                ARENA_PAGES.in_use() >> 10
            ),
        );
    }
    let in_use: usize = kalloc.zone_stats().map(|z| z.in_use).sum();
    ensure!(
        in_use == 0,
        "{in_use} kalloc elements still in use after the drops"
    );
    let stats: Vec<_> = kalloc.zone_stats().filter(|z| z.alloc_count > 0).collect();
    crate::kprintln!("{}", ZprintTable::new(&stats));
    drop(stats);
    kalloc.drain_cpu_cache();
    kalloc.drain();
    info(
        "heap-drain",
        format_args!(
            "after draining, the arena holds {} KiB (before the check: {} KiB)",
            ARENA_PAGES.in_use() >> 10,
            arena_before >> 10
        ),
    );

    let zone = checked_zone("smoke.hardened", ZoneFlags::HARDENED);
    let a = must!(zone.alloc(), "zone alloc");
    let b = must!(zone.alloc(), "zone alloc");
    // SAFETY: `a` came from `zone` and is freed once here.
    must!(unsafe { zone.free(a) }, "freeing a");
    // SAFETY: deliberately frees `a` a second time: the zone must refuse it.
    expect_violation(
        unsafe { zone.free(a) },
        ViolationKind::DoubleFree,
        "double free",
    );
    let interior = must!(
        NonNull::new(b.as_ptr().wrapping_add(8)).ok_or("null"),
        "interior pointer"
    );
    // SAFETY: a pointer into a live element: the zone must refuse it.
    expect_violation(
        unsafe { zone.free(interior) },
        ViolationKind::NotAnElement,
        "interior free",
    );
    let other = checked_zone("smoke.other", ZoneFlags::HARDENED);
    // SAFETY: `b` belongs to `zone`, not `other`: refused.
    expect_violation(
        unsafe { other.free(b) },
        ViolationKind::ForeignPointer,
        "foreign free",
    );
    // SAFETY: `b` came from `zone`, freed once.
    must!(unsafe { zone.free(b) }, "freeing b");
    // A use-after-free write into `b` (still zone memory: its chunk is not released).
    // SAFETY: deliberately writes freed zone memory, which the zone still owns.
    unsafe { b.as_ptr().add(24).write(0x5a) };
    expect_violation(
        zone.alloc(),
        ViolationKind::ModifiedAfterFree,
        "write after free",
    );
    pass(
        "zone-hardening",
        format_args!(
            "double free, interior pointer, foreign pointer and a write after free caught \
             ({} violations reported)",
            VIOLATIONS.load(Ordering::Relaxed)
        ),
    );
}

/// The pointer-authentication check (aarch64 with `FEAT_PAuth`, key DA enabled by the
/// caller): a zone signing its freelist links stores them with a code in the top bits; a link
/// whose low bits are changed (a forged pointer to another element) fails its signature and
/// is reported as a corrupt freelist before anything is handed out.
pub fn check_pac(keys: machvm_zone_alloc::PacKeys) {
    let config = ZoneConfig::new("smoke.pac", 64)
        .flags(ZoneFlags::HARDENED.with(ZoneFlags::NO_CACHE))
        .secret(0x5eed_cafe_f00d_0002)
        .pac_freelist(keys)
        .on_violation(record);
    let zone: Zone<&'static ArenaPages, NoCpuCache, 1> = must!(
        Zone::new(config, &ARENA_PAGES, NoCpuCache),
        "creating the PAC zone"
    );
    // A signed chain works: allocate, free and reallocate through it.
    let mut held = [NonNull::dangling(); 4];
    for slot in &mut held {
        *slot = must!(zone.alloc(), "PAC zone alloc");
    }
    for p in held {
        // SAFETY: allocated above, freed once.
        must!(unsafe { zone.free(p) }, "PAC zone free");
    }
    for slot in &mut held {
        *slot = must!(zone.alloc(), "PAC zone realloc");
    }
    for p in held {
        // SAFETY: allocated above, freed once.
        must!(unsafe { zone.free(p) }, "PAC zone free");
    }
    // `held[3]` was freed last: it heads the freelist and its first word links to `held[2]`.
    let top = held[3].as_ptr().cast::<u64>();
    // SAFETY: the zone's freed element, still zone memory; reading its link word.
    let link = unsafe { top.read() };
    let target = held[2].as_ptr() as u64;
    ensure!(
        link != target,
        "the stored link {link:#x} carries no authentication code (target {target:#x})"
    );
    // Forge it: point it at `held[1]` (another free element) keeping the old code bits.
    let forged =
        (link & !0x0000_ffff_ffff_ffff) | (held[1].as_ptr() as u64 & 0x0000_ffff_ffff_ffff);
    // SAFETY: deliberately corrupts the freed element's link word.
    unsafe { top.write(forged) };
    // The zone checks the head's own link before handing the head out: refused at once.
    expect_violation(
        zone.alloc(),
        ViolationKind::FreelistCorrupted,
        "forged signed link",
    );
    pass(
        "zone-pac",
        format_args!(
            "freelist links signed with PACDA (stored {link:#x} for {target:#x}); a forged \
             link ({forged:#x}) was refused before its element was handed out"
        ),
    );
}
