//! Malloc zones (the seed's `malloc_create_zone` API): named heaps created and destroyed at
//! run time, a default zone, and introspection.

use core::alloc::Layout;
use core::fmt;
use core::ptr::{self, NonNull};

use machvm_sync::Mutex;
use machvm_sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use crate::cpu::CpuLocal;
use crate::error::ZoneError;
use crate::kalloc::Kalloc;
use crate::source::PageSource;
use crate::zone::ZoneFlags;

/// The name of the zone every [`MallocZones`] starts with.
pub const DEFAULT_ZONE_NAME: &str = "DefaultMallocZone";

/// Alignment of every malloc-zone block (as `malloc` on 64-bit macOS).
pub const MALLOC_ALIGN: usize = 16;

/// Names one malloc zone of a [`MallocZones`]: a slot and the generation of the zone in it, so
/// an id kept after its zone was destroyed is refused rather than reaching a newer zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MallocZoneId {
    slot: u16,
    generation: u32,
}

/// The statistics of one malloc zone (the seed's `malloc_statistics_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MallocStats {
    /// Blocks allocated and not freed.
    pub blocks_in_use: usize,
    /// Bytes those blocks occupy (their class sizes, or their pages for large blocks).
    pub size_in_use: usize,
    /// Bytes the zone holds from the page source (chunks and large blocks).
    pub size_allocated: usize,
    /// The most bytes it ever held (per class, summed: an upper bound of the true peak).
    pub max_size_allocated: usize,
}

struct Slot<'a, S: PageSource, C: CpuLocal, const CPUS: usize> {
    heap: AtomicPtr<Kalloc<'a, S, C, CPUS>>,
    generation: AtomicU32,
}

/// A set of malloc zones over one page source: at most `MAX` live at once (`MAX` ≤ 65536).
///
/// Each zone is a complete [`Kalloc`] heap of its own (its class zones are named
/// `<zone name>.<size>`), placed in pages of the page source; destroying a zone gives all its
/// pages back.
///
/// # Examples
///
/// ```
/// use machvm_zone_alloc::{MallocZones, NoCpuCache, SystemPages, ZoneFlags};
///
/// let pages = SystemPages::new();
/// let zones: MallocZones<'_, _, _, 2, 8> =
///     MallocZones::new(&pages, &NoCpuCache, 0x5eed, ZoneFlags::HARDENED)?;
/// let images = zones.create("ImageIO")?;
/// let p = zones.malloc(images, 300)?;
/// assert_eq!(zones.statistics(images)?.blocks_in_use, 1);
/// let names: Vec<_> = zones.iter().map(|(_, heap)| heap.name().to_owned()).collect();
/// assert_eq!(names, ["DefaultMallocZone", "ImageIO"]);
/// // SAFETY: `p` is a live 300-byte block of `images`; nothing of the zone is used after.
/// unsafe {
///     zones.free(images, p, 300)?;
///     zones.destroy(images)?;
/// }
/// assert!(zones.malloc(images, 8).is_err());
/// # Ok::<(), machvm_zone_alloc::ZoneError>(())
/// ```
pub struct MallocZones<'a, S: PageSource, C: CpuLocal, const CPUS: usize, const MAX: usize> {
    source: &'a S,
    cpu: &'a C,
    secret: usize,
    flags: ZoneFlags,
    slots: [Slot<'a, S, C, CPUS>; MAX],
    /// Serialises `create` and `destroy`.
    admin: Mutex<()>,
}

// SAFETY: the heaps behind the slot pointers are owned by this value (pages of its source);
// they are reached through `&Kalloc`, which is `Sync` under these bounds, and created or
// destroyed under the admin lock (destroy additionally under its caller's contract).
unsafe impl<S: PageSource + Sync, C: CpuLocal + Sync, const CPUS: usize, const MAX: usize> Sync
    for MallocZones<'_, S, C, CPUS, MAX>
{
}
// SAFETY: as above; moving the set moves the ownership of its heaps.
unsafe impl<S: PageSource + Sync, C: CpuLocal + Sync, const CPUS: usize, const MAX: usize> Send
    for MallocZones<'_, S, C, CPUS, MAX>
{
}

impl<S: PageSource, C: CpuLocal, const CPUS: usize, const MAX: usize> fmt::Debug
    for MallocZones<'_, S, C, CPUS, MAX>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MallocZones")
            .field("zones", &self.iter().count())
            .finish_non_exhaustive()
    }
}

impl<'a, S: PageSource, C: CpuLocal, const CPUS: usize, const MAX: usize>
    MallocZones<'a, S, C, CPUS, MAX>
{
    /// Creates the set with its default zone ([`DEFAULT_ZONE_NAME`]); every zone's classes use
    /// `flags` and a secret derived from `secret`.
    ///
    /// # Errors
    ///
    /// [`ZoneError::BadConfig`] if `MAX` is 0 or above 65536 or the page size below 4096;
    /// [`ZoneError::Source`] if the default zone's pages cannot be allocated.
    pub fn new(
        source: &'a S,
        cpu: &'a C,
        secret: usize,
        flags: ZoneFlags,
    ) -> Result<Self, ZoneError> {
        if MAX == 0 || MAX > 1 << 16 {
            return Err(ZoneError::BadConfig);
        }
        let zones = Self {
            source,
            cpu,
            secret,
            flags,
            slots: core::array::from_fn(|_| Slot {
                heap: AtomicPtr::new(ptr::null_mut()),
                generation: AtomicU32::new(0),
            }),
            admin: Mutex::new(()),
        };
        zones.create(DEFAULT_ZONE_NAME)?;
        Ok(zones)
    }

    /// Returns the default zone.
    pub fn default_zone(&self) -> MallocZoneId {
        MallocZoneId {
            slot: 0,
            generation: self
                .slots
                .first()
                .map_or(0, |s| s.generation.load(Ordering::Acquire)),
        }
    }

    fn heap_layout() -> Option<(usize, usize)> {
        Some((
            size_of::<Kalloc<'a, S, C, CPUS>>(),
            align_of::<Kalloc<'a, S, C, CPUS>>(),
        ))
    }

    fn pages_for(&self) -> Option<(usize, usize)> {
        let page = self.source.page_size();
        let (size, align) = Self::heap_layout()?;
        Some((size.max(1).checked_next_multiple_of(page)?, align.max(page)))
    }

    /// Creates a zone named `name` (at most [`MAX_NAME`](crate::MAX_NAME) bytes).
    ///
    /// # Errors
    ///
    /// [`ZoneError::TooManyZones`] when all `MAX` slots are taken, [`ZoneError::BadConfig`] for
    /// a name that is too long, [`ZoneError::Source`] when the page source has no room for the
    /// zone's bookkeeping. Nothing changes on error.
    pub fn create(&self, name: &str) -> Result<MallocZoneId, ZoneError> {
        let _admin = self.admin.lock();
        let (index, slot) = self
            .slots
            .iter()
            .enumerate()
            .find(|(_, s)| s.heap.load(Ordering::Acquire).is_null())
            .ok_or(ZoneError::TooManyZones)?;
        let heap = Kalloc::with_flags(
            name,
            self.source,
            self.cpu,
            self.secret ^ index.wrapping_mul(0x9e37_79b9),
            self.flags,
        )?
        .tracking_large_blocks();
        let (bytes, align) = self.pages_for().ok_or(ZoneError::BadConfig)?;
        let mem = self.source.allocate(bytes, align)?;
        let place = mem.as_ptr().cast::<Kalloc<'a, S, C, CPUS>>();
        // SAFETY: `mem` is `bytes >= size_of::<Kalloc>()` writable bytes aligned to at least
        // `align_of::<Kalloc>()`, used by nothing else.
        unsafe { place.write(heap) };
        let generation = slot.generation.load(Ordering::Relaxed).wrapping_add(1);
        slot.generation.store(generation, Ordering::Release);
        slot.heap.store(place, Ordering::Release);
        Ok(MallocZoneId {
            // `MAX <= 65536`, checked in `new`.
            slot: index as u16,
            generation,
        })
    }

    /// Returns the heap of zone `id`.
    ///
    /// # Errors
    ///
    /// [`ZoneError::NoSuchZone`] if `id` names no live zone.
    pub fn zone(&self, id: MallocZoneId) -> Result<&Kalloc<'a, S, C, CPUS>, ZoneError> {
        let slot = self
            .slots
            .get(usize::from(id.slot))
            .ok_or(ZoneError::NoSuchZone)?;
        let heap = slot.heap.load(Ordering::Acquire);
        if heap.is_null() || slot.generation.load(Ordering::Acquire) != id.generation {
            return Err(ZoneError::NoSuchZone);
        }
        // SAFETY: a non-null slot pointer is a heap written by `create` and published with
        // Release; it stays valid until `destroy`, whose contract forbids concurrent use.
        Ok(unsafe { &*heap })
    }

    /// Destroys zone `id`: every block it handed out is freed at once and all its pages go back
    /// to the page source.
    ///
    /// # Safety
    ///
    /// No block of the zone and no reference obtained from [`zone`](Self::zone) or
    /// [`iter`](Self::iter) for it is used during or after the call, and no other thread uses
    /// the zone meanwhile (as with the seed's `malloc_destroy_zone`).
    ///
    /// # Errors
    ///
    /// [`ZoneError::NoSuchZone`] if `id` names no live zone; [`ZoneError::BadConfig`] for the
    /// default zone, which lives as long as the set.
    pub unsafe fn destroy(&self, id: MallocZoneId) -> Result<(), ZoneError> {
        let _admin = self.admin.lock();
        self.zone(id)?;
        if id.slot == 0 {
            return Err(ZoneError::BadConfig);
        }
        let slot = &self.slots[usize::from(id.slot)];
        let heap = slot.heap.swap(ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: `heap` is the live heap of the slot (checked above under the admin lock),
        // and the caller guarantees nobody uses it any more.
        unsafe { self.release(heap) };
        Ok(())
    }

    /// Drops a heap in place and gives its pages back.
    ///
    /// # Safety
    ///
    /// `heap` was written by `create` and is used by nothing any more.
    unsafe fn release(&self, heap: *mut Kalloc<'a, S, C, CPUS>) {
        if let (Some(p), Some((bytes, align))) = (NonNull::new(heap), self.pages_for()) {
            // SAFETY: the caller's guarantee; the pages came from `allocate(bytes, align)`.
            unsafe {
                ptr::drop_in_place(p.as_ptr());
                self.source.deallocate(p.cast(), bytes, align);
            }
        }
    }

    /// Returns every live zone with its id, default zone first.
    pub fn iter(&self) -> impl Iterator<Item = (MallocZoneId, &Kalloc<'a, S, C, CPUS>)> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, slot)| {
            let id = MallocZoneId {
                slot: i as u16,
                generation: slot.generation.load(Ordering::Acquire),
            };
            self.zone(id).ok().map(|heap| (id, heap))
        })
    }

    /// Returns the statistics of zone `id`.
    ///
    /// # Errors
    ///
    /// [`ZoneError::NoSuchZone`] if `id` names no live zone.
    pub fn statistics(&self, id: MallocZoneId) -> Result<MallocStats, ZoneError> {
        let heap = self.zone(id)?;
        let large = heap.large_stats();
        let mut stats = MallocStats {
            blocks_in_use: large.live,
            size_in_use: large.bytes,
            size_allocated: large.bytes,
            max_size_allocated: large.peak_bytes,
        };
        for z in heap.zone_stats() {
            stats.blocks_in_use += z.in_use;
            stats.size_in_use += z.in_use * z.element_size;
            stats.size_allocated += z.cur_size;
            stats.max_size_allocated += z.max_size;
        }
        Ok(stats)
    }

    /// Gives memory back to the page source, as the seed's `malloc_zone_pressure_relief`:
    /// from zone `id`, or from every zone with `None`, until at least `goal` bytes went back
    /// (0: as much as possible). Each size class is drained in turn ([`Zone::drain`]: its
    /// depot's elements back to their chunks, empty chunks and idle magazine pages to the
    /// source). Returns the bytes given back.
    ///
    /// [`Zone::drain`]: crate::Zone::drain
    ///
    /// # Errors
    ///
    /// [`ZoneError::NoSuchZone`] if `id` names no live zone.
    ///
    /// # Examples
    ///
    /// ```
    /// use machvm_zone_alloc::{MallocZones, NoCpuCache, SystemPages, ZoneFlags};
    ///
    /// let pages = SystemPages::new();
    /// let zones: MallocZones<'_, _, _, 1, 4> =
    ///     MallocZones::new(&pages, &NoCpuCache, 7, ZoneFlags::RELEASE_DEFAULT)?;
    /// let id = zones.default_zone();
    /// let blocks: Vec<_> = (0..1000).map(|_| zones.malloc(id, 100)).collect::<Result<_, _>>()?;
    /// for p in blocks {
    ///     // SAFETY: allocated above from `id` with size 100, freed once.
    ///     unsafe { zones.free(id, p, 100)? };
    /// }
    /// assert!(zones.pressure_relief(None, 0)? > 0);
    /// # Ok::<(), machvm_zone_alloc::ZoneError>(())
    /// ```
    pub fn pressure_relief(
        &self,
        id: Option<MallocZoneId>,
        goal: usize,
    ) -> Result<usize, ZoneError> {
        let mut released = 0;
        let mut relieve = |heap: &Kalloc<'a, S, C, CPUS>| {
            for zone in heap.zones() {
                if goal != 0 && released >= goal {
                    return;
                }
                released += zone.drain();
            }
        };
        match id {
            Some(id) => relieve(self.zone(id)?),
            None => self.iter().for_each(|(_, heap)| relieve(heap)),
        }
        Ok(released)
    }

    fn layout(size: usize) -> Result<Layout, ZoneError> {
        Layout::from_size_align(size, MALLOC_ALIGN).map_err(|_| ZoneError::BadConfig)
    }

    /// Allocates `size` bytes (16-byte aligned) from zone `id`.
    ///
    /// # Errors
    ///
    /// [`ZoneError::NoSuchZone`], or the errors of [`Kalloc::alloc`].
    pub fn malloc(&self, id: MallocZoneId, size: usize) -> Result<NonNull<u8>, ZoneError> {
        self.zone(id)?.alloc(Self::layout(size)?)
    }

    /// Allocates `count * size` zeroed bytes from zone `id`.
    ///
    /// # Errors
    ///
    /// [`ZoneError::BadConfig`] if the product overflows, else as for
    /// [`malloc`](Self::malloc).
    pub fn calloc(
        &self,
        id: MallocZoneId,
        count: usize,
        size: usize,
    ) -> Result<NonNull<u8>, ZoneError> {
        let bytes = count.checked_mul(size).ok_or(ZoneError::BadConfig)?;
        let p = self.malloc(id, bytes)?;
        // SAFETY: a fresh block of `bytes` bytes.
        unsafe { ptr::write_bytes(p.as_ptr(), 0, bytes) };
        Ok(p)
    }

    /// Frees a block of zone `id`.
    ///
    /// # Safety
    ///
    /// `ptr` was returned by this zone for `size` bytes (by `malloc`, `calloc` or `realloc`)
    /// and is not used afterwards.
    ///
    /// # Errors
    ///
    /// [`ZoneError::NoSuchZone`] (nothing is freed).
    pub unsafe fn free(
        &self,
        id: MallocZoneId,
        ptr: NonNull<u8>,
        size: usize,
    ) -> Result<(), ZoneError> {
        let heap = self.zone(id)?;
        // SAFETY: the caller's contract.
        unsafe { heap.free(ptr, Self::layout(size)?) };
        Ok(())
    }

    /// Resizes a block of zone `id` (in place within its class).
    ///
    /// # Safety
    ///
    /// As for [`free`](Self::free) with `old_size`.
    ///
    /// # Errors
    ///
    /// [`ZoneError::NoSuchZone`], or the errors of [`Kalloc::realloc`] (the old block stays
    /// live).
    pub unsafe fn realloc(
        &self,
        id: MallocZoneId,
        ptr: NonNull<u8>,
        old_size: usize,
        new_size: usize,
    ) -> Result<NonNull<u8>, ZoneError> {
        let heap = self.zone(id)?;
        // SAFETY: the caller's contract.
        unsafe { heap.realloc(ptr, Self::layout(old_size)?, new_size) }
    }
}

impl<S: PageSource, C: CpuLocal, const CPUS: usize, const MAX: usize> Drop
    for MallocZones<'_, S, C, CPUS, MAX>
{
    fn drop(&mut self) {
        for i in 0..MAX {
            let heap = self.slots[i].heap.swap(ptr::null_mut(), Ordering::AcqRel);
            // SAFETY: the set is going away, so nothing uses its heaps any more.
            unsafe { self.release(heap) };
        }
    }
}
