//! The format trait: everything the engine needs to know about one translation format.
//!
//! Levels are numbered from the leaf: level 0 holds the smallest pages (x86 PT, aarch64 L3),
//! level `LEVELS - 1` is the root. An entry at level `l` covers `granule << (l * INDEX_BITS)`
//! bytes.

use machvm_addr::{PageSize, PhysAddr, VaWidth};

use crate::attrs::{PageAttrs, Region};
use crate::error::PageTableError;

/// What an entry holds, as the engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::exhaustive_enums)] // an entry is one of these three in every format
pub enum Entry {
    /// Not valid: the hardware faults on it.
    Invalid,
    /// A pointer to the next-level table.
    Table(PhysAddr),
    /// A page or block mapping of the level's size starting at the address.
    Leaf(PhysAddr),
}

/// Accessed and dirty state of a leaf entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccessState {
    /// The hardware (or software) marked the page accessed since the last clear.
    pub accessed: bool,
    /// The page was written since the last clear.
    pub dirty: bool,
}

/// The largest contiguous group a format may declare ([`Format::CONTIGUOUS_PAGES`]).
pub const MAX_CONTIGUOUS_PAGES: usize = 128;

/// A translation format: geometry, entry encodings and attribute translation.
///
/// The engine (`PageTable`) is generic over this trait; there is no per-architecture copy of
/// the walk. Formats are zero-sized types; every method is a small pure function on raw entry
/// values that the engine inlines.
///
/// # Safety
///
/// The engine follows table pointers decoded by [`classify`](Self::classify) and writes the
/// tables they point to. Implementers promise that:
///
/// - `classify(table_entry(pa), l)` is `Entry::Table(pa)` for every level `l > 0`, and
///   `classify(leaf_template(..) | pa, l)` is `Entry::Leaf(pa)` for levels with a leaf size;
/// - `classify(0, l)` is `Entry::Invalid`, and any entry with bit 0 clear is invalid;
/// - templates and updated entries from [`leaf_template`](Self::leaf_template),
///   [`split_template`](Self::split_template), [`reprotect`](Self::reprotect) and
///   [`clear_access`](Self::clear_access) keep the address bits as given (templates have them
///   zero);
/// - the geometry constants describe tables the hardware walks the same way (so a table frame
///   of `GRANULE` bytes holds every entry index the engine computes);
/// - `CONTIGUOUS_PAGES` is 0 or a power of two of at most [`MAX_CONTIGUOUS_PAGES`] that divides
///   the entries of a level-0 table, and `CONTIGUOUS_BIT` is not an address bit (`classify`
///   ignores it; `split_template` and `reprotect` drop it).
pub unsafe trait Format: Copy + Send + Sync + 'static {
    /// A short name such as `"x86_64-4level"` (used in benchmark rows and Debug output).
    const NAME: &'static str;
    /// Number of levels in a walk (2..=5).
    const LEVELS: u8;
    /// The granule: table size and smallest page size.
    const GRANULE: PageSize;
    /// Index bits per table below the root.
    const INDEX_BITS: u32;
    /// Index bits of the root table (may be fewer than `INDEX_BITS`).
    const ROOT_INDEX_BITS: u32;
    /// The size of each half of the address space the format translates.
    const VA_WIDTH: VaWidth;
    /// Whether one root translates both halves (x86_64) or one region per root (aarch64).
    const BOTH_HALVES: bool;
    /// Whether changing a live entry's output address or size requires break-before-make.
    const NEEDS_BBM: bool;
    /// Exclusive upper bound of encodable output addresses.
    const PHYS_LIMIT: u64;
    /// Level-0 entries in a contiguous group (0 if the format has no contiguous hint): an
    /// aligned group of this many pages that maps one aligned physical run with the same
    /// attributes may carry [`CONTIGUOUS_BIT`](Self::CONTIGUOUS_BIT) in every entry, so the
    /// TLB can cache the group as one entry (Arm ARM D8.6.1). At most
    /// [`MAX_CONTIGUOUS_PAGES`].
    const CONTIGUOUS_PAGES: usize = 0;
    /// The contiguous-hint bit of a level-0 leaf (0 if none).
    const CONTIGUOUS_BIT: u64 = 0;

    /// Returns the page or block size a leaf at `level` maps, or `None` if the level holds
    /// only tables.
    fn leaf_size(level: u8) -> Option<PageSize>;

    /// Encodes a pointer to a next-level table at `table`.
    fn table_entry(table: PhysAddr) -> u64;

    /// Decodes a raw entry found at `level`.
    fn classify(raw: u64, level: u8) -> Entry;

    /// Encodes the attribute bits of a leaf at `level` (address bits zero).
    ///
    /// # Errors
    ///
    /// - [`PageTableError::InvalidAttributes`] if the format cannot express `attrs`.
    fn leaf_template(attrs: &PageAttrs, level: u8) -> Result<u64, PageTableError>;

    /// Decodes the attributes of a leaf entry at `level`.
    fn leaf_attrs(raw: u64, level: u8) -> PageAttrs;

    /// Returns the template (attribute bits, address zero) for the leaves at `level - 1` that
    /// replace the leaf `raw` at `level` when it is split, preserving its attributes.
    fn split_template(raw: u64, level: u8) -> u64;

    /// Returns the leaf `raw` at `level` with the attributes of `template` (from
    /// [`leaf_template`](Self::leaf_template) for the same level), keeping its address and its
    /// accessed/dirty state (a format that encodes "dirty" in its write permission must carry
    /// it over into a software bit when write access is removed).
    fn reprotect(raw: u64, level: u8, template: u64) -> u64;

    /// Returns whether replacing the live leaf `old` by `new` (same level) requires
    /// break-before-make: on aarch64 a change of output address, memory type, shareability,
    /// global bit or contiguous hint does (Arm ARM D8.16.1); permission and access-flag changes
    /// do not. Formats without that rule keep the default, `false`.
    fn change_needs_break(old: u64, new: u64) -> bool {
        let _ = (old, new);
        false
    }

    /// Returns the accessed/dirty state of the leaf `raw`.
    fn access_state(raw: u64) -> AccessState;

    /// Returns `raw` with its accessed and dirty state cleared (the bits to clear are the
    /// `true` fields of `which`).
    fn clear_access(raw: u64, which: AccessState) -> u64;

    /// Returns the value of the root register (CR3 / TTBRn) for `root` tagged with `asid`
    /// (a PCID on x86_64; ignored when the format has none).
    fn root_register(root: PhysAddr, asid: u16) -> u64;

    /// Returns whether `region` is one this format can translate.
    fn supports_region(region: Region) -> bool {
        match region {
            Region::Both => Self::BOTH_HALVES,
            Region::Lower | Region::Upper => !Self::BOTH_HALVES,
        }
    }
}

/// Geometry helpers derived from a format's constants.
pub(crate) struct Geo<F>(core::marker::PhantomData<F>);

impl<F: Format> Geo<F> {
    pub(crate) const ROOT: u8 = F::LEVELS - 1;
    pub(crate) const GRANULE_SHIFT: u32 = F::GRANULE.shift();
    pub(crate) const TABLE_BYTES: usize = F::GRANULE.bytes() as usize;

    /// Shift of the VA bits indexing a table at `level`.
    #[inline(always)]
    pub(crate) const fn shift(level: u8) -> u32 {
        Self::GRANULE_SHIFT + level as u32 * F::INDEX_BITS
    }

    /// Number of entries of a table at `level`.
    #[inline(always)]
    pub(crate) const fn entries(level: u8) -> usize {
        if level == Self::ROOT {
            1 << F::ROOT_INDEX_BITS
        } else {
            1 << F::INDEX_BITS
        }
    }

    /// Bytes covered by one entry at `level`.
    #[inline(always)]
    pub(crate) const fn entry_span(level: u8) -> u64 {
        1u64 << Self::shift(level)
    }

    /// Whether the leaf `raw` at `level` carries the contiguous hint.
    #[inline(always)]
    pub(crate) const fn hinted(raw: u64, level: u8) -> bool {
        F::CONTIGUOUS_BIT != 0 && level == 0 && raw & F::CONTIGUOUS_BIT != 0
    }

    /// Index of `va` in a table at `level`.
    #[inline(always)]
    pub(crate) const fn index(va: u64, level: u8) -> usize {
        ((va >> Self::shift(level)) as usize) & (Self::entries(level) - 1)
    }
}
