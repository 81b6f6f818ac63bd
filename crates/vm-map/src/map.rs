//! `VmMap`: the entries of one address space and the operations that change them (enter,
//! remove, protect, inherit).

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Bound;

use machvm_addr::{PageSize, VaWidth, VirtAddr, VmProt};
use machvm_vm_object::{CopyStrategy, MapperMark, ObjectKind, ObjectRef, PageMemory, VmObject};

use crate::entry::{Inheritance, VmMapEntry, VmTag};
use crate::fault::CollapseHint;
use crate::placement::{FirstFit, Gap, Placement};
use crate::{MapError, Pmap};

/// Where a new mapping goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// Anywhere it fits, chosen by a [`Placement`] (first fit by default).
    Anywhere,
    /// Exactly at this address; fails if anything is mapped there (`VM_FLAGS_FIXED`).
    Fixed(VirtAddr),
    /// Exactly at this address, replacing whatever is mapped there
    /// (`VM_FLAGS_FIXED | VM_FLAGS_OVERWRITE`, `MAP_FIXED`).
    Overwrite(VirtAddr),
}

/// What a new mapping shows.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Backing {
    /// New anonymous memory (zero-filled on demand, private).
    Anonymous,
    /// A window of an existing object, shared: writes go to the object and are seen by every
    /// other mapping of it (`MAP_SHARED`). An anonymous object mapped this way switches from
    /// symmetric to delayed copies ("true share"), so a later fork copies it correctly
    /// although its sharers write it directly.
    Shared {
        /// The object.
        object: ObjectRef,
        /// Offset of the mapping's first page in the object.
        offset: u64,
    },
    /// A window of an existing object, copy on write: the first write to a page gives the
    /// mapping its own copy (`MAP_PRIVATE`). Pages not written yet show the object's current
    /// contents, read when first touched.
    Private {
        /// The object.
        object: ObjectRef,
        /// Offset of the mapping's first page in the object.
        offset: u64,
    },
}

/// A request for a new mapping ([`VmMap::enter`]), built with chained setters.
///
/// Defaults: anywhere, page alignment, no guard gap, current protection read/write, maximum
/// read/write/execute, inheritance copy, tag [`VmTag::NONE`].
#[derive(Clone, Debug)]
#[must_use]
pub struct MapRequest {
    pub(crate) size: u64,
    pub(crate) location: Location,
    pub(crate) align_mask: u64,
    pub(crate) guard: u64,
    pub(crate) protection: VmProt,
    pub(crate) max_protection: VmProt,
    pub(crate) inheritance: Inheritance,
    pub(crate) tag: VmTag,
    pub(crate) backing: Backing,
}

impl MapRequest {
    fn new(size: u64, backing: Backing) -> Self {
        Self {
            size,
            location: Location::Anywhere,
            align_mask: 0,
            guard: 0,
            protection: VmProt::DEFAULT,
            max_protection: VmProt::ALL,
            inheritance: Inheritance::Copy,
            tag: VmTag::NONE,
            backing,
        }
    }

    /// `size` bytes of new anonymous memory.
    pub fn anonymous(size: u64) -> Self {
        Self::new(size, Backing::Anonymous)
    }

    /// `size` bytes of `object` from `offset`, shared with every other mapping of it.
    pub fn shared(object: ObjectRef, offset: u64, size: u64) -> Self {
        Self::new(size, Backing::Shared { object, offset })
    }

    /// `size` bytes of `object` from `offset`, copy on write.
    pub fn private(object: ObjectRef, offset: u64, size: u64) -> Self {
        Self::new(size, Backing::Private { object, offset })
    }

    /// Places the mapping at `location`.
    pub fn location(mut self, location: Location) -> Self {
        self.location = location;
        self
    }

    /// Places the mapping exactly at `addr` (fails if occupied).
    pub fn fixed(self, addr: VirtAddr) -> Self {
        self.location(Location::Fixed(addr))
    }

    /// Places the mapping exactly at `addr`, replacing what is there.
    pub fn overwrite(self, addr: VirtAddr) -> Self {
        self.location(Location::Overwrite(addr))
    }

    /// Aligns the start to `mask + 1` bytes (`mask` is `2^k - 1`; page alignment always
    /// applies). For fixed locations the address must already be aligned.
    pub fn align_mask(mut self, mask: u64) -> Self {
        self.align_mask = mask;
        self
    }

    /// Leaves at least `bytes` unmapped below an "anywhere" mapping (a guard gap against
    /// running off the previous region; a multiple of the page size). The gap is not
    /// reserved: a later fixed mapping may fill it.
    pub fn guard(mut self, bytes: u64) -> Self {
        self.guard = bytes;
        self
    }

    /// Sets the current and maximum protection.
    pub fn protection(mut self, current: VmProt, maximum: VmProt) -> Self {
        self.protection = current;
        self.max_protection = maximum;
        self
    }

    /// Sets the inheritance.
    pub fn inheritance(mut self, inheritance: Inheritance) -> Self {
        self.inheritance = inheritance;
        self
    }

    /// Sets the user tag (the region type `vmmap` shows).
    pub fn tag(mut self, tag: VmTag) -> Self {
        self.tag = tag;
        self
    }
}

/// Fault counters of one map (what `vm_stat` adds up per task).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Faults resolved (a page was mapped).
    pub faults: u64,
    /// Faults that zero-filled a new page.
    pub zero_fill: u64,
    /// Faults that copied a page on write (or copied up a changeable page on read).
    pub cow: u64,
    /// Faults that read a page from a pager.
    pub pageins: u64,
    /// Faults that found the page resident (soft faults, reactivations).
    pub reactivations: u64,
    /// Faults refused because the protection did not grant the access.
    pub protection_faults: u64,
    /// Faults on addresses no entry maps.
    pub invalid_faults: u64,
}

/// The object pages one wiring of a page holds (one per wiring, newest last).
pub(crate) type Wirings = Vec<(ObjectRef, u64)>;

/// An address map: the entries of one address space, each a range of pages backed by a
/// window of a VM object, and the [`Pmap`] its translations are installed in (XNU's
/// `vm_map`).
///
/// Entries live in a B-tree keyed by start address: lookup, clipping and insertion are
/// O(log n); finding free space is first fit over the gaps (O(n)).
///
/// # Concurrency
///
/// Every operation takes `&mut self`: a kernel wraps the map in its own lock (a reader-writer
/// lock whose readers take faults on private copies is an optimisation this crate leaves to
/// it). Objects are shared between maps and synchronise themselves; no object lock is held
/// when a map operation returns.
///
/// # Examples (needs `std`)
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use machvm_addr::{PageSize, SimPhysMemory, VirtAddr, VmProt};
/// use machvm_vm_map::{MapRequest, SoftPmap, VmMap};
/// use machvm_vm_object::SimPageMemory;
///
/// let phys = SimPhysMemory::builder().size_bytes(1 << 20).build()?;
/// let memory = Arc::new(SimPageMemory::new(phys, PageSize::Size4KiB)?);
/// let mut map = VmMap::new(
///     PageSize::Size4KiB,
///     VirtAddr::new(0x1000),
///     VirtAddr::new(0x1_0000_0000),
///     memory,
///     SoftPmap::new(4096),
/// )?;
/// let at = map.enter(MapRequest::anonymous(0x4000))?;
/// map.fault(at, VmProt::WRITE)?;
/// assert!(map.pmap().translate(at).is_some());
/// # Ok(()) }
/// ```
pub struct VmMap<P> {
    pub(crate) entries: BTreeMap<u64, VmMapEntry>,
    pub(crate) min: u64,
    pub(crate) max: u64,
    pub(crate) page_size: u64,
    pub(crate) memory: Arc<dyn PageMemory>,
    pub(crate) pmap: P,
    pub(crate) stats: FaultStats,
    /// Wired pages by address: the object pages each wiring holds.
    pub(crate) wired: BTreeMap<u64, Wirings>,
}

impl<P: fmt::Debug> fmt::Debug for VmMap<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmMap")
            .field("min", &VirtAddr::new(self.min))
            .field("max", &VirtAddr::new(self.max))
            .field("page_size", &self.page_size)
            .field("entries", &self.entries.len())
            .field("pmap", &self.pmap)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<P> Drop for VmMap<P> {
    fn drop(&mut self) {
        // Release the wirings so the objects can page out, collapse and free their pages.
        for (_, wirings) in core::mem::take(&mut self.wired) {
            for (object, offset) in wirings {
                let _ = object.unwire_page(offset);
            }
        }
    }
}

impl<P: Pmap> VmMap<P> {
    /// An empty map of `[min, max)` with pages of `page_size` (4 or 16 KiB, the page size of
    /// `memory` and of every object mapped), installing translations in `pmap`. Anonymous
    /// memory comes from `memory`.
    ///
    /// # Errors
    ///
    /// [`MapError::InvalidBounds`] if the page size is not 4 or 16 KiB or differs from
    /// `memory`'s, or the bounds are empty, unaligned, or span the non-canonical hole.
    pub fn new(
        page_size: PageSize,
        min: VirtAddr,
        max: VirtAddr,
        memory: Arc<dyn PageMemory>,
        pmap: P,
    ) -> Result<Self, MapError> {
        let ps = page_size.bytes();
        // Every address of the map must be canonical: both ends in the same half.
        let same_half = min < max
            && VirtAddr::try_new(max.as_u64() - 1).is_ok_and(|last| {
                last.is_lower_half(VaWidth::WIDEST) == min.is_lower_half(VaWidth::WIDEST)
            });
        let (min, max) = (min.as_u64(), max.as_u64());
        if !matches!(page_size, PageSize::Size4KiB | PageSize::Size16KiB)
            || memory.page_size() != ps
            || !same_half
            || min % ps != 0
            || max % ps != 0
        {
            return Err(MapError::InvalidBounds);
        }
        Ok(Self {
            entries: BTreeMap::new(),
            min,
            max,
            page_size: ps,
            memory,
            pmap,
            stats: FaultStats::default(),
            wired: BTreeMap::new(),
        })
    }

    /// An empty map with the same bounds, page size and memory, over `pmap` (a fork's child).
    pub(crate) fn sibling(&self, pmap: P) -> Self {
        Self {
            entries: BTreeMap::new(),
            min: self.min,
            max: self.max,
            page_size: self.page_size,
            memory: self.memory.clone(),
            pmap,
            stats: FaultStats::default(),
            wired: BTreeMap::new(),
        }
    }
}

impl<P> VmMap<P> {
    /// The page size in bytes.
    #[must_use]
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// The lowest address the map can hold.
    #[must_use]
    pub fn min_addr(&self) -> VirtAddr {
        VirtAddr::new(self.min)
    }

    /// The address just past the highest the map can hold.
    #[must_use]
    pub fn max_addr(&self) -> VirtAddr {
        VirtAddr::new(self.max)
    }

    /// The page memory anonymous mappings draw from.
    #[must_use]
    pub fn memory(&self) -> &Arc<dyn PageMemory> {
        &self.memory
    }

    /// The pmap.
    #[must_use]
    pub fn pmap(&self) -> &P {
        &self.pmap
    }

    /// The pmap, mutably (for its own bookkeeping, such as reference-bit aging; removing
    /// translations behind the map's back only makes later accesses fault again).
    pub fn pmap_mut(&mut self) -> &mut P {
        &mut self.pmap
    }

    /// The fault counters.
    #[must_use]
    pub fn stats(&self) -> FaultStats {
        self.stats
    }

    /// The number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Returns whether the map has no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in address order.
    pub fn entries(&self) -> impl Iterator<Item = &VmMapEntry> + '_ {
        self.entries.values()
    }

    /// The entry mapping `addr`, if any (O(log n)).
    #[must_use]
    pub fn lookup(&self, addr: VirtAddr) -> Option<&VmMapEntry> {
        let a = addr.as_u64();
        self.entries
            .range(..=a)
            .next_back()
            .map(|(_, e)| e)
            .filter(|e| e.end > a)
    }

    /// The key of the entry mapping `a`.
    pub(crate) fn entry_key(&self, a: u64) -> Option<u64> {
        self.lookup_raw(a).map(|e| e.start)
    }

    fn lookup_raw(&self, a: u64) -> Option<&VmMapEntry> {
        self.entries
            .range(..=a)
            .next_back()
            .map(|(_, e)| e)
            .filter(|e| e.end > a)
    }

    /// The entries overlapping `[start, end)`, in order.
    pub(crate) fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = &VmMapEntry> {
        let first = self.lookup_raw(start);
        let rest = self
            .entries
            .range((Bound::Excluded(start), Bound::Excluded(end)))
            .map(|(_, e)| e);
        first.into_iter().chain(rest)
    }

    /// The keys of the entries overlapping `[start, end)`.
    /// Splits the entries at `start` and `end` (validated, covered) and runs `f` on each entry
    /// in between, with the pmap.
    fn update_range(&mut self, start: u64, end: u64, mut f: impl FnMut(&mut VmMapEntry, &mut P)) {
        self.clip(start);
        self.clip(end);
        for key in self.overlapping_keys(start, end) {
            if let Some(e) = self.entries.get_mut(&key) {
                f(e, &mut self.pmap);
            }
        }
    }

    pub(crate) fn overlapping_keys(&self, start: u64, end: u64) -> Vec<u64> {
        self.overlapping(start, end).map(|e| e.start).collect()
    }

    /// Checks a user range: non-zero, no wrap-around, page-aligned, inside the map.
    pub(crate) fn check_range(&self, start: u64, size: u64) -> Result<u64, MapError> {
        if size == 0 {
            return Err(MapError::ZeroSize);
        }
        let end = start
            .checked_add(size)
            .ok_or(MapError::Overflow { start, size })?;
        let ps = self.page_size;
        if start % ps != 0 {
            return Err(MapError::Unaligned {
                value: start,
                align: ps,
            });
        }
        if size % ps != 0 {
            return Err(MapError::Unaligned {
                value: size,
                align: ps,
            });
        }
        if start < self.min || end > self.max {
            return Err(MapError::OutOfBounds { start, end });
        }
        Ok(end)
    }

    /// Checks that `[start, end)` is mapped without holes and that `check` accepts every
    /// entry overlapping it.
    pub(crate) fn check_covered(
        &self,
        start: u64,
        end: u64,
        mut check: impl FnMut(&VmMapEntry) -> Result<(), MapError>,
    ) -> Result<(), MapError> {
        let mut cursor = start;
        for e in self.overlapping(start, end) {
            if e.start > cursor {
                return Err(MapError::NotMapped { addr: cursor });
            }
            check(e)?;
            cursor = e.end;
        }
        if cursor < end {
            return Err(MapError::NotMapped { addr: cursor });
        }
        Ok(())
    }

    /// Splits the entry containing `at` (strictly inside) so that an entry starts at `at`.
    pub(crate) fn clip(&mut self, at: u64) {
        let key = match self.entries.range(..at).next_back() {
            Some((k, e)) if e.end > at => *k,
            _ => return,
        };
        if let Some(e) = self.entries.get_mut(&key) {
            let tail = e.split_off(at);
            self.entries.insert(at, tail);
        }
    }

    /// The free ranges of the map, each shrunk by `guard` bytes at its start.
    pub(crate) fn gaps(&self, guard: u64) -> Vec<Gap> {
        let mut gaps = Vec::new();
        let mut push = |start: u64, end: u64| {
            if let Some(s) = start.checked_add(guard) {
                if s < end {
                    gaps.push(Gap {
                        start: VirtAddr::new(s),
                        end: VirtAddr::new(end),
                    });
                }
            }
        };
        let mut prev = self.min;
        for e in self.entries.values() {
            if e.start > prev {
                push(prev, e.start);
            }
            prev = e.end;
        }
        if self.max > prev {
            push(prev, self.max);
        }
        gaps
    }
}

/// Makes an anonymous object that is about to be mapped shared a "true share" object: its
/// copies from now on are delayed copies, not symmetric ones (a symmetric copy assumes nobody
/// writes the object directly, and sharers do). Other objects keep their strategy.
pub(crate) fn true_share(object: &ObjectRef) {
    if object.kind() == ObjectKind::Internal && object.copy_strategy() == CopyStrategy::Symmetric {
        object.set_copy_strategy(CopyStrategy::Delay);
    }
}

/// Checks that `prot` holds only read, write and execute.
pub(crate) fn check_prot(prot: VmProt) -> Result<(), MapError> {
    if prot.bits() & !VmProt::all().bits() != 0 {
        return Err(MapError::InvalidProtection { bits: prot.bits() });
    }
    Ok(())
}

impl<P: Pmap> VmMap<P> {
    /// Maps a new region as `request` says (`vm_map_enter`, `mmap`) with first-fit placement
    /// for [`Location::Anywhere`]; returns its start.
    ///
    /// # Errors
    ///
    /// As for [`enter_with`](Self::enter_with).
    pub fn enter(&mut self, request: MapRequest) -> Result<VirtAddr, MapError> {
        self.enter_with(request, &mut FirstFit)
    }

    /// Maps a new region, asking `placement` where an [`Location::Anywhere`] mapping goes;
    /// returns its start. Nothing changes on error.
    ///
    /// # Errors
    ///
    /// - [`MapError::ZeroSize`], [`MapError::Unaligned`] (size, guard, or a fixed address
    ///   not page- or mask-aligned), [`MapError::Overflow`], [`MapError::OutOfBounds`] for a
    ///   bad range;
    /// - [`MapError::InvalidProtection`], [`MapError::ProtectionExceedsMax`] for bad
    ///   protections, [`MapError::InvalidAlignMask`] for a mask that is not `2^k - 1`;
    /// - [`MapError::PageSizeMismatch`], [`MapError::ObjectRange`] for an object window that
    ///   does not fit;
    /// - [`MapError::Occupied`] when a fixed range is in use, [`MapError::NoSpace`] when no
    ///   gap fits, [`MapError::BadPlacement`] when `placement` answers outside the gaps;
    /// - [`MapError::Object`] when the anonymous object cannot be created.
    pub fn enter_with(
        &mut self,
        request: MapRequest,
        placement: &mut dyn Placement,
    ) -> Result<VirtAddr, MapError> {
        let ps = self.page_size;
        let size = request.size;
        if size == 0 {
            return Err(MapError::ZeroSize);
        }
        if size % ps != 0 {
            return Err(MapError::Unaligned {
                value: size,
                align: ps,
            });
        }
        if request.guard % ps != 0 {
            return Err(MapError::Unaligned {
                value: request.guard,
                align: ps,
            });
        }
        check_prot(request.protection)?;
        check_prot(request.max_protection)?;
        if !request.protection.is_subset_of(request.max_protection) {
            return Err(MapError::ProtectionExceedsMax {
                current: request.protection,
                maximum: request.max_protection,
            });
        }
        let mask = request.align_mask;
        if mask == u64::MAX || mask & (mask + 1) != 0 {
            return Err(MapError::InvalidAlignMask { mask });
        }
        let align = (mask + 1).max(ps);
        if let Backing::Shared { object, offset } | Backing::Private { object, offset } =
            &request.backing
        {
            if object.page_size() != ps {
                return Err(MapError::PageSizeMismatch {
                    map: ps,
                    object: object.page_size(),
                });
            }
            let fits = offset
                .checked_add(size)
                .is_some_and(|end| end <= object.size());
            if offset % ps != 0 || !fits {
                return Err(MapError::ObjectRange {
                    offset: *offset,
                    size,
                });
            }
        }
        let (start, overwrite) = match request.location {
            Location::Fixed(a) | Location::Overwrite(a) => {
                let a = a.as_u64();
                self.check_range(a, size)?;
                if a % align != 0 {
                    return Err(MapError::Unaligned { value: a, align });
                }
                let overwrite = matches!(request.location, Location::Overwrite(_));
                if !overwrite {
                    if let Some(e) = self.overlapping(a, a + size).next() {
                        return Err(MapError::Occupied {
                            addr: e.start.max(a),
                        });
                    }
                }
                (a, overwrite)
            }
            Location::Anywhere => {
                let gaps = self.gaps(request.guard);
                let a = placement
                    .place(&gaps, size, align)
                    .ok_or(MapError::NoSpace { size })?
                    .as_u64();
                let inside = gaps.iter().any(|g| {
                    a >= g.start.as_u64()
                        && a.checked_add(size).is_some_and(|end| end <= g.end.as_u64())
                });
                if !inside || a % align != 0 {
                    return Err(MapError::BadPlacement { addr: a });
                }
                (a, false)
            }
        };
        let (object, offset, needs_copy, shared, copy_on_read) = match request.backing {
            Backing::Anonymous => (
                VmObject::anonymous(size, self.memory.clone())?,
                0,
                false,
                false,
                false,
            ),
            Backing::Shared { object, offset } => (object, offset, false, true, true),
            Backing::Private { object, offset } => (object, offset, true, false, true),
        };
        let end = start + size;
        if overwrite {
            self.remove_range(start, end);
        }
        if shared {
            true_share(&object);
        }
        self.entries.insert(
            start,
            VmMapEntry {
                start,
                end,
                mapper: MapperMark::new(&object),
                object,
                offset,
                protection: request.protection,
                max_protection: request.max_protection,
                inheritance: request.inheritance,
                needs_copy,
                is_shared: shared,
                copy_on_read,
                wired_count: 0,
                tag: request.tag,
                collapse: CollapseHint::default(),
            },
        );
        Ok(VirtAddr::new(start))
    }

    /// Unmaps `[start, start + size)` (`vm_deallocate`, `munmap`): entries are split at the
    /// edges, holes in the range are ignored, wired pages are unwired (an unmap ends every
    /// wiring of the range), translations are removed before the objects are released.
    ///
    /// # Errors
    ///
    /// [`MapError::ZeroSize`], [`MapError::Unaligned`], [`MapError::Overflow`] or
    /// [`MapError::OutOfBounds`] for a bad range (nothing changes).
    pub fn remove(&mut self, start: VirtAddr, size: u64) -> Result<(), MapError> {
        let start = start.as_u64();
        let end = self.check_range(start, size)?;
        self.remove_range(start, end);
        Ok(())
    }

    /// Removes everything in `[start, end)` (a checked range).
    pub(crate) fn remove_range(&mut self, start: u64, end: u64) {
        self.clip(start);
        self.clip(end);
        for key in self.overlapping_keys(start, end) {
            let Some(e) = self.entries.remove(&key) else {
                continue;
            };
            self.pmap
                .remove(VirtAddr::new(e.start), VirtAddr::new(e.end));
            if e.wired_count > 0 {
                let vas: Vec<u64> = self.wired.range(e.start..e.end).map(|(k, _)| *k).collect();
                for va in vas {
                    for (object, offset) in self.wired.remove(&va).unwrap_or_default() {
                        let _ = object.unwire_page(offset);
                    }
                }
            }
        }
    }

    /// Sets the current protection of `[start, start + size)` (`vm_protect` without
    /// set-maximum, `mprotect`). Lowering takes effect in the pmap at once; added rights are
    /// granted by later faults.
    ///
    /// # Errors
    ///
    /// A bad range (as for [`remove`](Self::remove)), [`MapError::InvalidProtection`],
    /// [`MapError::NotMapped`] for a hole in the range, [`MapError::ProtectionExceedsMax`]
    /// when an entry's maximum does not allow `protection`. Nothing changes on error.
    pub fn protect(
        &mut self,
        start: VirtAddr,
        size: u64,
        protection: VmProt,
    ) -> Result<(), MapError> {
        let start = start.as_u64();
        let end = self.check_range(start, size)?;
        check_prot(protection)?;
        self.check_covered(start, end, |e| {
            if protection.is_subset_of(e.max_protection) {
                Ok(())
            } else {
                Err(MapError::ProtectionExceedsMax {
                    current: protection,
                    maximum: e.max_protection,
                })
            }
        })?;
        self.update_range(start, end, |e, _| e.protection = protection);
        self.pmap
            .protect(VirtAddr::new(start), VirtAddr::new(end), protection);
        Ok(())
    }

    /// Lowers the maximum protection of `[start, start + size)` to `maximum` and clips the
    /// current protection to it (`vm_protect` with set-maximum).
    ///
    /// # Errors
    ///
    /// A bad range, [`MapError::InvalidProtection`], [`MapError::NotMapped`] for a hole,
    /// [`MapError::MaxRaised`] when `maximum` is not within an entry's maximum. Nothing
    /// changes on error.
    pub fn set_max_protection(
        &mut self,
        start: VirtAddr,
        size: u64,
        maximum: VmProt,
    ) -> Result<(), MapError> {
        let start = start.as_u64();
        let end = self.check_range(start, size)?;
        check_prot(maximum)?;
        self.check_covered(start, end, |e| {
            if maximum.is_subset_of(e.max_protection) {
                Ok(())
            } else {
                Err(MapError::MaxRaised {
                    requested: maximum,
                    maximum: e.max_protection,
                })
            }
        })?;
        self.update_range(start, end, |e, pmap| {
            e.max_protection = maximum;
            e.protection &= maximum;
            pmap.protect(VirtAddr::new(e.start), VirtAddr::new(e.end), e.protection);
        });
        Ok(())
    }

    /// Sets the inheritance of the entries in `[start, start + size)` (`vm_inherit`,
    /// `minherit`); holes in the range are skipped.
    ///
    /// # Errors
    ///
    /// A bad range (nothing changes).
    pub fn inherit(
        &mut self,
        start: VirtAddr,
        size: u64,
        inheritance: Inheritance,
    ) -> Result<(), MapError> {
        let start = start.as_u64();
        let end = self.check_range(start, size)?;
        self.update_range(start, end, |e, _| e.inheritance = inheritance);
        Ok(())
    }
}
