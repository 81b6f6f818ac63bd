//! Map entries: one contiguous range of a map backed by a window of one VM object.

use core::fmt;

use machvm_addr::{VirtAddr, VmProt};
use machvm_vm_object::{MapperMark, ObjectRef};

use crate::MapError;
use crate::fault::CollapseHint;

/// What a child address space gets of an entry at [`fork`](crate::VmMap::fork)
/// (`vm_inherit_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Inheritance {
    /// The child maps the same object: writes on either side are seen by both
    /// (`VM_INHERIT_SHARE`).
    Share,
    /// The child gets a copy-on-write copy (`VM_INHERIT_COPY`, the default).
    #[default]
    Copy,
    /// The child gets a hole (`VM_INHERIT_NONE`).
    None,
}

impl Inheritance {
    /// The Mach value (share 0, copy 1, none 2).
    #[must_use]
    pub const fn as_raw(self) -> u32 {
        match self {
            Self::Share => 0,
            Self::Copy => 1,
            Self::None => 2,
        }
    }
}

impl TryFrom<u32> for Inheritance {
    type Error = MapError;

    /// Decodes a Mach inheritance value (a system-call argument).
    fn try_from(raw: u32) -> Result<Self, MapError> {
        match raw {
            0 => Ok(Self::Share),
            1 => Ok(Self::Copy),
            2 => Ok(Self::None),
            _ => Err(MapError::InvalidInheritance { raw }),
        }
    }
}

/// A user tag naming what a region is for (XNU's VM memory tag, the "REGION TYPE" column of
/// `vmmap`). Values below 256 follow the Mach numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct VmTag(
    /// The raw tag value.
    pub u8,
);

impl VmTag {
    /// Untagged memory (`vm_allocate` / anonymous `mmap`).
    pub const NONE: Self = Self(0);
    /// malloc's regions.
    pub const MALLOC: Self = Self(1);
    /// malloc's small-allocation regions.
    pub const MALLOC_SMALL: Self = Self(2);
    /// malloc's large allocations.
    pub const MALLOC_LARGE: Self = Self(3);
    /// malloc's huge allocations.
    pub const MALLOC_HUGE: Self = Self(4);
    /// malloc's tiny-allocation regions.
    pub const MALLOC_TINY: Self = Self(7);
    /// malloc's nano regions.
    pub const MALLOC_NANO: Self = Self(11);
    /// Thread stacks.
    pub const STACK: Self = Self(30);
    /// Guard regions.
    pub const GUARD: Self = Self(31);
    /// Shared libraries.
    pub const DYLIB: Self = Self(33);

    /// The region-type name `vmmap` prints, or `None` for a tag without one here.
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "VM_ALLOCATE",
            1 => "MALLOC",
            2 => "MALLOC_SMALL",
            3 => "MALLOC_LARGE",
            4 => "MALLOC_HUGE",
            7 => "MALLOC_TINY",
            11 => "MALLOC_NANO",
            30 => "Stack",
            31 => "Guard",
            33 => "Dylib",
            _ => return None,
        })
    }
}

impl fmt::Display for VmTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "memory tag={}", self.0),
        }
    }
}

/// One entry of a [`VmMap`](crate::VmMap): the pages `[start, end)` show the window
/// `[offset, offset + (end - start))` of `object`.
///
/// Entries are read through [`VmMap::lookup`](crate::VmMap::lookup) and
/// [`VmMap::entries`](crate::VmMap::entries); the map changes them.
#[derive(Clone, Debug)]
pub struct VmMapEntry {
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// Changed only through [`set_object`](Self::set_object), which keeps `mapper` in step.
    pub(crate) object: ObjectRef,
    /// This entry's mark on `object`: the object counts the entries, in every map, whose
    /// top object it is ([`VmObject::mappers`](machvm_vm_object::VmObject::mappers)). Those
    /// entries are the only holders of translations that can write the object's pages,
    /// which is what `fork` must know before it makes a delayed copy.
    pub(crate) mapper: MapperMark,
    pub(crate) offset: u64,
    pub(crate) protection: VmProt,
    pub(crate) max_protection: VmProt,
    pub(crate) inheritance: Inheritance,
    /// The object must be shadowed before the first write through this entry.
    pub(crate) needs_copy: bool,
    /// The object may be written through other mappings directly (shared memory): a
    /// symmetric copy is not allowed (an anonymous object is switched to delayed copies when
    /// it becomes shared; other objects are copied eagerly).
    pub(crate) is_shared: bool,
    /// Something on the entry's shadow chain may still change under it (a shared object, a
    /// delayed-copy source): a page found below the top object is copied up even on a read,
    /// so no mapping ever points at a page that can change or vanish behind it.
    pub(crate) copy_on_read: bool,
    pub(crate) wired_count: u32,
    pub(crate) tag: VmTag,
    /// When the fault path next tries to collapse the object.
    pub(crate) collapse: CollapseHint,
}

impl VmMapEntry {
    /// The first address of the entry.
    #[must_use]
    pub fn start(&self) -> VirtAddr {
        VirtAddr::new(self.start)
    }

    /// The address just past the entry.
    #[must_use]
    pub fn end(&self) -> VirtAddr {
        VirtAddr::new(self.end)
    }

    /// The size in bytes.
    #[must_use]
    pub fn len_bytes(&self) -> u64 {
        self.end - self.start
    }

    /// The object behind the entry.
    #[must_use]
    pub fn object(&self) -> &ObjectRef {
        &self.object
    }

    /// The offset in [`object`](Self::object) of the entry's first page.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The current protection.
    #[must_use]
    pub fn protection(&self) -> VmProt {
        self.protection
    }

    /// The maximum protection (the current one never exceeds it).
    #[must_use]
    pub fn max_protection(&self) -> VmProt {
        self.max_protection
    }

    /// What a forked child gets.
    #[must_use]
    pub fn inheritance(&self) -> Inheritance {
        self.inheritance
    }

    /// Whether the object must be shadowed before the first write (copy on write pending).
    #[must_use]
    pub fn needs_copy(&self) -> bool {
        self.needs_copy
    }

    /// Whether the object is shared with other mappings (share inheritance or a shared
    /// object mapping).
    #[must_use]
    pub fn is_shared(&self) -> bool {
        self.is_shared
    }

    /// How many times the entry is wired (0: pageable).
    #[must_use]
    pub fn wired_count(&self) -> u32 {
        self.wired_count
    }

    /// The user tag.
    #[must_use]
    pub fn tag(&self) -> VmTag {
        self.tag
    }

    /// Maps the window at `offset` of `object` from now on (the mapper marker follows, and
    /// collapse back-off starts afresh).
    pub(crate) fn set_object(&mut self, object: ObjectRef, offset: u64) {
        self.mapper = MapperMark::new(&object);
        self.object = object;
        self.offset = offset;
        self.collapse = CollapseHint::default();
    }

    /// The object offset of address `va` (inside the entry).
    pub(crate) fn object_offset(&self, va: u64) -> u64 {
        self.offset + (va - self.start)
    }

    /// Splits the entry at `at` (strictly inside): `self` keeps `[start, at)`, the result is
    /// `[at, end)` on the same object.
    pub(crate) fn split_off(&mut self, at: u64) -> Self {
        let mut tail = self.clone();
        tail.start = at;
        tail.offset = self.offset + (at - self.start);
        self.end = at;
        tail
    }
}
