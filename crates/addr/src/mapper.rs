//! Turning physical ranges into pointers the running code may access.

use core::ptr::NonNull;

use crate::error::AddrError;
use crate::phys::PhysAddr;
use crate::virt::VaWidth;

/// Gives the current code access to physical memory (through an identity map, a direct map,
/// or a host buffer in simulation).
///
/// # Safety
///
/// Implementers promise that when [`phys_to_ptr`](Self::phys_to_ptr) returns `Ok(ptr)`:
///
/// - `ptr` is valid for reads and writes of `len` bytes for as long as the mapper is borrowed
///   and the physical memory exists;
/// - `ptr` has the same alignment as `pa` modulo 4 KiB (so a page-aligned `pa` gives a
///   page-aligned pointer);
/// - pointers for distinct physical bytes never alias, and the same physical byte always maps to
///   the same address;
/// - once `phys_to_ptr(pa, len)` has returned `Ok`, it keeps returning `Ok` with the same pointer
///   for that range (and every sub-range) for as long as the mapper exists, and
///   [`phys_to_ptr_unchecked`](Self::phys_to_ptr_unchecked), if overridden, returns that pointer.
///
/// The mapper does not synchronise accesses: users of the pointers must avoid data races.
///
/// # Examples
///
/// ```
/// use machvm_addr::{OffsetMapper, PhysAddr, PhysMapper};
///
/// // SAFETY: this example only computes pointers and never dereferences them.
/// let mapper = unsafe { OffsetMapper::new(0xffff_8000_0000_0000) };
/// let ptr = mapper.phys_to_ptr(PhysAddr::new(0x1000), 8)?;
/// assert_eq!(ptr.as_ptr().addr(), 0xffff_8000_0000_1000);
/// # Ok::<(), machvm_addr::AddrError>(())
/// ```
pub unsafe trait PhysMapper {
    /// Returns a pointer through which the `len` bytes at `pa` can be accessed.
    ///
    /// # Errors
    ///
    /// - [`AddrError::OutOfRange`] if the mapper cannot reach all of `[pa, pa + len)`.
    fn phys_to_ptr(&self, pa: PhysAddr, len: usize) -> Result<NonNull<u8>, AddrError>;

    /// Returns the pointer for a range this mapper has already accepted, without checking it
    /// again (the hot path of page-table walks, whose table frames were checked when they
    /// were allocated).
    ///
    /// The default calls [`phys_to_ptr`](Self::phys_to_ptr); mappers override it with the bare
    /// address computation.
    ///
    /// # Safety
    ///
    /// - `phys_to_ptr(pa, len)` (or a call for a range containing it) returned `Ok` on this
    ///   mapper before.
    #[inline]
    unsafe fn phys_to_ptr_unchecked(&self, pa: PhysAddr, len: usize) -> NonNull<u8> {
        match self.phys_to_ptr(pa, len) {
            Ok(ptr) => ptr,
            // SAFETY: the caller promises an earlier `Ok` for this range, and the trait's
            // contract makes every later call for it return `Ok` too.
            Err(_) => unsafe { core::hint::unreachable_unchecked() },
        }
    }
}

// SAFETY: forwarded to `M`, which keeps the promises; borrowing `&M` borrows `M`.
unsafe impl<M: PhysMapper + ?Sized> PhysMapper for &M {
    #[inline]
    fn phys_to_ptr(&self, pa: PhysAddr, len: usize) -> Result<NonNull<u8>, AddrError> {
        (**self).phys_to_ptr(pa, len)
    }

    #[inline]
    unsafe fn phys_to_ptr_unchecked(&self, pa: PhysAddr, len: usize) -> NonNull<u8> {
        // SAFETY: forwarded; the caller's promise about `self` is one about `**self`.
        unsafe { (**self).phys_to_ptr_unchecked(pa, len) }
    }
}

/// Returns the pointer for the virtual range `[pa + offset, pa + offset + len)` if that range is
/// non-null, canonical and does not cross the hole.
#[inline]
fn offset_ptr(offset: u64, pa: PhysAddr, len: usize) -> Result<NonNull<u8>, AddrError> {
    let out_of_range = AddrError::OutOfRange {
        addr: pa.as_u64(),
        len: len as u64,
    };
    let start = pa.as_u64().checked_add(offset).ok_or(out_of_range)?;
    let last = start
        .checked_add((len as u64).saturating_sub(1))
        .ok_or(out_of_range)?;
    let half = VaWidth::WIDEST.half_size();
    if !VaWidth::WIDEST.is_canonical(start)
        || !VaWidth::WIDEST.is_canonical(last)
        || (start < half) != (last < half)
    {
        return Err(out_of_range);
    }
    NonNull::new(core::ptr::with_exposed_provenance_mut(start as usize)).ok_or(out_of_range)
}

/// Maps physical addresses to the same virtual addresses (MMU off, or an identity map).
///
/// Physical address 0 cannot be returned as a pointer and is reported as out of range.
///
/// # Examples
///
/// ```
/// use machvm_addr::{IdentityMapper, PhysAddr, PhysMapper};
///
/// // SAFETY: this example only computes pointers and never dereferences them.
/// let mapper = unsafe { IdentityMapper::new() };
/// assert_eq!(mapper.phys_to_ptr(PhysAddr::new(0x4000_0000), 16)?.as_ptr().addr(), 0x4000_0000);
/// assert!(mapper.phys_to_ptr(PhysAddr::zero(), 1).is_err());
/// # Ok::<(), machvm_addr::AddrError>(())
/// ```
#[derive(Debug)]
pub struct IdentityMapper {
    _private: (),
}

impl IdentityMapper {
    /// Returns an identity mapper.
    ///
    /// # Safety
    ///
    /// - Every physical address that is dereferenced through this mapper is accessible at the
    ///   equal virtual address (the MMU is off or identity-maps it) while the mapper exists.
    pub const unsafe fn new() -> Self {
        Self { _private: () }
    }
}

// SAFETY: `new`'s caller vouches that PA == VA is accessible; distinct physical bytes get
// distinct addresses and the alignment is preserved because the mapping is the identity.
unsafe impl PhysMapper for IdentityMapper {
    #[inline]
    fn phys_to_ptr(&self, pa: PhysAddr, len: usize) -> Result<NonNull<u8>, AddrError> {
        offset_ptr(0, pa, len)
    }
}

/// Maps physical address `pa` to virtual address `pa + offset` (a direct map, like a kernel's
/// physmap).
///
/// # Examples
///
/// See [`PhysMapper`].
#[derive(Debug)]
pub struct OffsetMapper {
    offset: u64,
}

impl OffsetMapper {
    /// Returns a mapper for a direct map at `offset`.
    ///
    /// # Safety
    ///
    /// - Every physical address dereferenced through this mapper is mapped read-write at
    ///   `pa + offset` while the mapper exists.
    /// - `offset` is a multiple of 4 KiB.
    pub const unsafe fn new(offset: u64) -> Self {
        Self { offset }
    }

    /// Returns the offset added to physical addresses.
    pub const fn offset(&self) -> u64 {
        self.offset
    }
}

// SAFETY: `new`'s caller vouches for the direct map and a page-aligned offset; adding one fixed
// offset keeps distinct physical bytes distinct and preserves alignment modulo 4 KiB.
unsafe impl PhysMapper for OffsetMapper {
    #[inline]
    fn phys_to_ptr(&self, pa: PhysAddr, len: usize) -> Result<NonNull<u8>, AddrError> {
        offset_ptr(self.offset, pa, len)
    }

    #[inline]
    unsafe fn phys_to_ptr_unchecked(&self, pa: PhysAddr, _len: usize) -> NonNull<u8> {
        let addr = pa.as_u64().wrapping_add(self.offset) as usize;
        // SAFETY: the caller promises `phys_to_ptr` accepted this range, which means the sum
        // neither overflowed nor was null.
        unsafe { NonNull::new_unchecked(core::ptr::with_exposed_provenance_mut(addr)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_mapper_checks_overflow_and_canonical_range() {
        // SAFETY: pointers are only compared, never dereferenced.
        let m = unsafe { OffsetMapper::new(0xffff_f000_0000_0000) };
        assert_eq!(m.offset(), 0xffff_f000_0000_0000);
        let p = m.phys_to_ptr(PhysAddr::new(0x1000), 0x1000).unwrap();
        assert_eq!(p.as_ptr().addr(), 0xffff_f000_0000_1000);
        let pa = PhysAddr::new(0xfff_ffff_f000);
        assert_eq!(
            m.phys_to_ptr(pa, 0x1000).map(|p| p.as_ptr().addr()),
            Ok(0xffff_ffff_ffff_f000)
        );
        assert_eq!(
            m.phys_to_ptr(pa, 0x1001),
            Err(AddrError::OutOfRange {
                addr: 0xfff_ffff_f000,
                len: 0x1001
            })
        );
        assert!(m.phys_to_ptr(PhysAddr::new(0x1_0000_0000_0000), 1).is_err());
    }

    #[test]
    fn identity_mapper_rejects_null_and_hole() {
        // SAFETY: pointers are only compared, never dereferenced.
        let m = unsafe { IdentityMapper::new() };
        assert!(m.phys_to_ptr(PhysAddr::zero(), 0).is_err());
        assert_eq!(
            m.phys_to_ptr(PhysAddr::MAX, 1).map(|p| p.as_ptr().addr()),
            Ok((1 << 52) - 1)
        );
        assert!(m.phys_to_ptr(PhysAddr::MAX, usize::MAX).is_err());
        // SAFETY: as above.
        let m = unsafe { OffsetMapper::new(0x00ff_f000_0000_0000) };
        assert!(
            m.phys_to_ptr(PhysAddr::new(0x10_0000_0000_0000 - 1), 1)
                .is_err()
        );
    }
}
