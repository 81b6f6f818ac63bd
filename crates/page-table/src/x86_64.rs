//! The x86_64 formats: 4-level paging (48-bit VA, root PML4) and 5-level paging (LA57,
//! 57-bit VA, root PML5).
//!
//! Bit positions follow the Intel SDM Vol. 3A §4.5 (tables 4-15 to 4-20). Both halves of the
//! address space are translated through one root: the upper half (kernel) is the upper half of
//! the root's entries. `NX` needs `IA32_EFER.NXE`; memory types assume the PAT layout
//! [`X86_PAT_MSR`]; global pages need `CR4.PGE`.

use machvm_addr::{PageSize, PhysAddr, VaWidth, VmProt};

use crate::attrs::{MemType, PageAttrs, SwFlags};
use crate::error::{AttrProblem, PageTableError};
use crate::format::{AccessState, Entry, Format};

/// Present (SDM §4.5, bit 0).
const P: u64 = 1 << 0;
/// Read/write: writes allowed if set (bit 1).
const RW: u64 = 1 << 1;
/// User/supervisor: user-mode accesses allowed if set (bit 2).
const US: u64 = 1 << 2;
/// Page-level write-through, PAT index bit 0 (bit 3).
const PWT: u64 = 1 << 3;
/// Page-level cache disable, PAT index bit 1 (bit 4).
const PCD: u64 = 1 << 4;
/// Accessed (bit 5).
const A: u64 = 1 << 5;
/// Dirty, leaf entries only (bit 6).
const D: u64 = 1 << 6;
/// Page size in PDPTEs/PDEs (bit 7); in 4 KiB PTEs the same bit is PAT index bit 2.
const PS: u64 = 1 << 7;
/// PAT index bit 2 in 4 KiB PTEs (bit 7).
const PAT_4K: u64 = 1 << 7;
/// Global (bit 8), with `CR4.PGE`.
const G: u64 = 1 << 8;
/// Software bit for [`SwFlags::WIRED`] (bit 9, ignored by the processor).
const SW_WIRED: u64 = 1 << 9;
/// Software bit for [`SwFlags::COW`] (bit 10, ignored by the processor).
const SW_COW: u64 = 1 << 10;
/// PAT index bit 2 in 2 MiB / 1 GiB entries (bit 12).
const PAT_HUGE: u64 = 1 << 12;
/// Execute-disable (bit 63), with `IA32_EFER.NXE`.
const NX: u64 = 1 << 63;
/// Physical address bits 51:12.
const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// The value for `IA32_PAT` (MSR 0x277) that the memory types assume: entries 0–3 are
/// write-back, write-through, write-combining and uncacheable, repeated for 4–7.
///
/// Entries 0, 1 and 3 equal the power-on defaults; entry 2 is UC- by default, so a kernel
/// that never programs the PAT gets uncached (not write-combining) frame buffers — slower,
/// never wrong.
pub const X86_PAT_MSR: u64 = 0x0001_0406_0001_0406;

/// x86_64 paging with `LEVELS` levels; use the aliases [`X86Pml4`] and [`X86Pml5`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct X86_64<const LEVELS: u8>;

/// x86_64 4-level paging: 48-bit virtual addresses, root PML4 (SDM §4.5).
pub type X86Pml4 = X86_64<4>;
/// x86_64 5-level paging (`CR4.LA57`): 57-bit virtual addresses, root PML5 (SDM §4.5).
pub type X86Pml5 = X86_64<5>;

const fn pat_index(mem: MemType) -> u64 {
    match mem {
        MemType::WriteBack => 0,
        MemType::WriteThrough => 1,
        MemType::WriteCombining => 2,
        MemType::Uncached | MemType::Device => 3,
    }
}

const fn mem_bits(mem: MemType, level: u8) -> u64 {
    let idx = pat_index(mem);
    let mut bits = 0;
    if idx & 1 != 0 {
        bits |= PWT;
    }
    if idx & 2 != 0 {
        bits |= PCD;
    }
    if idx & 4 != 0 {
        bits |= if level == 0 { PAT_4K } else { PAT_HUGE };
    }
    bits
}

const fn leaf_addr_mask(level: u8) -> u64 {
    // A 2 MiB / 1 GiB leaf's address is aligned to its size; bit 12 is PAT there.
    ADDR & !((1u64 << (12 + 9 * level as u32)) - 1)
}

// SAFETY: table entries decode to the address they were built from (bits 51:12, PS clear);
// leaves at levels 1 and 2 carry PS and decode through `leaf_addr_mask`, which matches the
// alignment the engine gives them; entries without P are invalid; templates never set address
// bits (PAT_HUGE is only set for levels >= 1, where it lies below the leaf's address mask);
// the geometry (512 entries of 8 bytes per 4 KiB table, 9 index bits per level) is the SDM's.
unsafe impl<const LEVELS: u8> Format for X86_64<LEVELS> {
    const NAME: &'static str = if LEVELS == 5 {
        "x86_64-5level"
    } else {
        "x86_64-4level"
    };
    const LEVELS: u8 = LEVELS;
    const GRANULE: PageSize = PageSize::Size4KiB;
    const INDEX_BITS: u32 = 9;
    const ROOT_INDEX_BITS: u32 = 9;
    const VA_WIDTH: VaWidth = if LEVELS == 5 {
        VaWidth::X86_64_5LEVEL
    } else {
        VaWidth::X86_64_4LEVEL
    };
    const BOTH_HALVES: bool = true;
    const NEEDS_BBM: bool = false;
    const PHYS_LIMIT: u64 = 1 << 52;

    #[inline(always)]
    fn leaf_size(level: u8) -> Option<PageSize> {
        match level {
            0 => Some(PageSize::Size4KiB),
            1 => Some(PageSize::Size2MiB),
            2 => Some(PageSize::Size1GiB),
            _ => None,
        }
    }

    #[inline(always)]
    fn table_entry(table: PhysAddr) -> u64 {
        // Permissive intermediate entries: the leaf decides (SDM §4.6: rights combine).
        table.as_u64() | P | RW | US
    }

    #[inline(always)]
    fn classify(raw: u64, level: u8) -> Entry {
        if raw & P == 0 {
            Entry::Invalid
        } else if level == 0 {
            Entry::Leaf(PhysAddr::new_truncate(raw & ADDR))
        } else if raw & PS == 0 {
            Entry::Table(PhysAddr::new_truncate(raw & ADDR))
        } else if level <= 2 {
            Entry::Leaf(PhysAddr::new_truncate(raw & leaf_addr_mask(level)))
        } else {
            // PS is reserved in PML4Es/PML5Es: the processor faults on such an entry.
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
        let mut bits = P | mem_bits(attrs.memory_type(), level);
        if level > 0 {
            bits |= PS;
        }
        if prot.contains(VmProt::WRITE) {
            bits |= RW;
        }
        if !prot.contains(VmProt::EXECUTE) {
            bits |= NX;
        }
        if attrs.is_user() {
            bits |= US;
        }
        if attrs.is_global() {
            bits |= G;
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

    fn leaf_attrs(raw: u64, level: u8) -> PageAttrs {
        let mut prot = VmProt::READ;
        if raw & RW != 0 {
            prot |= VmProt::WRITE;
        }
        if raw & NX == 0 {
            prot |= VmProt::EXECUTE;
        }
        let pat_hi = if level == 0 {
            raw & PAT_4K
        } else {
            raw & PAT_HUGE
        } != 0;
        let idx = u64::from(raw & PWT != 0) | (u64::from(raw & PCD != 0) << 1);
        let mem = match (pat_hi, idx) {
            (_, 0) => MemType::WriteBack,
            (_, 1) => MemType::WriteThrough,
            (_, 2) => MemType::WriteCombining,
            _ => MemType::Uncached,
        };
        let mut sw = SwFlags::empty();
        if raw & SW_WIRED != 0 {
            sw |= SwFlags::WIRED;
        }
        if raw & SW_COW != 0 {
            sw |= SwFlags::COW;
        }
        let attrs = PageAttrs::new(prot)
            .user(raw & US != 0)
            .global(raw & G != 0)
            .mem_type(mem)
            .sw(sw);
        if prot.contains(VmProt::WRITE | VmProt::EXECUTE) {
            attrs.allow_write_execute()
        } else {
            attrs
        }
    }

    #[inline]
    fn split_template(raw: u64, level: u8) -> u64 {
        let attrs = raw & !(ADDR | PAT_HUGE);
        let pat = raw & PAT_HUGE != 0;
        if level == 1 {
            // Children are 4 KiB PTEs: bit 7 becomes PAT, PS goes away.
            (attrs & !PS) | if pat { PAT_4K } else { 0 }
        } else {
            attrs | if pat { PAT_HUGE } else { 0 }
        }
    }

    #[inline(always)]
    fn reprotect(raw: u64, level: u8, template: u64) -> u64 {
        template | (raw & (leaf_addr_mask(level) | A | D))
    }

    #[inline(always)]
    fn access_state(raw: u64) -> AccessState {
        AccessState {
            accessed: raw & A != 0,
            dirty: raw & D != 0,
        }
    }

    #[inline(always)]
    fn clear_access(raw: u64, which: AccessState) -> u64 {
        let mut clear = 0;
        if which.accessed {
            clear |= A;
        }
        if which.dirty {
            clear |= D;
        }
        raw & !clear
    }

    fn root_register(root: PhysAddr, asid: u16) -> u64 {
        // CR3 bits 11:0 hold the PCID when CR4.PCIDE is set (SDM §4.10.1).
        root.as_u64() | u64::from(asid & 0xfff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw() -> PageAttrs {
        PageAttrs::new(VmProt::READ | VmProt::WRITE)
    }

    #[test]
    fn kernel_rw_4k_entry_has_p_rw_nx_and_the_address() {
        let t = X86Pml4::leaf_template(&rw(), 0).unwrap();
        assert_eq!(t | 0x1234_5000, 0x8000_0000_1234_5003);
        assert_eq!(
            X86Pml4::classify(t | 0x1234_5000, 0),
            Entry::Leaf(PhysAddr::new(0x1234_5000))
        );
    }

    #[test]
    fn huge_leaves_set_ps_and_put_pat_in_bit_12() {
        let wc = rw().mem_type(MemType::WriteCombining);
        assert_eq!(
            X86Pml4::leaf_template(&wc, 1).unwrap(),
            NX | PCD | PS | RW | P
        );
        assert_eq!(X86Pml4::leaf_template(&wc, 0).unwrap(), NX | PCD | RW | P);
        let raw = X86Pml4::leaf_template(&rw(), 2).unwrap() | 0x4000_0000;
        assert_eq!(
            X86Pml4::classify(raw, 2),
            Entry::Leaf(PhysAddr::new(0x4000_0000))
        );
    }

    #[test]
    fn user_global_exec_and_sw_bits() {
        let a = PageAttrs::new(VmProt::READ | VmProt::EXECUTE)
            .user(true)
            .global(true)
            .sw(SwFlags::WIRED | SwFlags::COW);
        let t = X86Pml4::leaf_template(&a, 0).unwrap();
        assert_eq!(t, P | US | G | SW_WIRED | SW_COW);
        assert_eq!(X86Pml4::leaf_attrs(t, 0), a);
    }

    #[test]
    fn write_execute_needs_explicit_permission_and_read_is_mandatory() {
        let wx = PageAttrs::new(VmProt::ALL);
        assert_eq!(
            X86Pml4::leaf_template(&wx, 0),
            Err(PageTableError::InvalidAttributes {
                problem: AttrProblem::WriteExecute
            })
        );
        assert!(X86Pml4::leaf_template(&wx.allow_write_execute(), 0).is_ok());
        assert_eq!(
            X86Pml4::leaf_template(&PageAttrs::new(VmProt::EXECUTE), 0),
            Err(PageTableError::InvalidAttributes {
                problem: AttrProblem::NoRead
            })
        );
        assert_eq!(
            X86Pml4::leaf_template(&PageAttrs::new(VmProt::NONE), 0),
            Err(PageTableError::InvalidAttributes {
                problem: AttrProblem::NoAccess
            })
        );
    }

    #[test]
    fn table_entries_are_permissive_and_decode_back() {
        let e = X86Pml5::table_entry(PhysAddr::new(0x7000));
        assert_eq!(e, 0x7007);
        for level in 1..5 {
            assert_eq!(
                X86Pml5::classify(e, level),
                Entry::Table(PhysAddr::new(0x7000))
            );
        }
        assert_eq!(X86Pml4::classify(0, 3), Entry::Invalid);
        assert_eq!(X86Pml4::classify(0x7000, 0), Entry::Invalid);
    }

    #[test]
    fn splitting_moves_pat_between_bit_12_and_bit_7() {
        let wc_hi = rw().mem_type(MemType::WriteCombining);
        // Index 2 has no PAT bit; force one to check the move.
        let block = X86Pml4::leaf_template(&wc_hi, 1).unwrap() | PAT_HUGE | 0x20_0000 | A | D;
        let child = X86Pml4::split_template(block, 1);
        assert_eq!(child & PS, PAT_4K, "bit 7 is PAT in the child PTEs");
        assert_eq!(child & (ADDR | PAT_HUGE), 0);
        assert_eq!(child & (A | D), A | D);
        let gig = X86Pml4::leaf_template(&rw(), 2).unwrap() | PAT_HUGE | 0x4000_0000;
        let child = X86Pml4::split_template(gig, 2);
        assert_eq!(child & (PS | PAT_HUGE), PS | PAT_HUGE);
    }

    #[test]
    fn reprotect_keeps_address_and_access_bits() {
        let raw = X86Pml4::leaf_template(&rw(), 1).unwrap() | 0x60_0000 | A | D;
        let ro_template = X86Pml4::leaf_template(&PageAttrs::new(VmProt::READ), 1).unwrap();
        let ro = X86Pml4::reprotect(raw, 1, ro_template);
        assert_eq!(ro, P | PS | NX | A | D | 0x60_0000);
    }

    #[test]
    fn access_state_and_clear() {
        let raw = P | A | D | 0x1000;
        assert_eq!(
            X86Pml4::access_state(raw),
            AccessState {
                accessed: true,
                dirty: true
            }
        );
        let c = X86Pml4::clear_access(
            raw,
            AccessState {
                accessed: true,
                dirty: false,
            },
        );
        assert_eq!(c, P | D | 0x1000);
    }

    #[test]
    fn cr3_carries_the_pcid() {
        assert_eq!(
            X86Pml4::root_register(PhysAddr::new(0x1000), 0x1abc),
            0x1abc
        );
        assert_eq!(X86Pml4::root_register(PhysAddr::new(0x5000), 7), 0x5007);
    }
}
