//! The aarch64 stage-1 formats (EL1&0 regime): 4 KiB, 16 KiB and 64 KiB granules.
//!
//! Bit positions follow the Arm Architecture Reference Manual (DDI 0487), chapter D8 ("The
//! AArch64 Virtual Memory System Architecture"): descriptor formats in D8.3, access permissions
//! in D8.4, hardware management of the Access flag and dirty state (`FEAT_HAFDBS`) in D8.5,
//! memory attributes (`MAIR_EL1` indirection) in D8.6. Measured facts (QEMU `-cpu max`) are in
//! the project's feasibility notes, §3.
//!
//! # Formats
//!
//! [`Aarch64<GRANULE_SHIFT, VA_BITS>`](Aarch64) is generic over the granule (`12`, `14` or
//! `16`) and the size of the translated region (`25..=48` bits, at least two levels). The
//! aliases cover the usual configurations:
//!
//! | alias | granule | VA bits | levels (Arm) | root index bits | leaves |
//! |---|---|---|---|---|---|
//! | [`A64Granule4K48`] | 4 KiB | 48 | 4 (L0–L3) | 9 | 4 KiB page, 2 MiB block (L2), 1 GiB block (L1) |
//! | [`A64Granule4K39`] | 4 KiB | 39 | 3 (L1–L3) | 9 | as above |
//! | [`A64Granule16K47`] | 16 KiB | 47 | 3 (L1–L3) | 11 | 16 KiB page, 32 MiB block (L2) |
//! | [`A64Granule16K48`] | 16 KiB | 48 | 4 (L0–L3) | 1 | as above |
//! | [`A64Granule64K42`] | 64 KiB | 42 | 2 (L2–L3) | 13 | 64 KiB page, 512 MiB block (L2) |
//! | [`A64Granule64K48`] | 64 KiB | 48 | 3 (L1–L3) | 6 | as above |
//!
//! Engine level `l` is Arm lookup level `3 - l` (level 0 holds the pages). There are no 4K L0
//! blocks, no 16K L1 blocks (those need `FEAT_LPA2`) and no 64K L1 blocks (`FEAT_LPA`); output
//! addresses are limited to 48 bits (no `FEAT_LPA`/`FEAT_LPA2`, so `TCR_EL1.IPS <= 0b101`).
//!
//! # Registers the formats assume
//!
//! - One table per region: [`Region::Lower`](crate::Region::Lower) for `TTBR0_EL1`,
//!   [`Region::Upper`](crate::Region::Upper) for `TTBR1_EL1`; load them with
//!   [`PageTable::root_register`](crate::PageTable::root_register).
//! - `TCR_EL1.T0SZ` / `T1SZ` = `64 - VA_BITS`. The granule fields are encoded differently for
//!   the two halves: `TG0` 4K = `0b00`, 64K = `0b01`, 16K = `0b10`; `TG1` 16K = `0b01`,
//!   4K = `0b10`, 64K = `0b11`.
//! - `TCR_EL1.HA` / `HD` (`FEAT_HAFDBS`) are optional; see *Accessed and dirty state*.
//! - `MAIR_EL1` = [`AARCH64_MAIR`]; the memory types map to its attribute indices.
//! - Table frames are granule-sized and granule-aligned (a 16 KiB table must be 16 KiB
//!   aligned): the engine allocates every table, the root included, as one granule frame.
//!
//! # Encodings
//!
//! Tables are `address | 0b11` with no hierarchical restrictions (`APTable`, `XNTable` and
//! `PXNTable` are zero). Pages (level 0) are `address | attrs | 0b11`, blocks
//! `address | attrs | 0b01`; `0b01` at level 0, or at a level without blocks, is invalid.
//! Every new leaf has the Access flag set (no Access-flag fault on first use), `SH` = inner
//! shareable for Normal memory (zero for Device memory, whose shareability is fixed), `nG` when
//! not global, `AP[1]` for user access. Execute permission uses the two execute-never bits:
//! user pages are always `PXN` (the kernel never executes user memory) and `UXN` unless
//! executable; kernel pages are always `UXN` and `PXN` unless executable.
//!
//! Read access is always granted by a valid stage-1 descriptor, so write-only and execute-only
//! protections are refused with [`AttrProblem::NoRead`] (as on x86_64; Arm's execute-only EL0
//! encoding with `AP = 0b01, UXN = 0` exists but is not offered, keeping the two architectures
//! symmetric).
//!
//! Software bits (ignored by hardware, D8.3): bit 55 records *dirty* for pages whose write
//! permission was removed, bit 56 is [`SwFlags::WIRED`], bit 57 is [`SwFlags::COW`].
//!
//! # Accessed and dirty state
//!
//! - **Accessed** is the Access flag `AF` (bit 10). [`Format::clear_access`] clears it; with
//!   `TCR_EL1.HA` the hardware sets it again on the next access, without it the next access
//!   takes an Access-flag fault that the OS resolves by setting `AF`.
//! - **Dirty** follows the `FEAT_HAFDBS` dirty-state scheme: a writable page carries `DBM`
//!   (bit 51); `AP[2]` clear means *writable and dirty*, `AP[2]` set means *writable but
//!   clean*. New writable mappings are created dirty (`AP[2]` clear), so they work without
//!   `TCR_EL1.HD` and without a fault handler. Clearing the dirty state sets `AP[2]`: with
//!   `TCR_EL1.HD` the hardware clears it again on the first write; without it that write takes
//!   a permission fault, and the OS marks the page dirty by clearing `AP[2]` (a page with
//!   `DBM` set is writable by intent). A page whose write permission is removed keeps its
//!   dirtiness in software bit 55 (as Linux does), so `dirty` survives any
//!   [`Format::reprotect`]. A writable entry without `DBM` (only found in tables built by
//!   other code) cannot record cleanliness and is always reported dirty.
//! - Reprotecting to a writable protection keeps the page's state: a dirty page becomes
//!   writable-dirty, a clean one writable-clean (so without `TCR_EL1.HD`, adding write access
//!   to a clean page means its first write faults once, as described above).
//!
//! # Break-before-make
//!
//! Block splits, and `protect_range` changes of the memory type, shareability or global bit
//! of live entries, go through an invalid entry and an invalidation by the caller's
//! `FlushHook` before the new entry is written (batched, 64 entries per invalidation).
//! Permission and access-flag changes are written in place and flushed once by the caller.
//!
//! The contiguous hint (bit 52, D8.6.1) is set on level-3 pages by
//! `PageTable::map_range_contiguous`, on aligned groups of 16 (4K granule), 128 (16K) or 32
//! (64K) pages whose physical run is aligned alike. Unmapping part of a group or changing the
//! attributes of any of it clears the hint of the whole group first (break-before-make through
//! the hook); harvesting reports and clears a group's accessed/dirty state as one, since the
//! hardware may record an access in any of its entries.
//!
//! # Not yet supported
//!
//! - The contiguous hint on blocks (only level-3 pages get it, from
//!   `PageTable::map_range_contiguous`).
//! - `FEAT_LPA`/`FEAT_LPA2` (52-bit output or input addresses), stage 2, EL2/EL3 regimes,
//!   hierarchical permission bits.

use machvm_addr::{PageSize, PhysAddr, VaWidth, VmProt};

use crate::attrs::{MemType, PageAttrs, SwFlags};
use crate::error::{AttrProblem, PageTableError};
use crate::format::{AccessState, Entry, Format};

/// The value for `MAIR_EL1` that the memory types assume: Attr0 Device-nGnRnE, Attr1 Normal
/// write-back, Attr2 Normal non-cacheable, Attr3 Normal write-through, Attr4 Device-nGnRE.
pub const AARCH64_MAIR: u64 = 0x0000_0004_bb44_ff00;

/// Valid (D8.3, bit 0).
const VALID: u64 = 1 << 0;
/// Descriptor type (bit 1): table (levels 0–2 of Arm) or page (Arm level 3) if set, block if
/// clear.
const TYPE: u64 = 1 << 1;
/// `AttrIndx[2:0]` (bits 4:2): index of the memory attributes in `MAIR_EL1`.
const ATTR_INDX_SHIFT: u32 = 2;
/// Mask of `AttrIndx`.
const ATTR_INDX: u64 = 0b111 << ATTR_INDX_SHIFT;
/// `AP[1]` (bit 6): EL0 (user) access allowed (D8.4).
const AP_USER: u64 = 1 << 6;
/// `AP[2]` (bit 7): read-only. With `DBM` set it means "writable, clean".
const AP_RO: u64 = 1 << 7;
/// `SH[1:0]` = `0b11` (bits 9:8): inner shareable.
const SH_INNER: u64 = 0b11 << 8;
/// Access flag (bit 10).
const AF: u64 = 1 << 10;
/// Not global (bit 11): the translation is tagged with the ASID.
const NG: u64 = 1 << 11;
/// Dirty bit modifier (bit 51, `FEAT_HAFDBS`): the page is writable; `AP[2]` records whether
/// it is dirty.
const DBM: u64 = 1 << 51;
/// Contiguous hint (bit 52): set on level-3 pages by `map_range_contiguous`.
const CONT: u64 = 1 << 52;
/// Privileged execute-never (bit 53).
const PXN: u64 = 1 << 53;
/// Unprivileged execute-never (bit 54).
const UXN: u64 = 1 << 54;
/// Software bit 55 (ignored by hardware): dirty, for pages without write permission.
const SW_DIRTY: u64 = 1 << 55;
/// Software bit 56: [`SwFlags::WIRED`].
const SW_WIRED: u64 = 1 << 56;
/// Software bit 57: [`SwFlags::COW`].
const SW_COW: u64 = 1 << 57;
/// Output addresses are 48 bits wide (no `FEAT_LPA`/`FEAT_LPA2`).
const OA_BITS: u32 = 48;

/// `MAIR_EL1` attribute index of Device-nGnRnE ([`MemType::Uncached`]).
const MAIR_DEVICE_NGNRNE: u64 = 0;
/// `MAIR_EL1` attribute index of Normal write-back ([`MemType::WriteBack`]).
const MAIR_NORMAL_WB: u64 = 1;
/// `MAIR_EL1` attribute index of Normal non-cacheable ([`MemType::WriteCombining`]).
const MAIR_NORMAL_NC: u64 = 2;
/// `MAIR_EL1` attribute index of Normal write-through ([`MemType::WriteThrough`]).
const MAIR_NORMAL_WT: u64 = 3;
/// `MAIR_EL1` attribute index of Device-nGnRE ([`MemType::Device`]).
const MAIR_DEVICE_NGNRE: u64 = 4;

/// aarch64 stage-1 translation (EL1&0) with a `2^GRANULE_SHIFT`-byte granule and
/// `VA_BITS`-bit regions; use the aliases such as [`A64Granule4K48`].
///
/// `GRANULE_SHIFT` must be 12, 14 or 16 and `VA_BITS` in `25..=48` with at least two lookup
/// levels; other values fail to compile when the format is used:
///
/// ```compile_fail
/// use machvm_page_table::{Aarch64, Format};
///
/// let levels = <Aarch64<13, 48> as Format>::LEVELS; // 8 KiB is not a granule
/// ```
///
/// # Examples
///
/// ```
/// use machvm_addr::{PageSize, PhysAddr, SimPhysMemory, VirtAddr, VmProt};
/// use machvm_page_table::{A64Granule16K47, NoFlush, PageAttrs, PageTable, Region};
///
/// let sim = SimPhysMemory::builder().size_bytes(1 << 20).build()?;
/// let mut alloc = sim.frame_allocator();
/// // The kernel half, loaded into TTBR1_EL1.
/// let mut pt = PageTable::<A64Granule16K47, _>::new(Region::Upper, &sim, &mut alloc)?;
/// let va = VirtAddr::new(0xffff_8000_0000_0000);
/// let attrs = PageAttrs::new(VmProt::READ | VmProt::WRITE).global(true);
/// // 32 MiB + 16 KiB: one level-2 block and one page.
/// let done = pt.map_range(va, PhysAddr::new(0x4000_0000), (32 << 20) + 0x4000, &attrs, PageSize::Size32MiB, &mut alloc)?;
/// pt.finish(done, &mut NoFlush, &mut alloc)?;
/// assert_eq!(pt.translate(va)?.size, PageSize::Size32MiB);
/// assert_eq!(pt.translate(VirtAddr::new(0xffff_8000_0200_0123))?.pa, PhysAddr::new(0x4200_0123));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Aarch64<const GRANULE_SHIFT: u32, const VA_BITS: u32>;

/// 4 KiB granule, 48-bit regions (`TxSZ = 16`): four levels, walk starts at level 0.
pub type A64Granule4K48 = Aarch64<12, 48>;
/// 4 KiB granule, 39-bit regions (`TxSZ = 25`): three levels, walk starts at level 1.
pub type A64Granule4K39 = Aarch64<12, 39>;
/// 16 KiB granule, 47-bit regions (`TxSZ = 17`): three levels, walk starts at level 1 (the
/// configuration of Apple Silicon).
pub type A64Granule16K47 = Aarch64<14, 47>;
/// 16 KiB granule, 48-bit regions (`TxSZ = 16`): four levels, the level-0 root has 2 entries.
pub type A64Granule16K48 = Aarch64<14, 48>;
/// 64 KiB granule, 42-bit regions (`TxSZ = 22`): two levels, walk starts at level 2.
pub type A64Granule64K42 = Aarch64<16, 42>;
/// 64 KiB granule, 48-bit regions (`TxSZ = 16`): three levels, the level-1 root has 64 entries.
pub type A64Granule64K48 = Aarch64<16, 48>;

impl<const GRANULE_SHIFT: u32, const VA_BITS: u32> Aarch64<GRANULE_SHIFT, VA_BITS> {
    /// Compile-time check of the parameters (evaluated by the geometry constants).
    const CHECK: () = {
        assert!(
            GRANULE_SHIFT == 12 || GRANULE_SHIFT == 14 || GRANULE_SHIFT == 16,
            "aarch64 granules are 4 KiB, 16 KiB or 64 KiB (GRANULE_SHIFT 12, 14 or 16)"
        );
        assert!(
            VA_BITS >= 25 && VA_BITS <= 48,
            "VA_BITS must be 25..=48 (TxSZ 16..=39; 52-bit VAs are not supported)"
        );
        assert!(
            VA_BITS > 2 * GRANULE_SHIFT - 3,
            "the engine needs at least two lookup levels"
        );
    };

    /// Index bits of a full table (8-byte descriptors in one granule).
    const INDEX: u32 = GRANULE_SHIFT - 3;

    /// Output address bits `[47:GRANULE_SHIFT]` of a table or page descriptor.
    const OA: u64 = ((1 << OA_BITS) - 1) & !((1 << GRANULE_SHIFT) - 1);

    /// Output address bits of a leaf at `level` (blocks are aligned to their size).
    #[inline(always)]
    const fn leaf_addr_mask(level: u8) -> u64 {
        Self::OA & !((1u64 << (GRANULE_SHIFT + level as u32 * Self::INDEX)) - 1)
    }

    /// Whether a leaf entry is writable (by intent: `DBM`, or hardware-writable).
    #[inline(always)]
    const fn writable(raw: u64) -> bool {
        raw & DBM != 0 || raw & AP_RO == 0
    }
}

const fn attr_index(mem: MemType) -> u64 {
    match mem {
        MemType::Uncached => MAIR_DEVICE_NGNRNE,
        MemType::WriteBack => MAIR_NORMAL_WB,
        MemType::WriteCombining => MAIR_NORMAL_NC,
        MemType::WriteThrough => MAIR_NORMAL_WT,
        MemType::Device => MAIR_DEVICE_NGNRE,
    }
}

const fn mem_type(index: u64) -> MemType {
    match index {
        MAIR_NORMAL_WB => MemType::WriteBack,
        MAIR_NORMAL_NC => MemType::WriteCombining,
        MAIR_NORMAL_WT => MemType::WriteThrough,
        MAIR_DEVICE_NGNRE => MemType::Device,
        // Index 0 and indices outside the layout (treated as the strictest type).
        _ => MemType::Uncached,
    }
}

const fn is_device(mem: MemType) -> bool {
    matches!(mem, MemType::Uncached | MemType::Device)
}

// SAFETY: table descriptors are `address | 0b11` and decode (bits 47:GRANULE_SHIFT) to the
// address they were built from, at every level above 0; leaves decode through
// `leaf_addr_mask`, which keeps every address bit a granule- or block-aligned address has;
// entries with bit 0 clear are invalid; templates, splits, reprotects and clears only touch
// bits 0–11 and 51–58, never address bits; the geometry is D8.2's: `2^(GRANULE_SHIFT - 3)`
// 8-byte descriptors per granule-sized table, and the root indexes the remaining
// `ROOT_INDEX_BITS` bits of a `VA_BITS` region (`CHECK` rejects other parameters).
unsafe impl<const GRANULE_SHIFT: u32, const VA_BITS: u32> Format
    for Aarch64<GRANULE_SHIFT, VA_BITS>
{
    const NAME: &'static str = match (GRANULE_SHIFT, VA_BITS) {
        (12, 48) => "aarch64-4k-48bit",
        (12, 39) => "aarch64-4k-39bit",
        (14, 47) => "aarch64-16k-47bit",
        (14, 48) => "aarch64-16k-48bit",
        (16, 42) => "aarch64-64k-42bit",
        (16, 48) => "aarch64-64k-48bit",
        (12, _) => "aarch64-4k",
        (14, _) => "aarch64-16k",
        _ => "aarch64-64k",
    };
    const LEVELS: u8 = {
        let () = Self::CHECK;
        (VA_BITS - GRANULE_SHIFT).div_ceil(Self::INDEX) as u8
    };
    const GRANULE: PageSize = {
        let () = Self::CHECK;
        match GRANULE_SHIFT {
            12 => PageSize::Size4KiB,
            14 => PageSize::Size16KiB,
            _ => PageSize::Size64KiB,
        }
    };
    const INDEX_BITS: u32 = Self::INDEX;
    const ROOT_INDEX_BITS: u32 = VA_BITS - GRANULE_SHIFT - (Self::LEVELS as u32 - 1) * Self::INDEX;
    const VA_WIDTH: VaWidth = {
        let () = Self::CHECK;
        match VaWidth::new(VA_BITS as u8) {
            Ok(width) => width,
            Err(_) => panic!("VA_BITS is not a valid width"),
        }
    };
    const BOTH_HALVES: bool = false;
    const NEEDS_BBM: bool = true;
    const PHYS_LIMIT: u64 = 1 << OA_BITS;
    // D8.6.1: 16 pages (64 KiB) with the 4K granule, 128 (2 MiB) with 16K, 32 (2 MiB) with 64K.
    const CONTIGUOUS_PAGES: usize = match GRANULE_SHIFT {
        12 => 16,
        14 => 128,
        _ => 32,
    };
    const CONTIGUOUS_BIT: u64 = CONT;

    #[inline(always)]
    fn leaf_size(level: u8) -> Option<PageSize> {
        match (GRANULE_SHIFT, level) {
            (_, 0) => Some(Self::GRANULE),
            // 4K granule: L2 and L1 blocks (D8.3).
            (12, 1) => Some(PageSize::Size2MiB),
            (12, 2) => Some(PageSize::Size1GiB),
            // 16K and 64K granules: L2 blocks only (L1 blocks need FEAT_LPA2 / FEAT_LPA).
            (14, 1) => Some(PageSize::Size32MiB),
            (16, 1) => Some(PageSize::Size512MiB),
            _ => None,
        }
    }

    #[inline(always)]
    fn table_entry(table: PhysAddr) -> u64 {
        // No APTable/XNTable/PXNTable restrictions: the leaf decides.
        table.as_u64() | TYPE | VALID
    }

    #[inline(always)]
    fn classify(raw: u64, level: u8) -> Entry {
        if raw & VALID == 0 {
            Entry::Invalid
        } else if raw & TYPE != 0 {
            let pa = PhysAddr::new_truncate(raw & Self::OA);
            if level == 0 {
                Entry::Leaf(pa)
            } else {
                Entry::Table(pa)
            }
        } else if level > 0 && Self::leaf_size(level).is_some() {
            Entry::Leaf(PhysAddr::new_truncate(raw & Self::leaf_addr_mask(level)))
        } else {
            // 0b01 is reserved at level 3 and a block where the granule has none: the walk
            // faults on it like on an invalid descriptor.
            Entry::Invalid
        }
    }

    #[inline]
    fn leaf_template(attrs: &PageAttrs, level: u8) -> Result<u64, PageTableError> {
        attrs.check_common()?;
        let prot = attrs.prot();
        if !prot.contains(VmProt::READ) {
            return Err(PageTableError::InvalidAttributes {
                problem: AttrProblem::NoRead,
            });
        }
        let mem = attrs.memory_type();
        let mut bits = VALID | AF | (attr_index(mem) << ATTR_INDX_SHIFT);
        if level == 0 {
            bits |= TYPE;
        }
        if !is_device(mem) {
            bits |= SH_INNER;
        }
        // Writable pages start writable-dirty: they work without TCR_EL1.HD.
        bits |= if prot.contains(VmProt::WRITE) {
            DBM
        } else {
            AP_RO
        };
        let exec = prot.contains(VmProt::EXECUTE);
        if attrs.is_user() {
            bits |= AP_USER | PXN;
            if !exec {
                bits |= UXN;
            }
        } else {
            bits |= UXN;
            if !exec {
                bits |= PXN;
            }
        }
        if !attrs.is_global() {
            bits |= NG;
        }
        let sw = attrs.sw_flags();
        if sw.contains(SwFlags::WIRED) {
            bits |= SW_WIRED;
        }
        if sw.contains(SwFlags::COW) {
            bits |= SW_COW;
        }
        Ok(bits)
    }

    fn leaf_attrs(raw: u64, _level: u8) -> PageAttrs {
        let user = raw & AP_USER != 0;
        let mut prot = VmProt::READ;
        if Self::writable(raw) {
            prot |= VmProt::WRITE;
        }
        let xn = if user { UXN } else { PXN };
        if raw & xn == 0 {
            prot |= VmProt::EXECUTE;
        }
        let mut sw = SwFlags::empty();
        if raw & SW_WIRED != 0 {
            sw |= SwFlags::WIRED;
        }
        if raw & SW_COW != 0 {
            sw |= SwFlags::COW;
        }
        let attrs = PageAttrs::new(prot)
            .user(user)
            .global(raw & NG == 0)
            .mem_type(mem_type((raw & ATTR_INDX) >> ATTR_INDX_SHIFT))
            .sw(sw);
        if prot.contains(VmProt::WRITE | VmProt::EXECUTE) {
            attrs.allow_write_execute()
        } else {
            attrs
        }
    }

    #[inline]
    fn split_template(raw: u64, level: u8) -> u64 {
        // Same attributes, access flag and dirty state; no address, no contiguous hint (nT,
        // bit 16 of 4K/16K blocks, lies inside the page address field and goes too).
        let attrs = raw & !(Self::OA | CONT | TYPE);
        if level <= 1 { attrs | TYPE } else { attrs }
    }

    #[inline(always)]
    fn reprotect(raw: u64, level: u8, template: u64) -> u64 {
        let dirty = Self::access_state(raw).dirty;
        let mut new =
            (template & !(AF | AP_RO | SW_DIRTY)) | (raw & (Self::leaf_addr_mask(level) | AF));
        if template & DBM != 0 {
            // Writable: the dirty state lives in AP[2] (clear = dirty).
            if !dirty {
                new |= AP_RO;
            }
        } else {
            // Read-only: AP[2] set, dirtiness kept in the software bit.
            new |= AP_RO;
            if dirty {
                new |= SW_DIRTY;
            }
        }
        new
    }

    #[inline(always)]
    fn access_state(raw: u64) -> AccessState {
        let valid = raw & VALID != 0;
        AccessState {
            accessed: valid && raw & AF != 0,
            dirty: valid && (raw & SW_DIRTY != 0 || raw & AP_RO == 0),
        }
    }

    #[inline(always)]
    fn clear_access(raw: u64, which: AccessState) -> u64 {
        if raw & VALID == 0 {
            return raw;
        }
        let mut new = raw;
        if which.accessed {
            new &= !AF;
        }
        if which.dirty {
            new &= !SW_DIRTY;
            if Self::writable(raw) {
                // Writable-clean: the next write sets AP[2] again (TCR_EL1.HD) or faults.
                new |= DBM | AP_RO;
            }
        }
        new
    }

    #[inline(always)]
    fn change_needs_break(old: u64, new: u64) -> bool {
        // Output address, AttrIndx, SH, nG and the contiguous hint are the fields whose
        // change on a live entry the architecture makes a break-before-make matter.
        let fields = Self::OA | ATTR_INDX | SH_INNER | NG | CONT;
        (old ^ new) & fields != 0
    }

    fn root_register(root: PhysAddr, asid: u16) -> u64 {
        // TTBRn_EL1: BADDR in bits 47:1, ASID in bits 63:48 (16-bit ASIDs need TCR_EL1.AS;
        // TCR_EL1.A1 selects whether TTBR0's or TTBR1's ASID is current). CnP (bit 0) clear.
        root.as_u64() | (u64::from(asid) << 48)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type G4 = A64Granule4K48;
    type G16 = A64Granule16K47;
    type G64 = A64Granule64K42;

    fn rw() -> PageAttrs {
        PageAttrs::new(VmProt::READ | VmProt::WRITE)
    }

    fn rx() -> PageAttrs {
        PageAttrs::new(VmProt::READ | VmProt::EXECUTE)
    }

    #[test]
    fn geometry_of_every_alias() {
        fn geo<F: Format>() -> (u8, PageSize, u32, u32, u8) {
            (
                F::LEVELS,
                F::GRANULE,
                F::INDEX_BITS,
                F::ROOT_INDEX_BITS,
                F::VA_WIDTH.bits(),
            )
        }
        assert_eq!(geo::<A64Granule4K48>(), (4, PageSize::Size4KiB, 9, 9, 48));
        assert_eq!(geo::<A64Granule4K39>(), (3, PageSize::Size4KiB, 9, 9, 39));
        assert_eq!(
            geo::<A64Granule16K47>(),
            (3, PageSize::Size16KiB, 11, 11, 47)
        );
        assert_eq!(
            geo::<A64Granule16K48>(),
            (4, PageSize::Size16KiB, 11, 1, 48)
        );
        assert_eq!(
            geo::<A64Granule64K42>(),
            (2, PageSize::Size64KiB, 13, 13, 42)
        );
        assert_eq!(
            geo::<A64Granule64K48>(),
            (3, PageSize::Size64KiB, 13, 6, 48)
        );
        assert_eq!(A64Granule16K48::NAME, "aarch64-16k-48bit");
        assert_eq!(Aarch64::<12, 36>::NAME, "aarch64-4k");
        assert_eq!(Aarch64::<12, 36>::LEVELS, 3);
        assert_eq!(Aarch64::<12, 36>::ROOT_INDEX_BITS, 6);
        const { assert!(!G4::BOTH_HALVES && G4::NEEDS_BBM) };
        assert_eq!(G64::PHYS_LIMIT, 1 << 48);
    }

    #[test]
    fn leaf_sizes_per_granule() {
        assert_eq!(G4::leaf_size(0), Some(PageSize::Size4KiB));
        assert_eq!(G4::leaf_size(1), Some(PageSize::Size2MiB));
        assert_eq!(G4::leaf_size(2), Some(PageSize::Size1GiB));
        assert_eq!(G4::leaf_size(3), None);
        assert_eq!(G16::leaf_size(0), Some(PageSize::Size16KiB));
        assert_eq!(G16::leaf_size(1), Some(PageSize::Size32MiB));
        assert_eq!(G16::leaf_size(2), None);
        assert_eq!(A64Granule16K48::leaf_size(3), None);
        assert_eq!(G64::leaf_size(0), Some(PageSize::Size64KiB));
        assert_eq!(G64::leaf_size(1), Some(PageSize::Size512MiB));
        assert_eq!(A64Granule64K48::leaf_size(2), None);
    }

    #[test]
    fn mair_layout_matches_the_attribute_indices() {
        let byte = |i: u64| (AARCH64_MAIR >> (8 * i)) & 0xff;
        assert_eq!(byte(MAIR_DEVICE_NGNRNE), 0x00);
        assert_eq!(byte(MAIR_NORMAL_WB), 0xff);
        assert_eq!(byte(MAIR_NORMAL_NC), 0x44);
        assert_eq!(byte(MAIR_NORMAL_WT), 0xbb);
        assert_eq!(byte(MAIR_DEVICE_NGNRE), 0x04);
    }

    #[test]
    fn kernel_rw_page_is_af_ish_wb_ng_uxn_pxn_dbm() {
        let t = G4::leaf_template(&rw(), 0).unwrap();
        assert_eq!(
            t,
            VALID | TYPE | (1 << 2) | SH_INNER | AF | NG | DBM | PXN | UXN
        );
        assert_eq!(t, 0x0068_0000_0000_0f07);
        assert_eq!(
            G4::classify(t | 0x1234_5000, 0),
            Entry::Leaf(PhysAddr::new(0x1234_5000))
        );
        assert_eq!(G4::leaf_attrs(t, 0), rw());
    }

    #[test]
    fn kernel_rx_user_rw_user_rx_and_device() {
        let krx = G4::leaf_template(&rx().global(true), 0).unwrap();
        assert_eq!(krx, VALID | TYPE | (1 << 2) | SH_INNER | AF | AP_RO | UXN);
        let urw = G4::leaf_template(&rw().user(true), 0).unwrap();
        assert_eq!(
            urw,
            VALID | TYPE | (1 << 2) | SH_INNER | AF | NG | AP_USER | DBM | PXN | UXN
        );
        let urx = G4::leaf_template(&rx().user(true), 0).unwrap();
        assert_eq!(
            urx,
            VALID | TYPE | (1 << 2) | SH_INNER | AF | NG | AP_USER | AP_RO | PXN
        );
        let dev = rw().mem_type(MemType::Device).global(true);
        let d = G4::leaf_template(&dev, 1).unwrap();
        assert_eq!(
            d,
            VALID | (4 << 2) | AF | DBM | PXN | UXN,
            "no SH for device, block type"
        );
        let strict = G4::leaf_template(&rw().mem_type(MemType::Uncached), 0).unwrap();
        assert_eq!(strict & (ATTR_INDX | SH_INNER), 0);
        for a in [rx().global(true), rw().user(true), rx().user(true), dev] {
            let t = G4::leaf_template(&a, 0).unwrap();
            assert_eq!(G4::leaf_attrs(t, 0), a);
        }
        for (mem, idx) in [
            (MemType::WriteThrough, 3),
            (MemType::WriteCombining, 2),
            (MemType::WriteBack, 1),
        ] {
            let t = G16::leaf_template(&rw().mem_type(mem), 0).unwrap();
            assert_eq!(t & (ATTR_INDX | SH_INNER), (idx << 2) | SH_INNER);
            assert_eq!(G16::leaf_attrs(t, 0).memory_type(), mem);
        }
        // Indices outside the layout decode as the strictest type.
        assert_eq!(
            G4::leaf_attrs(VALID | TYPE | (6 << 2), 0).memory_type(),
            MemType::Uncached
        );
    }

    #[test]
    fn sw_flags_and_write_execute() {
        let a = rx().user(true).sw(SwFlags::WIRED | SwFlags::COW);
        let t = G64::leaf_template(&a, 0).unwrap();
        assert_eq!(t & (SW_WIRED | SW_COW | SW_DIRTY), SW_WIRED | SW_COW);
        assert_eq!(G64::leaf_attrs(t, 0), a);
        let wx = PageAttrs::new(VmProt::ALL);
        assert_eq!(
            G4::leaf_template(&wx, 0),
            Err(PageTableError::InvalidAttributes {
                problem: AttrProblem::WriteExecute
            })
        );
        let t = G4::leaf_template(&wx.allow_write_execute(), 0).unwrap();
        assert_eq!(t & (PXN | UXN | DBM | AP_RO), UXN | DBM);
        assert_eq!(G4::leaf_attrs(t, 0), wx.allow_write_execute());
        for prot in [VmProt::EXECUTE, VmProt::WRITE] {
            assert_eq!(
                G4::leaf_template(&PageAttrs::new(prot), 0),
                Err(PageTableError::InvalidAttributes {
                    problem: AttrProblem::NoRead
                })
            );
        }
        assert_eq!(
            G4::leaf_template(&PageAttrs::new(VmProt::NONE), 0),
            Err(PageTableError::InvalidAttributes {
                problem: AttrProblem::NoAccess
            })
        );
    }

    #[test]
    fn address_masks_per_granule() {
        // Pages: bits 47:12, 47:14, 47:16.
        let t = VALID | TYPE;
        let junk = 0xffff_ffff_ffff_f000;
        assert_eq!(
            G4::classify(t | junk, 0),
            Entry::Leaf(PhysAddr::new(0xffff_ffff_f000))
        );
        assert_eq!(
            G16::classify(t | junk, 0),
            Entry::Leaf(PhysAddr::new(0xffff_ffff_c000))
        );
        assert_eq!(
            G64::classify(t | junk, 0),
            Entry::Leaf(PhysAddr::new(0xffff_ffff_0000))
        );
        // Blocks: aligned to 2 MiB / 1 GiB, 32 MiB, 512 MiB.
        let b = VALID;
        assert_eq!(
            G4::classify(b | junk, 1),
            Entry::Leaf(PhysAddr::new(0xffff_ffe0_0000))
        );
        assert_eq!(
            G4::classify(b | junk, 2),
            Entry::Leaf(PhysAddr::new(0xffff_c000_0000))
        );
        assert_eq!(
            G16::classify(b | junk, 1),
            Entry::Leaf(PhysAddr::new(0xffff_fe00_0000))
        );
        assert_eq!(
            G64::classify(b | junk, 1),
            Entry::Leaf(PhysAddr::new(0xffff_e000_0000))
        );
        // Tables: granule-aligned addresses.
        for level in 1..4 {
            let e = G4::table_entry(PhysAddr::new(0x8765_4000));
            assert_eq!(e, 0x8765_4003);
            assert_eq!(
                G4::classify(e, level),
                Entry::Table(PhysAddr::new(0x8765_4000))
            );
        }
        let e = G16::table_entry(PhysAddr::new(0x8765_c000));
        assert_eq!(
            G16::classify(e, 2),
            Entry::Table(PhysAddr::new(0x8765_c000))
        );
        let e = G64::table_entry(PhysAddr::new(0x8765_0000));
        assert_eq!(
            G64::classify(e, 1),
            Entry::Table(PhysAddr::new(0x8765_0000))
        );
    }

    #[test]
    fn reserved_and_invalid_encodings() {
        // Bit 0 clear: invalid whatever else is set.
        assert_eq!(G4::classify(0, 0), Entry::Invalid);
        assert_eq!(G4::classify(0xffff_ffff_ffff_fffe, 2), Entry::Invalid);
        // 0b01 at level 3 is reserved.
        assert_eq!(G4::classify(0x1000 | VALID, 0), Entry::Invalid);
        assert_eq!(G16::classify(0x4000 | VALID, 0), Entry::Invalid);
        // Blocks where the granule has none: 4K L0, 16K L1/L0, 64K L1.
        assert_eq!(G4::classify(VALID, 3), Entry::Invalid);
        assert_eq!(A64Granule16K48::classify(VALID, 2), Entry::Invalid);
        assert_eq!(A64Granule16K48::classify(VALID, 3), Entry::Invalid);
        assert_eq!(A64Granule64K48::classify(VALID, 2), Entry::Invalid);
    }

    #[test]
    fn split_template_per_granule() {
        let attrs = rw().user(true).sw(SwFlags::WIRED);
        // 4K: 1 GiB block -> 2 MiB blocks -> 4 KiB pages.
        let gig = G4::leaf_template(&attrs, 2).unwrap() | 0x4000_0000 | CONT;
        let child = G4::split_template(gig, 2);
        assert_eq!(child, G4::leaf_template(&attrs, 1).unwrap());
        let pages = G4::split_template(child | 0x20_0000, 1);
        assert_eq!(pages, G4::leaf_template(&attrs, 0).unwrap());
        assert_eq!(pages & (TYPE | VALID), TYPE | VALID);
        // 16K: 32 MiB block with a clean, not-accessed, software-dirty state.
        let blk = (G16::leaf_template(&rx(), 1).unwrap() & !AF) | SW_DIRTY | 0x200_0000;
        let p = G16::split_template(blk, 1);
        assert_eq!(p, (G16::leaf_template(&rx(), 0).unwrap() & !AF) | SW_DIRTY);
        assert_eq!(
            G16::classify(p | 0x200_4000, 0),
            Entry::Leaf(PhysAddr::new(0x200_4000))
        );
        // 64K: 512 MiB block, writable-clean, nT (bit 16) dropped.
        let blk = G64::leaf_template(&rw(), 1).unwrap() | AP_RO | (1 << 16) | 0x2000_0000;
        let p = G64::split_template(blk, 1);
        assert_eq!(p, G64::leaf_template(&rw(), 0).unwrap() | AP_RO);
        assert!(!G64::access_state(p).dirty);
    }

    fn states() -> [AccessState; 4] {
        let s = |accessed, dirty| AccessState { accessed, dirty };
        [
            s(false, false),
            s(false, true),
            s(true, false),
            s(true, true),
        ]
    }

    #[test]
    fn reprotect_keeps_address_and_access_state() {
        let prots = [
            rw(),
            PageAttrs::new(VmProt::READ),
            rx().user(true),
            rw().user(true).sw(SwFlags::COW),
            rw().mem_type(MemType::Device),
        ];
        for level in 0..3 {
            for from in prots {
                for to in prots {
                    for state in states() {
                        let pa = 0x4000_0000;
                        let fresh = G4::leaf_template(&from, level).unwrap() | pa;
                        // Reach `state` from a fresh (accessed, dirty if writable) entry.
                        let mut raw = G4::clear_access(
                            fresh,
                            AccessState {
                                accessed: !state.accessed,
                                dirty: true,
                            },
                        );
                        if state.dirty {
                            raw =
                                G4::reprotect(raw, level, G4::leaf_template(&rw(), level).unwrap());
                            raw &= !AP_RO; // written
                            raw =
                                G4::reprotect(raw, level, G4::leaf_template(&from, level).unwrap());
                        }
                        assert_eq!(G4::access_state(raw), state, "{from:?} {state:?}");
                        let t = G4::leaf_template(&to, level).unwrap();
                        let new = G4::reprotect(raw, level, t);
                        assert_eq!(G4::access_state(new), state, "{from:?} -> {to:?} {state:?}");
                        assert_eq!(G4::classify(new, level), Entry::Leaf(PhysAddr::new(pa)));
                        assert_eq!(
                            G4::leaf_attrs(new, level),
                            to,
                            "{from:?} -> {to:?} {state:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn dirty_survives_read_only_in_the_software_bit() {
        let raw = G4::leaf_template(&rw(), 0).unwrap() | 0x7000;
        assert_eq!(
            raw & (DBM | AP_RO),
            DBM,
            "new writable pages are writable-dirty"
        );
        let ro = G4::reprotect(
            raw,
            0,
            G4::leaf_template(&PageAttrs::new(VmProt::READ), 0).unwrap(),
        );
        assert_eq!(ro & (DBM | AP_RO | SW_DIRTY), AP_RO | SW_DIRTY);
        let back = G4::reprotect(ro, 0, G4::leaf_template(&rw(), 0).unwrap());
        assert_eq!(back, raw, "writable-dirty again, software bit gone");
        // A clean page made writable becomes writable-clean.
        let clean = G4::clear_access(
            ro,
            AccessState {
                accessed: false,
                dirty: true,
            },
        );
        assert_eq!(clean & SW_DIRTY, 0);
        let w = G4::reprotect(clean, 0, G4::leaf_template(&rw(), 0).unwrap());
        assert_eq!(w & (DBM | AP_RO), DBM | AP_RO);
    }

    #[test]
    fn access_state_and_clear() {
        let raw = G16::leaf_template(&rw(), 0).unwrap() | 0x8000_4000;
        assert_eq!(
            G16::access_state(raw),
            AccessState {
                accessed: true,
                dirty: true
            }
        );
        let c = G16::clear_access(
            raw,
            AccessState {
                accessed: true,
                dirty: false,
            },
        );
        assert_eq!(c, raw & !AF);
        let c = G16::clear_access(
            raw,
            AccessState {
                accessed: false,
                dirty: true,
            },
        );
        assert_eq!(c, raw | AP_RO, "writable-clean: DBM stays, AP[2] set");
        assert_eq!(G16::leaf_attrs(c, 0), rw(), "still writable");
        assert_eq!(
            G16::access_state(c),
            AccessState {
                accessed: true,
                dirty: false
            }
        );
        // Hardware dirty-bit update (TCR_EL1.HD) clears AP[2] again.
        assert!(G16::access_state(c & !AP_RO).dirty);
        // Read-only pages: clearing dirty only drops the software bit.
        let ro = G16::leaf_template(&PageAttrs::new(VmProt::READ), 0).unwrap() | SW_DIRTY;
        assert_eq!(
            G16::clear_access(
                ro,
                AccessState {
                    accessed: false,
                    dirty: true
                }
            ),
            ro & !SW_DIRTY
        );
        // A writable entry without DBM (foreign tables) is dirty; clearing gives it DBM.
        let foreign = VALID | TYPE | AF | 0x4000;
        assert!(G16::access_state(foreign).dirty);
        let c = G16::clear_access(
            foreign,
            AccessState {
                accessed: false,
                dirty: true,
            },
        );
        assert_eq!(c, foreign | DBM | AP_RO);
        // Invalid entries are left alone.
        assert_eq!(G16::access_state(0), AccessState::default());
        assert_eq!(
            G16::clear_access(
                0,
                AccessState {
                    accessed: true,
                    dirty: true
                }
            ),
            0
        );
    }

    #[test]
    fn ttbr_carries_the_asid_in_bits_63_48() {
        assert_eq!(
            G4::root_register(PhysAddr::new(0x4009_8000), 0),
            0x4009_8000
        );
        assert_eq!(
            G4::root_register(PhysAddr::new(0x4009_8000), 0xabcd),
            0xabcd_0000_4009_8000
        );
        assert_eq!(
            G64::root_register(PhysAddr::new(0x1_0000), 1),
            0x0001_0000_0001_0000
        );
    }
}
