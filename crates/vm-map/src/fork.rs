//! Fork: a child map built entry by entry from each entry's inheritance.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use machvm_addr::{PhysAddr, VirtAddr, VmProt};
use machvm_vm_object::{CopyResult, CopyStrategy, ObjectError, ObjectRef, PageFlags, VmObject};

use crate::entry::{Inheritance, VmMapEntry};
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
    /// The child maps a delayed copy object; the parent's translations lose write.
    Delayed { object: ObjectRef, offset: u64 },
    /// The child maps its own eager copy; the parent is unchanged.
    Copied(ObjectRef),
}

impl<P: Pmap> VmMap<P> {
    /// Creates a child address space over `child_pmap` from this one (`vm_map_fork`), entry
    /// by entry according to its [`Inheritance`]:
    ///
    /// - [`Inheritance::None`]: a hole in the child.
    /// - [`Inheritance::Share`]: both map the same object (a pending copy on write in the
    ///   parent is resolved first, so the shared object is the parent's own).
    /// - [`Inheritance::Copy`]: through [`VmObject::copy`] by the object's strategy.
    ///   Symmetric: both entries become needs-copy and the parent's translations lose write,
    ///   so whichever side writes first gets a shadow object. Delayed: the child maps the copy
    ///   object and the parent's translations lose write, so its next write pushes the old
    ///   page into the copy. None: the child gets an eager copy. Wired entries and
    ///   symmetric objects that are shared with other mappings are copied eagerly (a wired
    ///   page cannot be write-protected; a shared object can change under a symmetric copy).
    ///
    /// The child has no translations (it faults its pages in), no wirings, and fresh counters.
    ///
    /// # Errors
    ///
    /// [`MapError::Object`] when a copy or shadow object cannot be made (no memory, a pager
    /// error during an eager copy). The parent is unchanged.
    pub fn fork(&mut self, child_pmap: P) -> Result<Self, MapError> {
        // Phase 1: every fallible step, nothing changes.
        let mut plans = Vec::with_capacity(self.entries.len());
        for e in self.entries.values() {
            plans.push(self.plan(e)?);
        }
        // Phase 2: apply.
        let mut child = self.sibling(child_pmap);
        let keys: Vec<u64> = self.entries.keys().copied().collect();
        for (key, plan) in keys.into_iter().zip(plans) {
            let Some(e) = self.entries.get_mut(&key) else {
                continue;
            };
            let (start, end) = (VirtAddr::new(e.start), VirtAddr::new(e.end));
            let mut c = e.clone();
            c.wired_count = 0;
            match plan {
                Plan::Skip => continue,
                Plan::Share(shadow) => {
                    let mut drop_below_top = false;
                    if let Some(shadow) = shadow {
                        e.object = shadow;
                        e.offset = 0;
                        e.needs_copy = false;
                        self.pmap.remove(start, end);
                    } else if !e.copy_on_read && e.object.shadow().is_some() {
                        drop_below_top = true;
                    }
                    e.is_shared = true;
                    e.copy_on_read = true;
                    c = e.clone();
                    c.wired_count = 0;
                    if drop_below_top {
                        // Pages the parent mapped read-only from below its object may be
                        // hidden by a copy the child makes: the parent must fault them again.
                        let (e, ps) = (e.clone(), self.page_size);
                        let mut va = e.start;
                        while va < e.end {
                            if matches!(e.object.page(e.object_offset(va)), Ok(None)) {
                                self.pmap.remove(VirtAddr::new(va), VirtAddr::new(va + ps));
                            }
                            va += ps;
                        }
                    }
                }
                Plan::Symmetric { parent_too } => {
                    if parent_too {
                        e.needs_copy = true;
                        c.needs_copy = true;
                        let prot = e.protection - VmProt::WRITE;
                        self.pmap.protect(start, end, prot);
                    }
                }
                Plan::Delayed { object, offset } => {
                    c.object = object;
                    c.offset = offset;
                    c.needs_copy = false;
                    c.is_shared = false;
                    c.copy_on_read = true;
                    let prot = e.protection - VmProt::WRITE;
                    self.pmap.protect(start, end, prot);
                }
                Plan::Copied(object) => {
                    c.object = object;
                    c.offset = 0;
                    c.needs_copy = false;
                    c.is_shared = false;
                    c.copy_on_read = false;
                }
            }
            child.entries.insert(c.start, c);
        }
        Ok(child)
    }

    fn plan(&self, e: &VmMapEntry) -> Result<Plan, MapError> {
        let size = e.end - e.start;
        Ok(match e.inheritance {
            Inheritance::None => Plan::Skip,
            Inheritance::Share => Plan::Share(if e.needs_copy {
                Some(VmObject::shadow_of(&e.object, e.offset, size)?)
            } else {
                None
            }),
            Inheritance::Copy => {
                if e.wired_count > 0
                    || (e.is_shared && e.object.copy_strategy() == CopyStrategy::Symmetric)
                {
                    Plan::Copied(self.copy_eagerly(e)?)
                } else if e.needs_copy {
                    Plan::Symmetric { parent_too: false }
                } else {
                    match VmObject::copy(&e.object, e.offset, size)? {
                        CopyResult::Symmetric { .. } => Plan::Symmetric { parent_too: true },
                        CopyResult::Delayed { object, offset } => Plan::Delayed { object, offset },
                        CopyResult::Copied { object } => Plan::Copied(object),
                        _ => Plan::Copied(self.copy_eagerly(e)?),
                    }
                }
            }
        })
    }

    /// A new anonymous object holding a copy of every page the entry shows now.
    fn copy_eagerly(&self, e: &VmMapEntry) -> Result<ObjectRef, MapError> {
        let size = e.end - e.start;
        let memory = self.memory.clone();
        let copy = VmObject::anonymous(size, memory.clone())?;
        // Copies made so far (window offset → frame), the top-most object's page winning.
        let mut frames: BTreeMap<u64, PhysAddr> = BTreeMap::new();
        let mut failed: Option<ObjectError> = None;
        let mut level = Some((e.object.clone(), e.offset));
        while let Some((object, base)) = level {
            let end = base + size;
            // Copy under the object's lock (inside `for_each_page`) so no frame goes away
            // while it is read.
            let mut busy = Vec::new();
            object.for_each_page(|off, page| {
                if off < base || off >= end || failed.is_some() {
                    return;
                }
                let at = off - base;
                if frames.contains_key(&at) {
                    return;
                }
                if page.flags.contains(PageFlags::BUSY) {
                    busy.push(at);
                    return;
                }
                match memory.alloc_page() {
                    Ok(frame) => {
                        memory.copy_page(page.frame, frame);
                        frames.insert(at, frame);
                    }
                    Err(err) => failed = Some(err),
                }
            });
            // Pages being paged in, or held by this level's pager: resolve through the
            // chain (the walk from the top finds this level's page, nothing above has one).
            let pager = object.pager();
            let mut pending = busy;
            if let Some(pager) = &pager {
                let mut at = 0;
                while at < size && failed.is_none() {
                    if !frames.contains_key(&at) && pager.has_page(base + at) {
                        pending.push(at);
                    }
                    at += self.page_size;
                }
            }
            for at in pending {
                if failed.is_some() || frames.contains_key(&at) {
                    continue;
                }
                let result =
                    VmObject::resolve(&e.object, e.offset + at, VmProt::READ).and_then(|page| {
                        let frame = memory.alloc_page()?;
                        memory.copy_page(page.frame, frame);
                        Ok(frame)
                    });
                match result {
                    Ok(frame) => {
                        frames.insert(at, frame);
                    }
                    Err(err) => failed = Some(err),
                }
            }
            level = object.shadow().map(|s| (s.object, s.offset + base));
        }
        if let Some(err) = failed {
            for frame in frames.into_values() {
                memory.free_page(frame);
            }
            return Err(err.into());
        }
        let mut frames = frames.into_iter();
        while let Some((at, frame)) = frames.next() {
            if let Err(err) = copy.insert_page(at, frame, PageFlags::DIRTY) {
                memory.free_page(frame);
                for (_, rest) in frames {
                    memory.free_page(rest);
                }
                return Err(err.into());
            }
        }
        Ok(copy)
    }
}
