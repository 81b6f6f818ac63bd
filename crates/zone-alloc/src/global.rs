//! [`GlobalKalloc`]: a kalloc heap as the program's `#[global_allocator]`.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::fmt;
use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};
// A plain `core` atomic even under loom: the heap is built once, in a `static`.
use core::sync::atomic::{AtomicU8, Ordering};

use crate::cpu::CpuLocal;
use crate::kalloc::Kalloc;
use crate::pac::PacKeys;
use crate::source::PageSource;
use crate::zone::ZoneFlags;

const UNINIT: u8 = 0;
const BUILDING: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;

/// A [`Kalloc`] heap usable as `#[global_allocator]`, built on first use.
///
/// The page source and the CPU provider are `'static` references (kernel statics). Allocation
/// failures return null, never panic, so `Vec::try_reserve` and friends work on top of it.
/// A hardening violation calls the zones' handler (by default a panic).
///
/// # Examples
///
/// ```
/// use core::alloc::{GlobalAlloc, Layout};
/// use machvm_zone_alloc::{GlobalKalloc, NoCpuCache, SystemPages};
///
/// static PAGES: SystemPages = SystemPages::new();
/// // In a kernel: `#[global_allocator] static HEAP: GlobalKalloc<…> = …;`
/// static HEAP: GlobalKalloc<SystemPages, NoCpuCache, 8> =
///     GlobalKalloc::new(&PAGES, &NoCpuCache, 0x243f_6a88_85a3_08d3);
///
/// let layout = Layout::from_size_align(24, 8).unwrap();
/// // SAFETY: `layout` has a non-zero size.
/// let p = unsafe { HEAP.alloc(layout) };
/// assert!(!p.is_null());
/// // SAFETY: `p` came from `HEAP.alloc(layout)`.
/// unsafe { HEAP.dealloc(p, layout) };
/// ```
pub struct GlobalKalloc<S: PageSource + 'static, C: CpuLocal + 'static, const CPUS: usize> {
    source: &'static S,
    cpu: &'static C,
    secret: usize,
    flags: ZoneFlags,
    pac: Option<PacKeys>,
    state: AtomicU8,
    heap: UnsafeCell<MaybeUninit<Kalloc<'static, S, C, CPUS>>>,
}

// SAFETY: the heap cell is written once, by the thread that moves `state` from UNINIT to
// BUILDING, and published with a Release store of READY; every other access reads it after an
// Acquire load of READY, through `&Kalloc`, which is `Sync` when its zones are (same bounds).
unsafe impl<S: PageSource + Sync + 'static, C: CpuLocal + Sync + 'static, const CPUS: usize> Sync
    for GlobalKalloc<S, C, CPUS>
{
}

impl<S: PageSource + 'static, C: CpuLocal + 'static, const CPUS: usize> fmt::Debug
    for GlobalKalloc<S, C, CPUS>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlobalKalloc")
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<S: PageSource + 'static, C: CpuLocal + 'static, const CPUS: usize> GlobalKalloc<S, C, CPUS> {
    /// A heap over `source` and `cpu` with the build's default zone flags, built on first use
    /// (its zones are named `kalloc.16` … `kalloc.32768`).
    pub const fn new(source: &'static S, cpu: &'static C, secret: usize) -> Self {
        Self::with_flags(source, cpu, secret, ZoneFlags::BUILD_DEFAULT)
    }

    /// A heap whose zones use `flags`.
    pub const fn with_flags(
        source: &'static S,
        cpu: &'static C,
        secret: usize,
        flags: ZoneFlags,
    ) -> Self {
        Self {
            source,
            cpu,
            secret,
            flags,
            pac: None,
            state: AtomicU8::new(UNINIT),
            heap: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Makes the heap's zones sign their freelist links with pointer authentication (see
    /// [`ZoneConfig::pac_freelist`](crate::ZoneConfig::pac_freelist)).
    #[must_use]
    pub const fn pac_freelist(mut self, keys: PacKeys) -> Self {
        self.pac = Some(keys);
        self
    }

    /// Returns the heap, building it if this is the first use; `None` if it cannot be built
    /// (a page source with pages below 4 KiB).
    pub fn heap(&self) -> Option<&Kalloc<'static, S, C, CPUS>> {
        loop {
            match self.state.load(Ordering::Acquire) {
                // SAFETY: READY is stored (Release) only after the cell was written; it is
                // never written again.
                READY => return Some(unsafe { (*self.heap.get()).assume_init_ref() }),
                FAILED => return None,
                UNINIT => {
                    if self
                        .state
                        .compare_exchange(UNINIT, BUILDING, Ordering::Acquire, Ordering::Acquire)
                        .is_ok()
                    {
                        // Building allocates nothing (zones take pages on first allocation),
                        // so it cannot recurse into this allocator.
                        let built = match self.pac {
                            Some(keys) => Kalloc::with_pac(
                                "kalloc",
                                self.source,
                                self.cpu,
                                self.secret,
                                self.flags,
                                keys,
                            ),
                            None => Kalloc::with_flags(
                                "kalloc",
                                self.source,
                                self.cpu,
                                self.secret,
                                self.flags,
                            ),
                        };
                        match built {
                            Ok(heap) => {
                                // SAFETY: only the thread that won the CAS writes the cell, and
                                // no reader touches it before READY.
                                unsafe { (*self.heap.get()).write(heap) };
                                self.state.store(READY, Ordering::Release);
                            }
                            Err(_) => self.state.store(FAILED, Ordering::Release),
                        }
                    }
                }
                _ => core::hint::spin_loop(),
            }
        }
    }
}

// SAFETY: `alloc` returns null or a block of at least `layout.size()` bytes aligned to
// `layout.align()` that nothing else uses until `dealloc`; `dealloc`/`realloc` pass the
// caller's (GlobalAlloc-guaranteed) block and layout back to the heap that made it.
unsafe impl<S: PageSource + Sync + 'static, C: CpuLocal + Sync + 'static, const CPUS: usize>
    GlobalAlloc for GlobalKalloc<S, C, CPUS>
{
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.heap() {
            Some(heap) => heap.alloc(layout).map_or(ptr::null_mut(), NonNull::as_ptr),
            None => ptr::null_mut(),
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let (Some(heap), Some(ptr)) = (self.heap(), NonNull::new(ptr)) {
            // SAFETY: GlobalAlloc's contract: `ptr` came from this allocator with `layout`.
            unsafe { heap.free(ptr, layout) };
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { self.alloc(layout) };
        // Zone elements of a zeroing heap are zero when allocated; anything else (including
        // large blocks, which the page source need not zero) is zeroed here.
        let zeroed = self.flags.contains(ZoneFlags::ZERO_ON_FREE)
            && self.heap().is_some_and(|h| h.zone_backed(layout));
        if !p.is_null() && !zeroed {
            // SAFETY: `p` is a fresh block of at least `layout.size()` bytes.
            unsafe { ptr::write_bytes(p, 0, layout.size()) };
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match (self.heap(), NonNull::new(ptr)) {
            // SAFETY: GlobalAlloc's contract: `ptr` is live with `layout`; on error the old
            // block stays valid, as GlobalAlloc requires.
            (Some(heap), Some(p)) => unsafe { heap.realloc(p, layout, new_size) }
                .map_or(ptr::null_mut(), NonNull::as_ptr),
            _ => ptr::null_mut(),
        }
    }
}
