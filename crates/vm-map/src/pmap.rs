//! The `Pmap` trait: how a map installs and removes translations, and `SoftPmap`, a host
//! model of one.

use machvm_addr::{PhysAddr, VirtAddr, VmProt};

use crate::PmapError;

/// The physical map of one address space: the machine-dependent layer a [`VmMap`] installs
/// translations through (XNU's `pmap`). The `machvm` facade implements it over
/// `machvm-page-table` and `machvm-tlb`; [`SoftPmap`] is a host model.
///
/// Every address is page-aligned for the map's page size and every range is page-aligned and
/// non-empty. TLB invalidation after [`remove`](Self::remove) and
/// [`protect`](Self::protect) is the implementation's business: when they return, no CPU may
/// use the old translation.
///
/// [`VmMap`]: crate::VmMap
pub trait Pmap {
    /// Maps the page at `va` to `frame` with `prot`, replacing any translation of `va`.
    /// `wired` pages must stay mapped until [`set_wired`](Self::set_wired) clears it or the
    /// range is removed.
    ///
    /// # Errors
    ///
    /// [`PmapError::NoMemory`] when a page-table page cannot be allocated: `va` is then left
    /// with its old translation or with none (a pmap that must break the old translation
    /// before making the new one may not be able to restore it), never with a partial one;
    /// the next access faults and retries. [`PmapError::BadAddress`] when `va` cannot be
    /// mapped.
    fn enter(
        &mut self,
        va: VirtAddr,
        frame: PhysAddr,
        prot: VmProt,
        wired: bool,
    ) -> Result<(), PmapError>;

    /// Removes every translation in `[start, end)`, wired or not.
    fn remove(&mut self, start: VirtAddr, end: VirtAddr);

    /// Lowers the protection of every translation in `[start, end)` to at most `prot` (the
    /// intersection of its protection and `prot`; no right is ever added this way). Used to
    /// write-protect pages for copy on write.
    fn protect(&mut self, start: VirtAddr, end: VirtAddr, prot: VmProt);

    /// Marks the translation of `va` wired or pageable (no-op when `va` is not mapped).
    fn set_wired(&mut self, va: VirtAddr, wired: bool);
}

#[cfg(feature = "std")]
mod soft {
    use alloc::collections::BTreeMap;

    use machvm_addr::{PhysAddr, VirtAddr, VmProt};

    use super::Pmap;
    use crate::PmapError;

    /// One translation of a [`SoftPmap`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SoftMapping {
        /// The frame the page maps.
        pub frame: PhysAddr,
        /// The rights the translation grants.
        pub prot: VmProt,
        /// Whether the translation is wired.
        pub wired: bool,
    }

    /// A software pmap (feature `std`): a B-tree from page address to translation, for host
    /// tests and simulators. A simulated CPU looks addresses up with
    /// [`translate`](Self::translate) and faults into the map when the translation is
    /// missing or does not grant the access.
    #[derive(Clone, Debug, Default)]
    pub struct SoftPmap {
        map: BTreeMap<u64, SoftMapping>,
        page_size: u64,
        enters: u64,
    }

    impl SoftPmap {
        /// An empty pmap for pages of `page_size` bytes (used to find the page of an
        /// address in [`translate`](Self::translate)).
        #[must_use]
        pub fn new(page_size: u64) -> Self {
            Self {
                map: BTreeMap::new(),
                page_size,
                enters: 0,
            }
        }

        /// The translation of the page holding `va`, if any.
        #[must_use]
        pub fn translate(&self, va: VirtAddr) -> Option<SoftMapping> {
            let page = va.as_u64() & !(self.page_size.wrapping_sub(1));
            self.map.get(&page).copied()
        }

        /// The number of translations.
        #[must_use]
        pub fn len(&self) -> usize {
            self.map.len()
        }

        /// Returns whether there are no translations.
        #[must_use]
        pub fn is_empty(&self) -> bool {
            self.map.is_empty()
        }

        /// Every translation in address order.
        pub fn iter(&self) -> impl Iterator<Item = (VirtAddr, SoftMapping)> + '_ {
            self.map.iter().map(|(va, m)| (VirtAddr::new(*va), *m))
        }

        /// How many times [`Pmap::enter`] was called.
        #[must_use]
        pub fn enters(&self) -> u64 {
            self.enters
        }
    }

    impl Pmap for SoftPmap {
        fn enter(
            &mut self,
            va: VirtAddr,
            frame: PhysAddr,
            prot: VmProt,
            wired: bool,
        ) -> Result<(), PmapError> {
            self.enters += 1;
            self.map
                .insert(va.as_u64(), SoftMapping { frame, prot, wired });
            Ok(())
        }

        fn remove(&mut self, start: VirtAddr, end: VirtAddr) {
            let keys: alloc::vec::Vec<u64> = self
                .map
                .range(start.as_u64()..end.as_u64())
                .map(|(k, _)| *k)
                .collect();
            for k in keys {
                self.map.remove(&k);
            }
        }

        fn protect(&mut self, start: VirtAddr, end: VirtAddr, prot: VmProt) {
            for (_, m) in self.map.range_mut(start.as_u64()..end.as_u64()) {
                m.prot &= prot;
            }
        }

        fn set_wired(&mut self, va: VirtAddr, wired: bool) {
            if let Some(m) = self.map.get_mut(&va.as_u64()) {
                m.wired = wired;
            }
        }
    }
}

#[cfg(feature = "std")]
pub use soft::{SoftMapping, SoftPmap};
