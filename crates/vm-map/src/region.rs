//! Region reports: what `vmmap` shows for each entry, and a rendering in its style.

use alloc::collections::BTreeSet;
use alloc::sync::Arc;
use core::fmt;

use machvm_addr::{VirtAddr, VmProt};

use crate::VmMap;
use crate::entry::{VmMapEntry, VmTag};

/// How a region's memory is shared (the `SHRMOD` column of `vmmap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ShareMode {
    /// Copy on write: a copy is pending (needs-copy), the object shadows another whose pages
    /// it still shares, or a copy of it still shares its pages (`COW`).
    Cow,
    /// Private: only this entry references the object (`PRV`).
    Private,
    /// Shared memory: the object is mapped shared by other address spaces too (`SHM`).
    Shared,
    /// Nothing resident and no pager: the region has no contents yet (`NUL`).
    Empty,
    /// Private to this map but mapped by more than one of its entries (`ALI`).
    Aliased,
}

impl ShareMode {
    /// The three-letter code `vmmap` prints.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Self::Cow => "COW",
            Self::Private => "PRV",
            Self::Shared => "SHM",
            Self::Empty => "NUL",
            Self::Aliased => "ALI",
        }
    }
}

impl fmt::Display for ShareMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One region of a map, with `vmmap`'s columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Region {
    /// The region type (from the entry's tag).
    pub tag: VmTag,
    /// The first address.
    pub start: VirtAddr,
    /// The address just past the region.
    pub end: VirtAddr,
    /// Virtual size in bytes.
    pub virtual_bytes: u64,
    /// Resident size in bytes: pages resident in the entry's object or visible through its
    /// shadow chain.
    pub resident_bytes: u64,
    /// Current protection.
    pub protection: VmProt,
    /// Maximum protection.
    pub max_protection: VmProt,
    /// Share mode.
    pub share_mode: ShareMode,
    /// Wire count of the entry.
    pub wired_count: u32,
}

/// Writes `bytes` the way `vmmap` does: kilobytes, then megabytes and gigabytes for large
/// sizes.
struct Size(u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const K: u64 = 1024;
        let b = self.0;
        let text = if b < 10 * K * K {
            (b / K, "K")
        } else if b < 10 * K * K * K {
            (b / (K * K), "M")
        } else {
            (b / (K * K * K), "G")
        };
        f.pad(&alloc::format!("{}{}", text.0, text.1))
    }
}

impl fmt::Display for Region {
    /// One `vmmap` line: type, range, `[ VSIZE RSDNT]`, `cur/max`, `SM=mode`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = alloc::format!("{}", self.tag);
        write!(
            f,
            "{:<24} {:016x}-{:016x} [{:>6} {:>6}] {}/{} SM={}",
            name,
            self.start.as_u64(),
            self.end.as_u64(),
            Size(self.virtual_bytes),
            Size(self.resident_bytes),
            self.protection,
            self.max_protection,
            self.share_mode
        )
    }
}

/// A whole-map report in `vmmap`'s style ([`VmMap::report`]).
#[derive(Debug)]
pub struct MapReport<'a, P> {
    map: &'a VmMap<P>,
}

impl<P> fmt::Display for MapReport<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<24} {:<33} [{:>6} {:>6}] PRT/MAX SHRMOD",
            "REGION TYPE", "START - END", "VSIZE", "RSDNT"
        )?;
        for region in self.map.regions() {
            writeln!(f, "{region}")?;
        }
        Ok(())
    }
}

impl<P> VmMap<P> {
    /// The regions of the map in address order, one per entry, with `vmmap`'s columns.
    pub fn regions(&self) -> impl Iterator<Item = Region> + '_ {
        self.entries.values().map(move |e| self.region_of(e))
    }

    /// The region at `addr`, if mapped.
    #[must_use]
    pub fn region(&self, addr: VirtAddr) -> Option<Region> {
        self.lookup(addr).map(|e| self.region_of(e))
    }

    /// A report of every region, rendered in `vmmap`'s style by its `Display`.
    #[must_use]
    pub fn report(&self) -> MapReport<'_, P> {
        MapReport { map: self }
    }

    fn region_of(&self, e: &VmMapEntry) -> Region {
        let resident = self.visible_pages(e);
        let share_mode = if resident == 0 && e.object.pager().is_none() {
            ShareMode::Empty
        } else if e.needs_copy {
            ShareMode::Cow
        } else {
            let in_map = self
                .entries
                .values()
                .filter(|o| Arc::ptr_eq(&o.object, &e.object))
                .count();
            let wired_refs = self
                .wired
                .values()
                .flatten()
                .filter(|(o, _)| Arc::ptr_eq(o, &e.object))
                .count();
            let refs = Arc::strong_count(&e.object) - wired_refs;
            if refs > in_map {
                // Held elsewhere too: by other maps sharing it, or by shadows and copies of
                // a copy-on-write relationship.
                if e.is_shared {
                    ShareMode::Shared
                } else {
                    ShareMode::Cow
                }
            } else if e.object.shadow().is_some() {
                ShareMode::Cow
            } else if in_map > 1 {
                ShareMode::Aliased
            } else {
                ShareMode::Private
            }
        };
        Region {
            tag: e.tag,
            start: VirtAddr::new(e.start),
            end: VirtAddr::new(e.end),
            virtual_bytes: e.end - e.start,
            resident_bytes: resident * self.page_size,
            protection: e.protection,
            max_protection: e.max_protection,
            share_mode,
            wired_count: e.wired_count,
        }
    }

    /// Pages of the entry's window resident in its object or visible through the chain.
    fn visible_pages(&self, e: &VmMapEntry) -> u64 {
        let size = e.end - e.start;
        let mut seen = BTreeSet::new();
        let mut level = Some((e.object.clone(), e.offset));
        while let Some((object, base)) = level {
            object.for_each_page(|off, _| {
                if off >= base && off - base < size {
                    seen.insert(off - base);
                }
            });
            level = object.shadow().map(|s| (s.object, s.offset + base));
        }
        seen.len() as u64
    }
}
