//! Wiring: fault a range in and hold its pages resident and mapped (`vm_map_wire`,
//! `mlock`).

use alloc::vec::Vec;

use machvm_addr::{VirtAddr, VmProt};
use machvm_vm_object::ObjectRef;

use crate::{MapError, Pmap, VmMap};

impl<P: Pmap> VmMap<P> {
    /// Wires `[start, start + size)`: every page is faulted in (for write when the entry is
    /// writable), made the entry's own (a pending copy on write is resolved first, so a wired
    /// page never moves), wired in its object and mapped wired. Each call adds one wiring;
    /// [`unwire`](Self::unwire) removes one. Wirings are not inherited by
    /// [`fork`](Self::fork), and [`remove`](Self::remove) ends them.
    ///
    /// # Errors
    ///
    /// - a bad range (as for [`remove`](Self::remove)), [`MapError::NotMapped`] for a hole,
    ///   [`MapError::NoAccess`] for an entry with no access, [`MapError::WireOverflow`]:
    ///   nothing changes;
    /// - [`MapError::Fault`] or [`MapError::Object`] when a page cannot be brought in or
    ///   wired: the wirings taken by this call are released; pages already faulted in stay
    ///   resident and entries may stay split at the range's edges.
    pub fn wire(&mut self, start: VirtAddr, size: u64) -> Result<(), MapError> {
        let start = start.as_u64();
        let end = self.check_range(start, size)?;
        self.check_covered(start, end, |e| {
            if e.protection == VmProt::NONE {
                return Err(MapError::NoAccess { addr: e.start });
            }
            if e.wired_count == u32::MAX {
                return Err(MapError::WireOverflow { addr: e.start });
            }
            Ok(())
        })?;
        self.clip(start);
        self.clip(end);
        let keys = self.overlapping_keys(start, end);
        let mut done: Vec<(u64, ObjectRef, u64)> = Vec::new();
        let result = self.wire_pages(&keys, &mut done);
        if let Err(e) = result {
            for (va, object, offset) in done.into_iter().rev() {
                let _ = object.unwire_page(offset);
                if let Some(list) = self.wired.get_mut(&va) {
                    list.pop();
                    if list.is_empty() {
                        self.wired.remove(&va);
                        let unwired = self
                            .entry_key(va)
                            .and_then(|k| self.entries.get(&k))
                            .is_some_and(|e| e.wired_count == 0);
                        if unwired {
                            self.pmap.set_wired(VirtAddr::new(va), false);
                        }
                    }
                }
            }
            return Err(e);
        }
        for key in keys {
            if let Some(e) = self.entries.get_mut(&key) {
                e.wired_count += 1;
            }
        }
        Ok(())
    }

    fn wire_pages(
        &mut self,
        keys: &[u64],
        done: &mut Vec<(u64, ObjectRef, u64)>,
    ) -> Result<(), MapError> {
        for &key in keys {
            let Some((s, t, prot)) = self
                .entries
                .get(&key)
                .map(|e| (e.start, e.end, e.protection))
            else {
                continue;
            };
            let access = if prot.contains(VmProt::WRITE) {
                VmProt::WRITE
            } else {
                VmProt::READ
            };
            let mut va = s;
            while va < t {
                let found = self.fault_page(key, va, access, true)?;
                found.object.wire_page(found.offset)?;
                self.wired
                    .entry(va)
                    .or_default()
                    .push((found.object.clone(), found.offset));
                done.push((va, found.object, found.offset));
                va += self.page_size;
            }
        }
        Ok(())
    }

    /// Removes one wiring from `[start, start + size)`; pages whose last wiring goes become
    /// pageable again (their translations stay, unwired).
    ///
    /// # Errors
    ///
    /// A bad range, [`MapError::NotMapped`] for a hole, [`MapError::NotWired`] for an entry
    /// that is not wired. Nothing changes on error.
    pub fn unwire(&mut self, start: VirtAddr, size: u64) -> Result<(), MapError> {
        let start = start.as_u64();
        let end = self.check_range(start, size)?;
        self.check_covered(start, end, |e| {
            if e.wired_count == 0 {
                Err(MapError::NotWired { addr: e.start })
            } else {
                Ok(())
            }
        })?;
        self.clip(start);
        self.clip(end);
        for key in self.overlapping_keys(start, end) {
            let Some(e) = self.entries.get_mut(&key) else {
                continue;
            };
            e.wired_count -= 1;
            let (s, t, last) = (e.start, e.end, e.wired_count == 0);
            let vas: Vec<u64> = self.wired.range(s..t).map(|(k, _)| *k).collect();
            for va in vas {
                let Some(list) = self.wired.get_mut(&va) else {
                    continue;
                };
                if let Some((object, offset)) = list.pop() {
                    let _ = object.unwire_page(offset);
                }
                if list.is_empty() {
                    self.wired.remove(&va);
                }
                if last {
                    self.pmap.set_wired(VirtAddr::new(va), false);
                }
            }
        }
        Ok(())
    }
}
