//! The pager protocol (`MemoryObject`): how an object's pages come in from and go out to their
//! backing store.

use core::fmt;

use machvm_addr::VmProt;

use crate::PagerError;

/// What a pager did with a page request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PageIn {
    /// The page's data was written into the buffer.
    Filled,
    /// The pager has no data for this offset: a hole of a file or past its end (the page
    /// reads as zeros), or an anonymous page never paged out (look further down the shadow
    /// chain, or zero-fill).
    Absent,
}

/// Why a page goes back to its pager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PageOutKind {
    /// Page-out under memory pressure: the resident copy is about to be freed.
    Evict,
    /// A clean-up (`msync`, synchronize): the page stays resident and becomes clean.
    Clean,
}

/// A pager: the backing store of a VM object (Mach's memory object). The default pager
/// (compressor + swap) backs anonymous memory, the vnode pager files, the device pager device
/// memory.
///
/// The VM system never holds an object lock while it calls a pager, so a pager may block, do
/// I/O or call back into the VM system. Every method takes `&self`: pagers are shared.
pub trait MemoryObject: Send + Sync + fmt::Debug {
    /// Fills `page` (one page) with the data at `offset` (page-aligned, in the object's
    /// offsets). `access` is what the faulting access needs.
    ///
    /// # Errors
    ///
    /// A [`PagerError`] when the data exists but cannot be read; the fault fails.
    fn data_request(
        &self,
        offset: u64,
        page: &mut [u8],
        access: VmProt,
    ) -> Result<PageIn, PagerError>;

    /// Takes the page at `offset` back (its contents in `page`).
    ///
    /// # Errors
    ///
    /// A [`PagerError`] when the page could not be stored; the page stays resident.
    fn data_return(&self, offset: u64, page: &[u8], kind: PageOutKind) -> Result<(), PagerError>;

    /// Returns whether the pager holds data for `offset` (a page-in would return
    /// [`PageIn::Filled`]). The default pager answers from its slot map; file pagers answer
    /// `true` within the file.
    fn has_page(&self, offset: u64) -> bool;

    /// The object no longer needs the pager's copy of the page at `offset` (it was freed or
    /// overwritten as a whole); the pager may drop it.
    fn data_discard(&self, offset: u64) {
        let _ = offset;
    }

    /// Asks for more access to a page the pager locked (for example write access to a page
    /// of a read-only file). The default grants it.
    ///
    /// # Errors
    ///
    /// A [`PagerError`] when the access is refused.
    fn data_unlock(&self, offset: u64, access: VmProt) -> Result<(), PagerError> {
        let _ = (offset, access);
        Ok(())
    }

    /// Makes `[offset, offset + length)` durable in the backing store (after the VM system
    /// returned the dirty pages with [`data_return`](Self::data_return)).
    ///
    /// # Errors
    ///
    /// A [`PagerError`] when the backing store failed.
    fn synchronize(&self, offset: u64, length: u64) -> Result<(), PagerError> {
        let _ = (offset, length);
        Ok(())
    }

    /// The object was destroyed: release everything held for it.
    fn terminate(&self) {}

    /// The last mapping of the object was removed.
    fn last_unmap(&self) {}
}
