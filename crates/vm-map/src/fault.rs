//! The fault path: find the entry, check the protection, resolve copy on write, find the
//! page through the object layer and map it.

use alloc::sync::Arc;

use machvm_addr::{PhysAddr, VirtAddr, VmProt};
use machvm_vm_object::{FaultKind, ObjectRef, VmObject};

use crate::{FaultError, Pmap, VmMap};

/// What a resolved fault did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultOutcome {
    /// The page address that was mapped.
    pub va: VirtAddr,
    /// The frame mapped there.
    pub frame: PhysAddr,
    /// The protection the translation got: the entry's current protection, without write
    /// while the page is still shared copy-on-write.
    pub prot: VmProt,
    /// How the page was found (the `vm_stat` counter it moved).
    pub kind: FaultKind,
    /// How far down the shadow chain the page was (0: the entry's own object).
    pub depth: usize,
}

/// The page a fault found, with the object page that holds it.
pub(crate) struct Found {
    pub(crate) outcome: FaultOutcome,
    pub(crate) object: ObjectRef,
    pub(crate) offset: u64,
}

impl<P: Pmap> VmMap<P> {
    /// Handles a page fault at `addr` for `access` (`vm_fault`): finds the entry, checks its
    /// current protection, gives the entry its own shadow object on the first write after a
    /// copy (needs-copy), resolves the page through the object's shadow chain (zero fill,
    /// page-in, copy on write) and maps it through the pmap. A page still shared copy on
    /// write is mapped without write permission, so a later write faults again and copies.
    ///
    /// Execute access is a read of the page. Counts the outcome in [`stats`](Self::stats).
    ///
    /// # Errors
    ///
    /// - [`FaultError::InvalidAccess`] for an empty access or unknown bits;
    /// - [`FaultError::NotMapped`] when no entry maps `addr`;
    /// - [`FaultError::Protection`] when the entry's current protection does not grant
    ///   `access` (nothing changes);
    /// - [`FaultError::Object`] when the object layer fails (no memory, pager error, purged
    ///   object) and [`FaultError::Pmap`] when the translation cannot be installed; the page
    ///   may have been brought in, but the map is otherwise unchanged.
    pub fn fault(&mut self, addr: VirtAddr, access: VmProt) -> Result<FaultOutcome, FaultError> {
        if access.is_empty() || access.bits() & !VmProt::all().bits() != 0 {
            return Err(FaultError::InvalidAccess {
                bits: access.bits(),
            });
        }
        let a = addr.as_u64();
        let va = a & !(self.page_size - 1);
        let Some(key) = self.entry_key(va) else {
            self.stats.invalid_faults += 1;
            return Err(FaultError::NotMapped { addr: a });
        };
        let protection = self
            .entries
            .get(&key)
            .map_or(VmProt::NONE, |e| e.protection);
        if !protection.permits(access) {
            self.stats.protection_faults += 1;
            return Err(FaultError::Protection {
                addr: a,
                access,
                protection,
            });
        }
        self.fault_page(key, va, access, false)
            .map(|found| found.outcome)
    }

    /// Faults in page `va` of the entry at `key` (protection already checked). With
    /// `wiring`, the page is made the entry's own (needs-copy resolved, a page found below
    /// the top object copied up) and mapped wired.
    pub(crate) fn fault_page(
        &mut self,
        key: u64,
        va: u64,
        access: VmProt,
        wiring: bool,
    ) -> Result<Found, FaultError> {
        let write = access.contains(VmProt::WRITE);
        let Some(entry) = self.entries.get_mut(&key) else {
            return Err(FaultError::NotMapped { addr: va });
        };
        let private = entry.copy_on_read || wiring;
        if entry.needs_copy && (write || private) {
            if Arc::strong_count(&entry.object) == 1
                && entry.object.kind() == machvm_vm_object::ObjectKind::Internal
            {
                // Nobody else references the anonymous object any more: it is ours to write.
                // (A pager-backed object is never written in place for a private mapping:
                // its pager would write the changes back to the file.)
                entry.needs_copy = false;
            } else {
                let shadow =
                    VmObject::shadow_of(&entry.object, entry.offset, entry.end - entry.start)?;
                entry.set_object(shadow, 0);
                entry.needs_copy = false;
            }
        }
        let object = entry.object.clone();
        let offset = entry.object_offset(va);
        let want = if write { VmProt::WRITE } else { VmProt::READ };
        let mut page = VmObject::resolve(&object, offset, want)?;
        if !write && private && page.depth > 0 {
            // The page below may change or vanish (shared object, delayed-copy source):
            // take a private copy now rather than map a page that can go stale.
            page = VmObject::resolve(&object, offset, VmProt::WRITE)?;
        }
        let mut prot = entry.protection;
        if !page.writable || entry.needs_copy {
            prot.remove(VmProt::WRITE);
        }
        let wired = wiring || entry.wired_count > 0;
        self.pmap
            .enter(VirtAddr::new(va), page.frame, prot, wired)?;
        if page.kind == FaultKind::CopyOnWrite {
            // Keep chains short. Once this object holds the only reference to its backing
            // object (the other sharers are gone), the two merge: checked on every copy on
            // write (one lock). While others still hold the backing object, it can be linked
            // past once this object hides every page of it, which the hint times.
            let sole = object
                .shadow()
                .is_some_and(|s| Arc::strong_count(&s.object) == 2);
            if entry.collapse.due(sole) {
                let progress =
                    VmObject::collapse(&object).is_ok_and(|s| s.collapsed + s.bypassed > 0);
                entry.collapse.tried(progress, sole, || {
                    object
                        .shadow()
                        .map_or(0, |s| s.object.page_counts().resident)
                });
            }
        }
        self.stats.faults += 1;
        match page.kind {
            FaultKind::ZeroFill => self.stats.zero_fill += 1,
            FaultKind::CopyOnWrite => self.stats.cow += 1,
            FaultKind::PageIn => self.stats.pageins += 1,
            _ => self.stats.reactivations += 1,
        }
        Ok(Found {
            outcome: FaultOutcome {
                va: VirtAddr::new(va),
                frame: page.frame,
                prot,
                kind: page.kind,
                depth: page.depth,
            },
            object: page.object,
            offset: page.offset,
        })
    }
}

/// When the fault path next tries [`VmObject::collapse`] after a copy on write through an
/// entry (kept per entry, started afresh when the entry's object changes).
///
/// A merge (the object holds the only reference to its backing object) is tried at once. A
/// bypass needs every page of the backing object hidden by a page of this object, and each
/// copy on write hides at most one: the object layer refuses at once while the backing object
/// has more pages than this one, and otherwise scans the backing object's pages. So after an
/// attempt that did nothing, the next waits until there have been as many copies on write as
/// the backing object has pages, or, when there have been that many already (pages copied
/// from further down hide none of it), half as many more: each scan is paid for by as many
/// faults as half the pages it reads, O(1) per fault amortised.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CollapseHint {
    /// Copies on write through the entry since its object's backing object last changed.
    cows: u32,
    /// The next attempt comes when `cows` reaches this.
    at: u32,
    /// The last attempt did nothing although it was for a sole reference (the merge is
    /// blocked: a pager, wired or busy pages), so sole references wait like the rest.
    sole_failed: bool,
}

impl CollapseHint {
    /// Counts a copy on write; returns whether to try a collapse now.
    fn due(&mut self, sole: bool) -> bool {
        self.cows = self.cows.saturating_add(1);
        self.cows >= self.at || (sole && !self.sole_failed)
    }

    /// Records an attempt; `backing_pages` reads the resident pages of the (new) backing
    /// object.
    fn tried(&mut self, progress: bool, sole: bool, backing_pages: impl FnOnce() -> u64) {
        if progress {
            // A new backing object (or none): try again on the next copy on write.
            *self = Self::default();
            return;
        }
        let back = u32::try_from(backing_pages()).unwrap_or(u32::MAX);
        self.at = if back > self.cows {
            back
        } else {
            self.cows.saturating_add((back / 2).max(1))
        };
        self.sole_failed = sole;
    }
}
