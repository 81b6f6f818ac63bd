//! `x86_64` register values and descriptors for TLB maintenance (host-testable).
//!
//! Facts used (Intel SDM Vol. 3A §4.10.1 "Process-Context Identifiers", §4.10.4 "Invalidation
//! of TLBs and Paging-Structure Caches", §2.5 "Control Registers"; Vol. 2 "INVPCID", "MOV—Move
//! to/from Control Registers", "CPUID"):
//!
//! - With CR4.PCIDE = 1, CR3\[11:0\] is the current PCID and a `MOV` to CR3 whose bit 63 is 1
//!   keeps the TLB entries of the new PCID (bit 63 is not stored; CR3 reads return it as 0).
//!   With bit 63 = 0 it invalidates the non-global entries of that PCID.
//! - CR4.PCIDE (bit 17) can only be set while CR3\[11:0\] = 000H in IA-32e mode. A `MOV` to
//!   CR4 that changes CR4.PGE (bit 7) invalidates every TLB entry, global ones included, for
//!   every PCID. CR4.LA57 (bit 12) selects 5-level paging.
//! - The `INVPCID` descriptor is 128 bits: PCID in bits \[11:0\], bits \[63:12\] must be zero,
//!   the linear address in bits \[127:64\] (used only by type 0, which faults on a
//!   non-canonical address). Types: 0 individual address (except globals), 1 single context
//!   (except globals), 2 all contexts including globals, 3 all contexts except globals.
//! - CPUID.01H:ECX bit 17 reports PCIDs; CPUID.(EAX=07H, ECX=0):EBX bit 10 reports `INVPCID`.

use machvm_addr::{PageSize, PhysAddr, VirtAddr};
use machvm_sync::atomic::{AtomicU64, Ordering};

use super::ArchError;
use crate::Asid;

/// Bits in a PCID (CR3\[11:0\]).
pub const PCID_BITS: u8 = 12;
/// Number of distinct PCIDs (4096).
pub const PCID_COUNT: usize = 1 << PCID_BITS;
/// Mask of the PCID field of CR3 (bits \[11:0\]).
pub const CR3_PCID_MASK: u64 = (1 << PCID_BITS) - 1;
/// CR3 bit 63: with CR4.PCIDE = 1, a `MOV` to CR3 with this bit set does not invalidate the
/// new PCID's TLB entries (Intel SDM Vol. 3A §4.10.4.1).
pub const CR3_NO_FLUSH: u64 = 1 << 63;
/// CR3 bits \[51:12\]: the physical address of the top-level page table.
const CR3_ROOT_MASK: u64 = 0x000f_ffff_ffff_f000;
/// CR4.PGE (bit 7): global pages enabled (Intel SDM Vol. 3A §2.5).
pub const CR4_PGE: u64 = 1 << 7;
/// CR4.LA57 (bit 12): 5-level paging, 57-bit linear addresses (Intel SDM Vol. 3A §2.5).
pub const CR4_LA57: u64 = 1 << 12;
/// CR4.PCIDE (bit 17): process-context identifiers enabled (Intel SDM Vol. 3A §2.5).
pub const CR4_PCIDE: u64 = 1 << 17;

/// Returns `pcid` as the 12-bit CR3 field.
const fn pcid_field(pcid: Asid) -> Result<u64, ArchError> {
    if (pcid.as_u16() as u64) > CR3_PCID_MASK {
        Err(ArchError::AsidTooWide {
            asid: pcid,
            bits: PCID_BITS,
        })
    } else {
        Ok(pcid.as_u16() as u64)
    }
}

/// A CR3 value for IA-32e paging with CR4.PCIDE = 1: root table address, PCID, and the
/// no-flush bit.
///
/// With CR4.PCIDE = 0 the low 12 bits are the PWT/PCD cache controls instead; a value built
/// with PCID 0 and no-flush off is right for that mode too (write-back root table). LAM bits
/// (61, 62) are not modelled and are zero in values built here.
///
/// # Examples
///
/// ```
/// use machvm_addr::PhysAddr;
/// use machvm_tlb::Asid;
/// use machvm_tlb::arch::Cr3;
///
/// let cr3 = Cr3::new(PhysAddr::new(0x12_3000), Asid::new(0x45), true)?;
/// assert_eq!(cr3.bits(), 0x8000_0000_0012_3045);
/// assert_eq!(cr3.pcid(), Asid::new(0x45));
/// assert!(cr3.is_no_flush());
/// # Ok::<(), machvm_tlb::arch::ArchError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cr3(u64);

impl Cr3 {
    /// Returns the CR3 value that loads the tables at `root` with `pcid`; `no_flush` sets bit
    /// 63 so the load keeps the PCID's cached translations.
    ///
    /// # Errors
    ///
    /// - [`ArchError::Misaligned`] if `root` is not 4 KiB aligned.
    /// - [`ArchError::AsidTooWide`] if `pcid` is above 0xfff.
    pub const fn new(root: PhysAddr, pcid: Asid, no_flush: bool) -> Result<Self, ArchError> {
        if !PageSize::Size4KiB.is_aligned(root.as_u64()) {
            return Err(ArchError::Misaligned {
                addr: root.as_u64(),
                align: PageSize::Size4KiB.bytes(),
            });
        }
        let pcid = match pcid_field(pcid) {
            Ok(field) => field,
            Err(e) => return Err(e),
        };
        let flag = if no_flush { CR3_NO_FLUSH } else { 0 };
        Ok(Self(root.as_u64() | pcid | flag))
    }

    /// Wraps a raw value (for example one read from CR3).
    #[inline]
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// Returns the raw value to write to CR3.
    #[inline]
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Returns the physical address of the top-level table (bits \[51:12\]).
    #[inline]
    pub const fn root(self) -> PhysAddr {
        PhysAddr::new_truncate(self.0 & CR3_ROOT_MASK)
    }

    /// Returns the PCID field (bits \[11:0\]; meaningful only with CR4.PCIDE = 1).
    #[inline]
    pub const fn pcid(self) -> Asid {
        Asid::new((self.0 & CR3_PCID_MASK) as u16)
    }

    /// Returns whether bit 63 (no flush) is set.
    #[inline]
    pub const fn is_no_flush(self) -> bool {
        self.0 & CR3_NO_FLUSH != 0
    }

    /// Returns the value with bit 63 set to `no_flush`.
    #[inline]
    #[must_use]
    pub const fn with_no_flush(self, no_flush: bool) -> Self {
        if no_flush {
            Self(self.0 | CR3_NO_FLUSH)
        } else {
            Self(self.0 & !CR3_NO_FLUSH)
        }
    }
}

/// The `INVPCID` invalidation types (the register operand; Intel SDM Vol. 2, `INVPCID`).
// Exhaustive on purpose: the SDM defines exactly four types and any other value faults (#GP).
#[allow(clippy::exhaustive_enums)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum InvpcidKind {
    /// Type 0: the translations of one linear address in one PCID, except global ones.
    IndividualAddress = 0,
    /// Type 1: every translation of one PCID, except global ones.
    SingleContext = 1,
    /// Type 2: every translation of every PCID, global ones included.
    AllContextsWithGlobals = 2,
    /// Type 3: every translation of every PCID, except global ones.
    AllContexts = 3,
}

impl InvpcidKind {
    /// Returns the value of the register operand.
    #[inline]
    pub const fn as_u64(self) -> u64 {
        self as u64
    }
}

/// The 128-bit memory operand of `INVPCID`: PCID in bits \[11:0\] of the first quadword
/// (bits \[63:12\] zero), linear address in the second.
///
/// # Examples
///
/// ```
/// use machvm_addr::VirtAddr;
/// use machvm_tlb::Asid;
/// use machvm_tlb::arch::InvpcidDescriptor;
///
/// let d = InvpcidDescriptor::new(Asid::new(0xabc), VirtAddr::new(0x7fff_f000))?;
/// assert_eq!(d.to_qwords(), [0xabc, 0x7fff_f000]);
/// # Ok::<(), machvm_tlb::arch::ArchError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C, align(16))]
pub struct InvpcidDescriptor {
    pcid: u64,
    addr: u64,
}

impl InvpcidDescriptor {
    /// Returns the descriptor for address `addr` in `pcid` (type 0).
    ///
    /// `addr` must be canonical for the paging mode in use (48-bit without LA57) or type 0
    /// faults; [`X86Tlb`](crate::arch) checks this before issuing the instruction.
    ///
    /// # Errors
    ///
    /// - [`ArchError::AsidTooWide`] if `pcid` is above 0xfff.
    pub const fn new(pcid: Asid, addr: VirtAddr) -> Result<Self, ArchError> {
        match pcid_field(pcid) {
            Ok(pcid) => Ok(Self {
                pcid,
                addr: addr.as_u64(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Returns the descriptor for every address of `pcid` (type 1; the address is ignored).
    ///
    /// # Errors
    ///
    /// - [`ArchError::AsidTooWide`] if `pcid` is above 0xfff.
    pub const fn for_pcid(pcid: Asid) -> Result<Self, ArchError> {
        Self::new(pcid, VirtAddr::zero())
    }

    /// Returns the all-zero descriptor used by types 2 and 3 (which ignore it).
    #[inline]
    pub const fn all() -> Self {
        Self { pcid: 0, addr: 0 }
    }

    /// Returns the PCID field.
    #[inline]
    pub const fn pcid(self) -> Asid {
        Asid::new(self.pcid as u16)
    }

    /// Returns the linear-address field.
    #[inline]
    pub const fn addr(self) -> u64 {
        self.addr
    }

    /// Returns the two quadwords as they lie in memory (low first).
    #[inline]
    pub const fn to_qwords(self) -> [u64; 2] {
        [self.pcid, self.addr]
    }
}

/// The `x86_64` TLB features that decide which instructions are usable.
///
/// Decoding is pure ([`from_cpuid`](Self::from_cpuid)); `X86Features::detect` executes
/// `CPUID` on `x86_64` builds. A kernel may also state the features itself with
/// [`new`](Self::new) (for example to turn `INVPCID` off under a hypervisor that emulates it
/// slowly).
///
/// # Examples
///
/// ```
/// use machvm_tlb::arch::X86Features;
///
/// let f = X86Features::from_cpuid(0xd, 1 << 17, 1 << 10);
/// assert!(f.has_pcid() && f.has_invpcid());
/// // Leaf 7 is only meaningful when the maximum basic leaf reaches it.
/// assert!(!X86Features::from_cpuid(0x5, 1 << 17, 1 << 10).has_invpcid());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct X86Features {
    pcid: bool,
    invpcid: bool,
}

impl X86Features {
    /// Returns features given one by one.
    #[inline]
    pub const fn new(pcid: bool, invpcid: bool) -> Self {
        Self { pcid, invpcid }
    }

    /// Decodes CPUID results: `max_leaf` is CPUID.00H:EAX, `leaf1_ecx` is CPUID.01H:ECX (bit 17
    /// = PCID), `leaf7_ebx` is CPUID.(EAX=07H, ECX=0):EBX (bit 10 = `INVPCID`), ignored when
    /// `max_leaf < 7`.
    pub const fn from_cpuid(max_leaf: u32, leaf1_ecx: u32, leaf7_ebx: u32) -> Self {
        Self {
            pcid: leaf1_ecx & (1 << 17) != 0,
            invpcid: max_leaf >= 7 && leaf7_ebx & (1 << 10) != 0,
        }
    }

    /// Returns whether the CPU supports PCIDs (CR4.PCIDE may be set).
    #[inline]
    pub const fn has_pcid(self) -> bool {
        self.pcid
    }

    /// Returns whether the CPU has `INVPCID`.
    #[inline]
    pub const fn has_invpcid(self) -> bool {
        self.invpcid
    }
}

/// Number of 64-bit words in a [`StalePcids`] set.
const STALE_WORDS: usize = PCID_COUNT / 64;

/// A set of PCIDs whose cached translations on this CPU may be stale.
///
/// Without `INVPCID` a CPU can only invalidate translations of its *current* PCID. An
/// invalidation aimed at another PCID marks it here instead, and the next switch to that
/// PCID loads CR3 without the no-flush bit, which drops its non-global entries
/// (`X86Tlb::switch_address_space` does this).
///
/// 4096 bits in 64 atomic words from `machvm_sync::atomic`, so the set is loom-checkable and
/// can be marked from interrupt context.
///
/// # Examples
///
/// ```
/// use machvm_tlb::Asid;
/// use machvm_tlb::arch::StalePcids;
///
/// let stale = StalePcids::new();
/// stale.mark(Asid::new(7))?;
/// assert!(stale.is_marked(Asid::new(7)));
/// assert_eq!(stale.take(Asid::new(7)), Ok(true)); // take clears
/// assert_eq!(stale.take(Asid::new(7)), Ok(false));
/// # Ok::<(), machvm_tlb::arch::ArchError>(())
/// ```
#[derive(Debug)]
pub struct StalePcids {
    words: [AtomicU64; STALE_WORDS],
}

impl StalePcids {
    /// Returns an empty set.
    pub fn new() -> Self {
        Self {
            words: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Returns the word and bit of `pcid`.
    fn slot(&self, pcid: Asid) -> Result<(&AtomicU64, u64), ArchError> {
        let raw = pcid.as_u16() as usize;
        match self.words.get(raw / 64) {
            Some(word) if raw < PCID_COUNT => Ok((word, 1 << (raw % 64))),
            _ => Err(ArchError::AsidTooWide {
                asid: pcid,
                bits: PCID_BITS,
            }),
        }
    }

    /// Marks `pcid` stale.
    ///
    /// # Errors
    ///
    /// - [`ArchError::AsidTooWide`] if `pcid` is above 0xfff.
    pub fn mark(&self, pcid: Asid) -> Result<(), ArchError> {
        let (word, bit) = self.slot(pcid)?;
        // Release: the page-table writes that made the PCID's entries stale happen before
        // the mark; `take`'s Acquire pairs with it, so a CR3 load that follows `take` sees them.
        word.fetch_or(bit, Ordering::Release);
        Ok(())
    }

    /// Marks every PCID stale.
    pub fn mark_all(&self) {
        for word in &self.words {
            // Release: as in `mark`.
            word.store(u64::MAX, Ordering::Release);
        }
    }

    /// Clears the set (after an invalidation of every PCID).
    pub fn clear_all(&self) {
        for word in &self.words {
            // Relaxed: clearing only ever loses marks that the full invalidation which the
            // caller issues next makes unnecessary; it publishes nothing.
            word.store(0, Ordering::Relaxed);
        }
    }

    /// Returns whether `pcid` is marked (`false` for a PCID above 0xfff, which cannot be).
    pub fn is_marked(&self, pcid: Asid) -> bool {
        match self.slot(pcid) {
            // Acquire: pairs with the Release in `mark`.
            Ok((word, bit)) => word.load(Ordering::Acquire) & bit != 0,
            Err(_) => false,
        }
    }

    /// Clears the mark of `pcid` and returns whether it was set.
    ///
    /// # Errors
    ///
    /// - [`ArchError::AsidTooWide`] if `pcid` is above 0xfff.
    pub fn take(&self, pcid: Asid) -> Result<bool, ArchError> {
        let (word, bit) = self.slot(pcid)?;
        // AcqRel: Acquire pairs with `mark`'s Release (the page-table writes are visible
        // before the flushing CR3 load); Release keeps the read-modify-write ordered after
        // earlier marks of other PCIDs in the same word.
        Ok(word.fetch_and(!bit, Ordering::AcqRel) & bit != 0)
    }
}

impl Default for StalePcids {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cr3_places_root_pcid_and_no_flush() {
        // Intel SDM Vol. 3A §4.5 (Table 4-12/4-13): root in [51:12], PCID in [11:0] with
        // PCIDE = 1; §4.10.4.1: bit 63 is the no-flush hint.
        let c = Cr3::new(PhysAddr::new(0x000f_ffff_ffff_f000), Asid::new(0xfff), true).unwrap();
        assert_eq!(c.bits(), 0x800f_ffff_ffff_ffff);
        assert_eq!(c.root(), PhysAddr::new(0x000f_ffff_ffff_f000));
        assert_eq!(c.pcid(), Asid::new(0xfff));
        assert!(c.is_no_flush());
        let flushing = c.with_no_flush(false);
        assert_eq!(flushing.bits(), 0x000f_ffff_ffff_ffff);
        assert!(!flushing.is_no_flush());
        assert_eq!(flushing.with_no_flush(true), c);
        let plain = Cr3::new(PhysAddr::new(0x1000), Asid::KERNEL, false).unwrap();
        assert_eq!(plain.bits(), 0x1000);
        assert_eq!(Cr3::from_bits(0x1000), plain);
    }

    #[test]
    fn cr3_rejects_bad_roots_and_pcids() {
        assert_eq!(
            Cr3::new(PhysAddr::new(0x1800), Asid::KERNEL, false),
            Err(ArchError::Misaligned {
                addr: 0x1800,
                align: 0x1000
            })
        );
        assert_eq!(
            Cr3::new(PhysAddr::new(0x1000), Asid::new(0x1000), false),
            Err(ArchError::AsidTooWide {
                asid: Asid::new(0x1000),
                bits: 12
            })
        );
    }

    #[test]
    fn invpcid_descriptor_layout() {
        // Intel SDM Vol. 2, INVPCID, "INVPCID Descriptor": PCID [11:0], reserved [63:12],
        // linear address [127:64]; 16 bytes.
        assert_eq!(core::mem::size_of::<InvpcidDescriptor>(), 16);
        let d =
            InvpcidDescriptor::new(Asid::new(0x123), VirtAddr::new(0xffff_8000_0000_1000)).unwrap();
        assert_eq!(d.to_qwords(), [0x123, 0xffff_8000_0000_1000]);
        assert_eq!(d.pcid(), Asid::new(0x123));
        assert_eq!(d.addr(), 0xffff_8000_0000_1000);
        // The in-memory layout is the two quadwords, low first.
        // SAFETY: `InvpcidDescriptor` is `repr(C)` with two `u64` fields and no padding, so it
        // has the size and a stricter alignment than `[u64; 2]`.
        let raw: [u64; 2] = unsafe { core::mem::transmute(d) };
        assert_eq!(raw, [0x123, 0xffff_8000_0000_1000]);
        assert_eq!(
            InvpcidDescriptor::for_pcid(Asid::new(7))
                .unwrap()
                .to_qwords(),
            [7, 0]
        );
        assert_eq!(InvpcidDescriptor::all().to_qwords(), [0, 0]);
        assert!(InvpcidDescriptor::for_pcid(Asid::new(0x1000)).is_err());
    }

    #[test]
    fn invpcid_kinds_are_the_sdm_type_numbers() {
        assert_eq!(InvpcidKind::IndividualAddress.as_u64(), 0);
        assert_eq!(InvpcidKind::SingleContext.as_u64(), 1);
        assert_eq!(InvpcidKind::AllContextsWithGlobals.as_u64(), 2);
        assert_eq!(InvpcidKind::AllContexts.as_u64(), 3);
    }

    #[test]
    fn features_decode_cpuid_bits() {
        // CPUID.01H:ECX[17] = PCID; CPUID.(07H,0):EBX[10] = INVPCID.
        assert_eq!(
            X86Features::from_cpuid(7, 1 << 17, 0),
            X86Features::new(true, false)
        );
        assert_eq!(
            X86Features::from_cpuid(7, 0, 1 << 10),
            X86Features::new(false, true)
        );
        assert_eq!(
            X86Features::from_cpuid(7, !(1 << 17), !(1 << 10)),
            X86Features::new(false, false)
        );
        assert_eq!(
            X86Features::from_cpuid(6, u32::MAX, u32::MAX),
            X86Features::new(true, false)
        );
    }

    #[test]
    fn stale_set_marks_takes_and_clears() {
        let s = StalePcids::new();
        for p in [0u16, 1, 63, 64, 65, 4095] {
            assert!(!s.is_marked(Asid::new(p)));
            s.mark(Asid::new(p)).unwrap();
            assert!(s.is_marked(Asid::new(p)));
        }
        assert!(!s.is_marked(Asid::new(2)));
        assert_eq!(s.take(Asid::new(64)), Ok(true));
        assert_eq!(s.take(Asid::new(64)), Ok(false));
        assert!(s.is_marked(Asid::new(65)), "neighbours untouched");
        s.clear_all();
        assert!(!s.is_marked(Asid::new(4095)));
        s.mark_all();
        assert!(s.is_marked(Asid::new(1234)));
        let wide = Asid::new(4096);
        assert_eq!(
            s.mark(wide),
            Err(ArchError::AsidTooWide {
                asid: wide,
                bits: 12
            })
        );
        assert!(s.take(wide).is_err());
        assert!(!s.is_marked(wide));
    }
}
