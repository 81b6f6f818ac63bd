//! kalloc: size classes from 16 bytes to 32 KiB, each a zone, routing any `Layout`; larger
//! requests go straight to the page source.

use core::alloc::Layout;
use core::fmt;
use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};

use machvm_sync::Mutex;
use machvm_sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::cpu::CpuLocal;
use crate::error::ZoneError;
use crate::pac::PacKeys;
use crate::source::{PageSource, PageSourceError};
use crate::stats::ZoneStats;
use crate::zone::{MAX_NAME, Zone, ZoneConfig, ZoneFlags, ZoneName};

/// The size classes (XNU's kalloc classes, with the arm64 ones up to 32 KiB): two per power of
/// two from 32 bytes on.
pub const KALLOC_CLASSES: [usize; 22] = [
    16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192,
    12288, 16384, 24576, 32768,
];

/// The largest request served by a zone; larger ones go to the page source.
pub const KALLOC_MAX: usize = 32768;

/// Class index for every size up to 1024 in 16-byte steps: `SMALL[(size + 15) / 16]`.
const SMALL: [u8; 65] = {
    let mut table = [0u8; 65];
    let mut i = 0;
    while i < 65 {
        let size = if i == 0 { 1 } else { i * 16 };
        let mut c = 0;
        while KALLOC_CLASSES[c] < size {
            c += 1;
        }
        table[i] = c as u8;
        i += 1;
    }
    table
};

/// Returns the index of the class serving `size` bytes aligned to `align`, or `None` when the
/// request goes to the page source.
#[inline]
fn class_of(size: usize, align: usize, page: usize) -> Option<usize> {
    if align <= 16 {
        if size <= 1024 {
            return SMALL.get(size.div_ceil(16)).map(|&c| usize::from(c));
        }
        return KALLOC_CLASSES.iter().position(|&c| c >= size);
    }
    if align > page {
        return None;
    }
    // Over-aligned: a power-of-two class at least as large as the alignment; its elements are
    // aligned to their size (up to the page size).
    let need = size.max(align);
    KALLOC_CLASSES
        .iter()
        .position(|&c| c >= need && c.is_power_of_two())
}

/// Counters of the requests that bypass the zones.
#[derive(Debug, Default)]
struct LargeCounters {
    count: AtomicU64,
    live: AtomicUsize,
    bytes: AtomicUsize,
    peak_bytes: AtomicUsize,
}

/// Statistics of the large (page-source) allocations of a [`Kalloc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct LargeStats {
    /// Large allocations since the heap was created.
    pub alloc_count: u64,
    /// Large allocations not freed.
    pub live: usize,
    /// Bytes they hold (rounded up to pages).
    pub bytes: usize,
    /// The most bytes they ever held.
    pub peak_bytes: usize,
}

/// A kalloc heap: one zone per size class over one page source.
///
/// # Examples
///
/// ```
/// use core::alloc::Layout;
/// use machvm_zone_alloc::{Kalloc, NoCpuCache, SystemPages};
///
/// let pages = SystemPages::new();
/// let heap: Kalloc<'_, _, _, 2> = Kalloc::new("kalloc", &pages, &NoCpuCache, 0x5eed)?;
/// let layout = Layout::from_size_align(100, 8).unwrap();
/// let p = heap.alloc(layout)?;
/// // 100 bytes come from the 128-byte class; growing to 120 stays in place.
/// // SAFETY: `p` is a live block of `layout` from this heap.
/// let q = unsafe { heap.realloc(p, layout, 120)? };
/// assert_eq!(p, q);
/// // SAFETY: `q` is live with 120 bytes, alignment 8.
/// unsafe { heap.free(q, Layout::from_size_align(120, 8).unwrap()) };
/// # Ok::<(), machvm_zone_alloc::ZoneError>(())
/// ```
pub struct Kalloc<'a, S: PageSource, C: CpuLocal, const CPUS: usize> {
    name: ZoneName,
    zones: [Zone<&'a S, &'a C, CPUS>; KALLOC_CLASSES.len()],
    source: &'a S,
    large: LargeCounters,
    /// Large blocks, when the heap tracks them (malloc zones free them all on destruction).
    tracked: Option<Mutex<LargeList>>,
}

/// The header in front of a tracked large block (in its last 64 bytes before the block).
#[repr(C)]
struct LargeHeader {
    prev: *mut LargeHeader,
    next: *mut LargeHeader,
    bytes: usize,
    align: usize,
    /// Bytes from the allocation's start to the block.
    offset: usize,
}

/// Bytes in front of a tracked block reserved for its header (at least the block alignment).
const LARGE_HEADER: usize = 64;

/// The list of tracked large blocks.
struct LargeList(*mut LargeHeader);

// SAFETY: the list's headers live in blocks the heap owns, reached only under its mutex.
unsafe impl Send for LargeList {}

impl<S: PageSource, C: CpuLocal, const CPUS: usize> fmt::Debug for Kalloc<'_, S, C, CPUS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kalloc")
            .field("classes", &KALLOC_CLASSES.len())
            .field("large", &self.large_stats())
            .finish_non_exhaustive()
    }
}

/// Writes `<prefix>.<size>` into a name buffer, truncating the prefix to fit [`MAX_NAME`].
fn class_name(buf: &mut [u8; MAX_NAME], prefix: &str, size: usize) -> usize {
    let mut digits = [0u8; 20];
    let digits = crate::stats::decimal(&mut digits, size);
    let len = digits.len();
    // Keep the prefix on a character boundary.
    let mut keep = prefix.len().min(MAX_NAME - 1 - len);
    while !prefix.is_char_boundary(keep) {
        keep -= 1;
    }
    buf[..keep].copy_from_slice(&prefix.as_bytes()[..keep]);
    buf[keep] = b'.';
    buf[keep + 1..keep + 1 + len].copy_from_slice(digits);
    keep + 1 + len
}

impl<'a, S: PageSource, C: CpuLocal, const CPUS: usize> Kalloc<'a, S, C, CPUS> {
    /// Creates a heap named `name` (its zones are `name.16` … `name.32768`, the prefix
    /// shortened to fit [`MAX_NAME`]) with the build's default flags
    /// ([`ZoneFlags::BUILD_DEFAULT`]).
    ///
    /// # Errors
    ///
    /// [`ZoneError::BadConfig`] if the page source's page size is below 4096 or `name` is
    /// longer than [`MAX_NAME`] bytes.
    pub fn new(name: &str, source: &'a S, cpu: &'a C, secret: usize) -> Result<Self, ZoneError> {
        Self::with_flags(name, source, cpu, secret, ZoneFlags::BUILD_DEFAULT)
    }

    /// Creates a heap whose zones use `flags`.
    ///
    /// # Errors
    ///
    /// As for [`new`](Self::new).
    pub fn with_flags(
        name: &str,
        source: &'a S,
        cpu: &'a C,
        secret: usize,
        flags: ZoneFlags,
    ) -> Result<Self, ZoneError> {
        Self::build(name, source, cpu, secret, flags, None)
    }

    /// Creates a heap whose zones use `flags` and sign their freelist links with pointer
    /// authentication (see [`ZoneConfig::pac_freelist`]).
    ///
    /// # Errors
    ///
    /// As for [`new`](Self::new).
    pub fn with_pac(
        name: &str,
        source: &'a S,
        cpu: &'a C,
        secret: usize,
        flags: ZoneFlags,
        keys: PacKeys,
    ) -> Result<Self, ZoneError> {
        Self::build(name, source, cpu, secret, flags, Some(keys))
    }

    fn build(
        name: &str,
        source: &'a S,
        cpu: &'a C,
        secret: usize,
        flags: ZoneFlags,
        pac: Option<PacKeys>,
    ) -> Result<Self, ZoneError> {
        let page = source.page_size();
        if page < 4096 {
            return Err(ZoneError::BadConfig);
        }
        let heap_name = ZoneName::new(name).ok_or(ZoneError::BadConfig)?;
        type Z<'a, S, C, const CPUS: usize> = Zone<&'a S, &'a C, CPUS>;
        const N: usize = KALLOC_CLASSES.len();
        let mut zones: [MaybeUninit<Z<'a, S, C, CPUS>>; N] = [const { MaybeUninit::uninit() }; N];
        for (i, (slot, &size)) in zones.iter_mut().zip(&KALLOC_CLASSES).enumerate() {
            let align = if size.is_power_of_two() {
                size.min(page)
            } else {
                16
            };
            let mut buf = [0u8; MAX_NAME];
            let len = class_name(&mut buf, name, size);
            let zone_name = core::str::from_utf8(&buf[..len]).unwrap_or("kalloc");
            let mut config = ZoneConfig::new(zone_name, size)
                .align(align)
                .flags(flags)
                .secret(secret);
            if let Some(keys) = pac {
                config = config.pac_freelist(keys);
            }
            match Zone::new(config, source, cpu) {
                Ok(zone) => {
                    slot.write(zone);
                }
                Err(e) => {
                    for done in &mut zones[..i] {
                        // SAFETY: slots before `i` were written above and are dropped once.
                        unsafe { done.assume_init_drop() };
                    }
                    return Err(e);
                }
            }
        }
        // SAFETY: the loop wrote all `N` slots (it returns early otherwise), and
        // `[MaybeUninit<T>; N]` has the layout of `[T; N]`; `MaybeUninit` never drops its
        // contents, so the zones are owned once, by the array read here.
        let zones = unsafe { ptr::read(zones.as_ptr().cast::<[Z<'a, S, C, CPUS>; N]>()) };
        Ok(Self {
            name: heap_name,
            zones,
            source,
            large: LargeCounters::default(),
            tracked: None,
        })
    }

    /// Returns the zone serving `layout`, or `None` for large requests.
    #[inline]
    fn zone_for(&self, layout: Layout) -> Option<&Zone<&'a S, &'a C, CPUS>> {
        class_of(layout.size(), layout.align(), self.source.page_size())
            .and_then(|c| self.zones.get(c))
    }

    /// Returns the bytes and alignment a large request takes from the page source, and the
    /// offset of the block in it (room for the header when large blocks are tracked).
    fn large_layout(&self, layout: Layout) -> Option<(usize, usize, usize)> {
        let page = self.source.page_size();
        let offset = if self.tracked.is_some() {
            layout.align().max(LARGE_HEADER)
        } else {
            0
        };
        let bytes = layout
            .size()
            .max(1)
            .checked_add(offset)?
            .checked_next_multiple_of(page)?;
        Some((bytes, layout.align().max(page), offset))
    }

    /// Makes the heap remember its large blocks, so that dropping it frees them too (malloc
    /// zones). Costs a header of at least 64 bytes (the block's alignment) per large block.
    #[must_use]
    pub fn tracking_large_blocks(mut self) -> Self {
        self.tracked = Some(Mutex::new(LargeList(ptr::null_mut())));
        self
    }

    /// Allocates a block for `layout`.
    ///
    /// # Errors
    ///
    /// [`ZoneError::LimitReached`] / [`ZoneError::Source`] when no memory is left (the
    /// heap is unchanged), [`ZoneError::Violation`] if a corrupt free element was found and the
    /// handler returned, [`ZoneError::BadConfig`] for a size that overflows when rounded up.
    ///
    /// When the page source is out of memory, every zone's depot is drained (its cached
    /// elements go back to their chunks, empty chunks to the source) and the allocation is
    /// tried once more.
    #[inline]
    pub fn alloc(&self, layout: Layout) -> Result<NonNull<u8>, ZoneError> {
        let result = match self.zone_for(layout) {
            Some(zone) => zone.alloc(),
            None => self.alloc_large(layout),
        };
        match result {
            Err(ZoneError::Source(PageSourceError::Exhausted)) => {
                self.alloc_after_drain(layout, result)
            }
            other => other,
        }
    }

    /// The page source failed: give the zones' cached memory back and try again.
    #[cold]
    #[inline(never)]
    fn alloc_after_drain(
        &self,
        layout: Layout,
        failed: Result<NonNull<u8>, ZoneError>,
    ) -> Result<NonNull<u8>, ZoneError> {
        if self.drain() == 0 {
            return failed;
        }
        match self.zone_for(layout) {
            Some(zone) => zone.alloc(),
            None => self.alloc_large(layout),
        }
    }

    #[cold]
    fn alloc_large(&self, layout: Layout) -> Result<NonNull<u8>, ZoneError> {
        let (bytes, align, offset) = self.large_layout(layout).ok_or(ZoneError::BadConfig)?;
        let base = self.source.allocate(bytes, align)?;
        // The block comes back with the caller's (narrower) provenance; the header in front
        // of it is reached through the exposed one (see `free_large`).
        let _ = base.as_ptr().expose_provenance();
        // SAFETY: `offset < bytes`, so the block starts inside the allocation.
        let p = unsafe { base.add(offset) };
        if let Some(list) = &self.tracked {
            let header = p.as_ptr().wrapping_sub(LARGE_HEADER).cast::<LargeHeader>();
            let mut list = list.lock();
            // SAFETY: `offset >= LARGE_HEADER`, so the header lies inside the allocation, and
            // `offset` is a multiple of 64 (a power of two at least 64), so it is aligned.
            unsafe {
                header.write(LargeHeader {
                    prev: ptr::null_mut(),
                    next: list.0,
                    bytes,
                    align,
                    offset,
                });
                if !list.0.is_null() {
                    (*list.0).prev = header;
                }
            }
            list.0 = header;
        }
        self.large.count.fetch_add(1, Ordering::Relaxed);
        self.large.live.fetch_add(1, Ordering::Relaxed);
        let now = self.large.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.large.peak_bytes.fetch_max(now, Ordering::Relaxed);
        Ok(p)
    }

    /// Frees a block.
    ///
    /// # Safety
    ///
    /// `ptr` was returned by this heap for `layout` (or by [`realloc`](Self::realloc) with
    /// `layout.size()` as the new size) and is not used afterwards.
    #[inline]
    pub unsafe fn free(&self, ptr: NonNull<u8>, layout: Layout) {
        match self.zone_for(layout) {
            // A violation was reported to the zone's handler; the block is left alone.
            // SAFETY: the caller's contract: `ptr` is a live element of this class's zone, and
            // the caller's pointer covers `layout.size()` bytes of it.
            Some(zone) => drop(unsafe { zone.free_sized(ptr, layout.size()) }),
            // SAFETY: as above, for a large block.
            None => unsafe { self.free_large(ptr, layout) },
        }
    }

    /// # Safety
    ///
    /// `ptr` is a live large block of `layout`.
    #[cold]
    unsafe fn free_large(&self, ptr: NonNull<u8>, layout: Layout) {
        if let Some((bytes, align, offset)) = self.large_layout(layout) {
            if let Some(list) = &self.tracked {
                let header = ptr
                    .as_ptr()
                    .wrapping_sub(LARGE_HEADER)
                    .cast::<LargeHeader>();
                let mut list = list.lock();
                // SAFETY: the header was written by `alloc_large` and is on the list.
                unsafe {
                    let (prev, next) = ((*header).prev, (*header).next);
                    if prev.is_null() {
                        list.0 = next;
                    } else {
                        (*prev).next = next;
                    }
                    if !next.is_null() {
                        (*next).prev = prev;
                    }
                }
            }
            // SAFETY: the block came from `allocate(bytes, align)` at `ptr - offset` (the same
            // computation).
            unsafe {
                self.source.deallocate(
                    NonNull::new_unchecked(ptr.as_ptr().wrapping_sub(offset)),
                    bytes,
                    align,
                );
            }
            self.large.live.fetch_sub(1, Ordering::Relaxed);
            self.large.bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// Resizes a block to `new_size` bytes (same alignment): in place when the new size is
    /// served by the same class (or the same number of pages), else by allocating, copying and
    /// freeing.
    ///
    /// # Safety
    ///
    /// As for [`free`](Self::free); after success only the returned pointer may be used.
    ///
    /// # Errors
    ///
    /// As for [`alloc`](Self::alloc); on error the old block is untouched and still live.
    pub unsafe fn realloc(
        &self,
        ptr: NonNull<u8>,
        layout: Layout,
        new_size: usize,
    ) -> Result<NonNull<u8>, ZoneError> {
        let new_layout =
            Layout::from_size_align(new_size, layout.align()).map_err(|_| ZoneError::BadConfig)?;
        let page = self.source.page_size();
        let old_class = class_of(layout.size(), layout.align(), page);
        let new_class = class_of(new_size, layout.align(), page);
        let same = match (old_class, new_class) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.large_layout(layout) == self.large_layout(new_layout),
            _ => false,
        };
        if same {
            return Ok(ptr);
        }
        let new = self.alloc(new_layout)?;
        // SAFETY: both blocks are live, distinct, and at least `min(old, new)` bytes long.
        unsafe {
            core::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), layout.size().min(new_size));
            self.free(ptr, layout);
        }
        Ok(new)
    }

    /// Returns the heap's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// Returns whether blocks of `layout` come from a zone (rather than straight from the page
    /// source).
    pub fn zone_backed(&self, layout: Layout) -> bool {
        self.zone_for(layout).is_some()
    }

    /// Returns the bytes a block of `layout` really occupies (its class size, or its pages):
    /// what `realloc` can grow to in place.
    pub fn usable_size(&self, layout: Layout) -> usize {
        match class_of(layout.size(), layout.align(), self.source.page_size()) {
            Some(c) => KALLOC_CLASSES[c],
            None => self
                .large_layout(layout)
                .map_or(0, |(bytes, _, offset)| bytes - offset),
        }
    }

    /// Returns the statistics of every class zone, smallest class first.
    pub fn zone_stats(&self) -> impl Iterator<Item = ZoneStats> + '_ {
        self.zones.iter().map(Zone::stats)
    }

    /// Returns the statistics of the large allocations.
    pub fn large_stats(&self) -> LargeStats {
        LargeStats {
            alloc_count: self.large.count.load(Ordering::Relaxed),
            live: self.large.live.load(Ordering::Relaxed),
            bytes: self.large.bytes.load(Ordering::Relaxed),
            peak_bytes: self.large.peak_bytes.load(Ordering::Relaxed),
        }
    }

    /// Returns the zones (for `zprint`, draining under pressure, or `require`).
    pub fn zones(&self) -> &[Zone<&'a S, &'a C, CPUS>] {
        &self.zones
    }

    /// Drains every zone's depot and gives every empty chunk back; returns the bytes given
    /// back.
    pub fn drain(&self) -> usize {
        self.zones.iter().map(Zone::drain).sum()
    }

    /// Caps every zone's depot at `bytes` of free elements, or lifts the caps (`None`): see
    /// [`Zone::set_depot_limit`]. A heap whose owner never runs the zone GC
    /// ([`trim`](Self::trim)) bounds what its zones keep cached this way.
    pub fn set_depot_limit(&self, bytes: Option<usize>) {
        for zone in &self.zones {
            zone.set_depot_limit(bytes);
        }
    }

    /// Trims every zone ([`Zone::trim`], keeping no empty chunk): the periodic zone GC, which
    /// shrinks each depot to its working set; returns the bytes given back.
    pub fn trim(&self) -> usize {
        self.zones.iter().map(|z| z.trim(0)).sum()
    }

    /// Returns the calling CPU's cached elements of every zone to their chunks.
    pub fn drain_cpu_cache(&self) {
        for z in &self.zones {
            z.drain_cpu_cache();
        }
    }
}

impl<S: PageSource, C: CpuLocal, const CPUS: usize> crate::leaks::LeakScan
    for Kalloc<'_, S, C, CPUS>
{
    unsafe fn for_each_allocated(&self, f: &mut dyn FnMut(&str, usize, usize)) {
        for zone in &self.zones {
            // SAFETY: the caller's contract covers every zone of the heap.
            unsafe { crate::leaks::LeakScan::for_each_allocated(zone, f) };
        }
        if let Some(list) = &self.tracked {
            let list = list.lock();
            let mut h = list.0;
            while !h.is_null() {
                // SAFETY: tracked headers are live while on the list (under its lock).
                unsafe {
                    let block = h.cast::<u8>().wrapping_add(LARGE_HEADER) as usize;
                    f(self.name.as_str(), block, (*h).bytes - (*h).offset);
                    h = (*h).next;
                }
            }
        }
    }
}

impl<S: PageSource, C: CpuLocal, const CPUS: usize> Drop for Kalloc<'_, S, C, CPUS> {
    fn drop(&mut self) {
        if let Some(list) = &mut self.tracked {
            let mut h = list.get_mut().0;
            while !h.is_null() {
                // SAFETY: tracked headers sit `LARGE_HEADER` bytes before their block, which
                // lies `offset` bytes into an allocation of `bytes` bytes aligned to `align`;
                // the heap is going away, so no block is used any more.
                unsafe {
                    let next = (*h).next;
                    let (bytes, align, offset) = ((*h).bytes, (*h).align, (*h).offset);
                    let block = h.cast::<u8>().wrapping_add(LARGE_HEADER);
                    let base = block.wrapping_sub(offset);
                    self.source
                        .deallocate(NonNull::new_unchecked(base), bytes, align);
                    h = next;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(
        miri,
        ignore = "32768 sizes are slow under miri and involve no unsafe code"
    )]
    fn classes_cover_every_size_with_the_smallest_fit() {
        for size in 1..=KALLOC_MAX {
            let c = class_of(size, 8, 4096).unwrap();
            assert!(KALLOC_CLASSES[c] >= size);
            if c > 0 {
                assert!(KALLOC_CLASSES[c - 1] < size, "size {size}");
            }
        }
        assert_eq!(class_of(KALLOC_MAX + 1, 8, 4096), None);
        assert_eq!(class_of(0, 1, 4096), Some(0));
    }

    #[test]
    fn over_aligned_requests_use_power_of_two_classes() {
        assert_eq!(KALLOC_CLASSES[class_of(40, 64, 4096).unwrap()], 64);
        assert_eq!(KALLOC_CLASSES[class_of(100, 128, 4096).unwrap()], 128);
        assert_eq!(KALLOC_CLASSES[class_of(5000, 4096, 4096).unwrap()], 8192);
        assert_eq!(class_of(64, 8192, 4096), None);
    }

    #[test]
    fn class_names_fit_and_truncate() {
        let mut buf = [0u8; MAX_NAME];
        let n = class_name(&mut buf, "kalloc", 32768);
        assert_eq!(&buf[..n], b"kalloc.32768");
        let long = "a-very-long-malloc-zone-name-indeed";
        let n = class_name(&mut buf, long, 16);
        assert_eq!(n, MAX_NAME);
        assert!(buf[..n].ends_with(b".16"));
    }
}
