//! Fork: a child map built entry by entry from each entry's inheritance.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;

use machvm_addr::{VirtAddr, VmProt};
use machvm_vm_object::{
    CopyResult, CopyStrategy, ObjectError, ObjectId, ObjectRef, PagerError, VmObject,
};

use crate::entry::{Inheritance, VmMapEntry};
use crate::map::true_share;
use crate::{MapError, Pmap, VmMap};

/// What fork does to one parent entry (decided before anything changes).
enum Plan {
    /// Nothing: inheritance none.
    Skip,
    /// Share the object; with `Some`, the parent first moves to this shadow object (its
    /// copy on write was pending).
    Share(Option<ObjectRef>),
    /// The child maps the same object needs-copy; the parent becomes needs-copy too
    /// (`symmetric`) or already was.
    Symmetric { parent_too: bool },
    /// The child maps this delayed copy of the entry's object (at this offset), needs-copy;
    /// the translations of every parent entry mapping the source lose write.
    Delayed(ObjectRef, u64),
    /// The child maps its own eager copy; the parent is unchanged.
    Copied(ObjectRef),
}

/// What the planning phase of one fork learns about the map's objects.
#[derive(Default)]
struct Census {
    /// This map's entries by top object: how many map it, and whether one of them is wired.
    /// Counted on first need (only delayed copies need it).
    mappers: Option<BTreeMap<ObjectId, (usize, bool)>>,
    /// Sources given a delayed copy in this fork, with the copy when further entries of the
    /// same source can map it too (it covers the whole source at the same offsets).
    copies: BTreeMap<ObjectId, Option<ObjectRef>>,
}

impl Census {
    /// Whether a delayed copy of `object` is safe: every entry mapping it directly (the only
    /// holders of translations that can write its pages) is one of `entries`, and none of
    /// those is wired, so write-protecting this map's translations makes every later write
    /// fault and push the old page into the copy first.
    ///
    /// Each entry holds a [`MapperMark`](machvm_vm_object::MapperMark) on its top object,
    /// so the object's mapper count is the number of such entries in every map.
    fn writers_all_here(
        &mut self,
        entries: &BTreeMap<u64, VmMapEntry>,
        object: &ObjectRef,
    ) -> bool {
        let mappers = self.mappers.get_or_insert_with(|| {
            let mut mappers = BTreeMap::new();
            for e in entries.values() {
                let slot: &mut (usize, bool) = mappers.entry(e.object.id()).or_default();
                slot.0 += 1;
                slot.1 |= e.wired_count > 0;
            }
            mappers
        });
        let (here, wired) = mappers.get(&object.id()).copied().unwrap_or_default();
        !wired && object.mappers() <= here
    }

    /// A delayed copy of `e`'s object for `e`: the one made for an earlier entry of the same
    /// object in this fork, or a new one. Returns the copy and the entry's offset in it.
    fn delayed_copy(&mut self, e: &VmMapEntry) -> Result<(ObjectRef, u64), MapError> {
        let id = e.object.id();
        if let Some(Some(copy)) = self.copies.get(&id) {
            return Ok((copy.clone(), e.offset));
        }
        let size = e.end - e.start;
        match VmObject::copy_with(&e.object, e.offset, size, CopyStrategy::Delay)? {
            CopyResult::Delayed { object, offset } => {
                let whole = offset == e.offset
                    && object.size() == e.object.size()
                    && object
                        .shadow()
                        .is_some_and(|s| s.offset == 0 && Arc::ptr_eq(&s.object, &e.object));
                self.copies.insert(id, whole.then(|| object.clone()));
                Ok((object, offset))
            }
            _ => Err(unsupported_copy()),
        }
    }
}

/// The error for a copy result the map does not know how to map (the object layer answered
/// a forced strategy with another kind of copy).
fn unsupported_copy() -> MapError {
    MapError::Object(ObjectError::Pager(PagerError::Unsupported))
}

/// An eager copy of the window `e` shows, made by the object layer under the owners' locks
/// (pages held by a pager are paged in and copied).
fn copy_eagerly(e: &VmMapEntry) -> Result<ObjectRef, MapError> {
    let size = e.end - e.start;
    match VmObject::copy_with(&e.object, e.offset, size, CopyStrategy::None)? {
        CopyResult::Copied { object } => Ok(object),
        _ => Err(unsupported_copy()),
    }
}

impl<P: Pmap> VmMap<P> {
    /// Creates a child address space over `child_pmap` from this one (`vm_map_fork`), entry
    /// by entry according to its [`Inheritance`]:
    ///
    /// - [`Inheritance::None`]: a hole in the child.
    /// - [`Inheritance::Share`]: both map the same object (a pending copy on write in the
    ///   parent is resolved first, so the shared object is the parent's own). An anonymous
    ///   object shared this way switches to delayed copies ("true share", see
    ///   [`VmObject::set_copy_strategy`]): a symmetric copy assumes nobody writes the object
    ///   directly, and now two entries do.
    /// - [`Inheritance::Copy`], by the object's copy strategy:
    ///   - symmetric: both entries become needs-copy and the parent's translations lose
    ///     write, so whichever side writes first gets a shadow object;
    ///   - delayed: the child maps a delayed copy object (needs-copy, so the copy object
    ///     itself stays frozen), and the translations of every parent entry mapping the
    ///     source lose write, so the next write to the source pushes the old page into the
    ///     copy first. Only taken when every entry mapping the source directly belongs to
    ///     this map and none is wired: a sharer in another map may hold a writable
    ///     translation this map cannot revoke, so the object is copied eagerly instead;
    ///   - none: an eager copy.
    ///
    ///   Wired entries, and shared objects that keep symmetric copies (external objects),
    ///   are copied eagerly too (a wired page cannot be write-protected; a shared object can
    ///   change under a symmetric copy). Eager copies are made by the object layer
    ///   ([`VmObject::copy_with`] with [`CopyStrategy::None`]).
    ///
    /// The child has no translations (it faults its pages in), no wirings, and fresh counters.
    ///
    /// # Errors
    ///
    /// [`MapError::Object`] when a copy or shadow object cannot be made (no memory, a pager
    /// error during an eager copy). The parent is unchanged.
    pub fn fork(&mut self, child_pmap: P) -> Result<Self, MapError> {
        // Phase 1: every fallible step, nothing changes.
        let mut census = Census::default();
        let mut plans = Vec::with_capacity(self.entries.len());
        for e in self.entries.values() {
            plans.push(Self::plan(&self.entries, e, &mut census)?);
        }
        // Phase 2: apply.
        let mut child = self.sibling(child_pmap);
        let keys: Vec<u64> = self.entries.keys().copied().collect();
        for (key, plan) in keys.into_iter().zip(plans) {
            if matches!(plan, Plan::Skip) {
                continue;
            }
            let Some(e) = self.entries.get_mut(&key) else {
                continue;
            };
            let (start, end) = (VirtAddr::new(e.start), VirtAddr::new(e.end));
            let mut c = e.clone();
            c.wired_count = 0;
            match plan {
                Plan::Skip => continue,
                Plan::Share(shadow) => {
                    if let Some(shadow) = shadow {
                        e.set_object(shadow, 0);
                        e.needs_copy = false;
                        self.pmap.remove(start, end);
                    } else if e.object.shadow().is_some() {
                        // Pages the parent mapped read-only from below its object may be
                        // hidden by a copy the child makes: the parent must fault them again.
                        // An entry that copies on read has such translations too when its
                        // object changed under them (a needs-copy resolution after a fork).
                        let ps = self.page_size;
                        let (first, last) = (e.offset, e.offset + (e.end - e.start));
                        let mut own = Vec::new();
                        e.object.for_each_page(|off, _| {
                            if off >= first && off < last {
                                own.push(e.start + (off - first));
                            }
                        });
                        let mut va = e.start;
                        for at in own.into_iter().chain(core::iter::once(e.end)) {
                            if at > va {
                                self.pmap.remove(VirtAddr::new(va), VirtAddr::new(at));
                            }
                            va = at + ps;
                        }
                    }
                    e.is_shared = true;
                    e.copy_on_read = true;
                    true_share(&e.object);
                    c = e.clone();
                    c.wired_count = 0;
                }
                Plan::Symmetric { parent_too } => {
                    if parent_too {
                        e.needs_copy = true;
                        c.needs_copy = true;
                        let prot = e.protection - VmProt::WRITE;
                        self.pmap.protect(start, end, prot);
                    }
                }
                Plan::Delayed(object, offset) => {
                    // The copy object is frozen like a backing object: an older delayed copy
                    // of the same source may shadow it, so the child writes through a shadow.
                    c.set_object(object, offset);
                    c.needs_copy = true;
                    c.is_shared = false;
                    c.copy_on_read = true;
                }
                Plan::Copied(object) => {
                    c.set_object(object, 0);
                    c.needs_copy = false;
                    c.is_shared = false;
                    c.copy_on_read = false;
                }
            }
            child.entries.insert(c.start, c);
        }
        if !census.copies.is_empty() {
            // Every translation that can write a delayed copy's source loses write, whatever
            // the inheritance of the entry holding it.
            for e in self.entries.values() {
                if census.copies.contains_key(&e.object.id()) {
                    let prot = e.protection - VmProt::WRITE;
                    self.pmap
                        .protect(VirtAddr::new(e.start), VirtAddr::new(e.end), prot);
                }
            }
        }
        Ok(child)
    }

    fn plan(
        entries: &BTreeMap<u64, VmMapEntry>,
        e: &VmMapEntry,
        census: &mut Census,
    ) -> Result<Plan, MapError> {
        Ok(match e.inheritance {
            Inheritance::None => Plan::Skip,
            Inheritance::Share => Plan::Share(if e.needs_copy {
                Some(VmObject::shadow_of(&e.object, e.offset, e.end - e.start)?)
            } else {
                None
            }),
            Inheritance::Copy => {
                if e.wired_count > 0 {
                    Plan::Copied(copy_eagerly(e)?)
                } else if e.needs_copy {
                    Plan::Symmetric { parent_too: false }
                } else {
                    match e.object.copy_strategy() {
                        // A symmetric copy is the object itself, needs-copy on both sides
                        // (what `VmObject::copy` answers for it).
                        CopyStrategy::Symmetric if !e.is_shared => {
                            Plan::Symmetric { parent_too: true }
                        }
                        CopyStrategy::Delay if census.writers_all_here(entries, &e.object) => {
                            let (object, offset) = census.delayed_copy(e)?;
                            Plan::Delayed(object, offset)
                        }
                        _ => Plan::Copied(copy_eagerly(e)?),
                    }
                }
            }
        })
    }
}
