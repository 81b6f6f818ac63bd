//! The hardware operations everything else in the crate is written against.
//!
//! [`TlbOps`] is implemented per architecture in [`arch`](crate::arch) (real instructions),
//! by the software TLB (`SoftTlb`, `std` feature) for host tests, and by anything a kernel
//! wants to plug in (a hypervisor's paravirtual flush, for example).

use machvm_addr::{PageSize, VirtAddr};

/// An address-space identifier: an aarch64 ASID (8 or 16 bits) or an x86_64 PCID (12 bits).
///
/// `Asid::KERNEL` (0) is the identifier of the kernel's own translations and is never handed
/// out to an address space by the allocators of this crate.
///
/// # Examples
///
/// ```
/// use machvm_tlb::Asid;
///
/// let a = Asid::new(42);
/// assert_eq!(a.as_u16(), 42);
/// assert_eq!(Asid::KERNEL.as_u16(), 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Asid(u16);

impl Asid {
    /// The kernel's identifier (0).
    pub const KERNEL: Self = Self(0);

    /// Wraps a raw identifier.
    #[inline]
    pub const fn new(raw: u16) -> Self {
        Self(raw)
    }

    /// Returns the raw identifier.
    #[inline]
    pub const fn as_u16(self) -> u16 {
        self.0
    }
}

/// What the TLB maintenance of a CPU can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TlbCaps {
    /// Invalidations reach every CPU that may cache the translation by themselves (aarch64
    /// `TLBI …IS` in the inner-shareable domain): a shootdown needs no IPI.
    pub broadcast: bool,
    /// A range of pages can be invalidated with one instruction (aarch64 `FEAT_TLBIRANGE`).
    pub range: bool,
    /// Translations are tagged with an address-space identifier (aarch64 ASIDs, x86_64 PCIDs
    /// when enabled), so switching address spaces needs no flush.
    pub tagged: bool,
    /// Bits in an address-space identifier (8 or 16 on aarch64, 12 on x86_64, 0 without tags).
    pub asid_bits: u8,
}

impl TlbCaps {
    /// Returns capabilities with every field given.
    pub const fn new(broadcast: bool, range: bool, tagged: bool, asid_bits: u8) -> Self {
        Self {
            broadcast,
            range,
            tagged,
            asid_bits,
        }
    }
}

/// TLB maintenance of one CPU (or, with [`TlbCaps::broadcast`], of every CPU it reaches).
///
/// A flush is a sequence `sync`, one or more `invalidate_*`, `complete`: on aarch64 that is
/// `DSB ISHST` (the page-table writes reach the walkers), the `TLBI`s, then `DSB ISH` + `ISB`
/// (the invalidations are finished everywhere and this CPU refetches); on x86_64 the
/// invalidations are synchronous and `sync`/`complete` do nothing.
///
/// Every method is safe to call: an invalidation never makes memory unsafe, it only costs
/// refills. Implementations whose instructions need privilege say so on their constructors.
pub trait TlbOps {
    /// Returns what this implementation can do.
    fn caps(&self) -> TlbCaps;

    /// Makes the page-table writes made so far visible to the hardware walkers before the
    /// invalidations that follow (aarch64 `DSB ISHST`; nothing on x86_64).
    fn sync(&self);

    /// Invalidates the translation of the page at `va` in address space `asid` (global
    /// translations of `va` too). `leaf_only` says only last-level entries changed, so cached
    /// intermediate entries may stay (aarch64 `TLBI VALE1IS` instead of `VAE1IS`).
    fn invalidate_page(&self, asid: Asid, va: VirtAddr, leaf_only: bool);

    /// Invalidates the translations of `[start, start + len)`, made of pages of at least
    /// `stride`, in address space `asid`.
    ///
    /// The default invalidates page by page; implementations with a range instruction
    /// override it.
    fn invalidate_range(
        &self,
        asid: Asid,
        start: VirtAddr,
        len: u64,
        stride: PageSize,
        leaf_only: bool,
    ) {
        // Every `stride` page that intersects the range, including a last one that the
        // range covers only partly when `start` is not aligned.
        let step = stride.bytes();
        let first = start.as_u64() & !(step - 1);
        let end = start.as_u64().saturating_add(len);
        let mut page = first;
        while len != 0 && page < end {
            let va = VirtAddr::new_truncate(page, machvm_addr::VaWidth::WIDEST);
            self.invalidate_page(asid, va, leaf_only);
            page = match page.checked_add(step) {
                Some(next) => next,
                None => break,
            };
        }
    }

    /// Invalidates every non-global translation of address space `asid`.
    fn invalidate_asid(&self, asid: Asid);

    /// Invalidates every translation, global ones included.
    fn invalidate_all(&self);

    /// Waits until the invalidations issued since the last `sync` are complete on every CPU
    /// they reach, and makes this CPU refetch (aarch64 `DSB ISH` + `ISB`; nothing on
    /// x86_64).
    fn complete(&self);
}
