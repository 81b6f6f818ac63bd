//! A reference model of a page table and a harness that checks a real table against it
//! (feature `test-util`, host only).
//!
//! [`run_ops`] applies a sequence of [`Op`]s to a fresh [`PageTable`] over a
//! [`SimPhysMemory`] and to a [`Model`] (a plain interval map), and panics on the first
//! divergence. It is shared by the crate's property tests (`tests/model.rs`) and the
//! `page_table_ops` fuzz target, which decodes its input with [`Op::decode`].
//!
//! Properties checked after every operation:
//!
//! - the table's mappings, merged into runs, equal the model's (virtual and physical
//!   addresses, attributes, accessed/dirty state);
//! - a failed operation (a conflict, or an allocation failure injected by [`Op::FailNext`])
//!   changes nothing and leaks no frame; no other error occurs;
//! - `translate` agrees with the model, on mapped and unmapped addresses;
//! - `unmap` of a leaf, `unmap_range_with` and `harvest` report exactly the leaves the model
//!   predicts;
//! - after unmapping everything only the root frame is allocated, and after tearing the table
//!   down no frame is.
//!
//! Operations are format-independent: sizes are given as engine levels (0 = the granule) and
//! resolved through [`Format::leaf_size`] (a level without leaves means the largest leaf
//! below it), so one sequence runs on every format. Every operation stays inside a window of
//! [`WINDOW`] bytes at the harness's base address, and runs of small pages are kept short, so
//! a check after every operation stays cheap.

// This module exists only on the host (the feature enables `machvm-addr/std`), and uses std's
// collections and formatting like any test code.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::collections::BTreeMap;
use std::fmt;
use std::vec::Vec;

use machvm_addr::{PageSize, PhysAddr, SimPhysMemory, VirtAddr, VmProt};

use crate::{
    AccessState, CountingFlush, Format, Mapping, NoFlush, PageAttrs, PageTable, PageTableError,
    PendingFlush, Region,
};

/// Size of the virtual window every operation stays in (4 GiB).
pub const WINDOW: u64 = 4 << 30;
/// Physical address that model physical offsets are relative to.
pub const PA_BASE: u64 = 0x10_0000_0000;
/// Size of the simulated physical memory of [`run_ops`] (8 MiB: more than the tables of
/// 64 operations can use, and small enough that building it per run stays cheap).
pub const SIM_BYTES: u64 = 8 << 20;

const M16: u64 = 16 << 20;
const G1: u64 = 1 << 30;
/// Longest `map_range` per `largest` level choice: short runs of small pages.
const MAP_CAP: [u64; 3] = [M16, G1, WINDOW];

/// One mapped run of the model: `len` bytes at window offset `off` mapping physical offset
/// `pa` (relative to [`PA_BASE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Run {
    /// Offset of the first byte in the window.
    pub off: u64,
    /// Length in bytes.
    pub len: u64,
    /// Physical offset (relative to [`PA_BASE`]) of the first byte.
    pub pa: u64,
    /// Attributes.
    pub attrs: PageAttrs,
    /// Accessed/dirty state.
    pub access: AccessState,
}

/// The reference model: an interval map from window offsets to physical offsets, attributes
/// and accessed/dirty state. Intervals never overlap.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Model {
    /// start -> (len, pa, attrs, access)
    map: BTreeMap<u64, (u64, u64, PageAttrs, AccessState)>,
}

impl Model {
    /// Returns the parts of `[start, start + len)` that are mapped, as `(start, len, attrs)`.
    pub fn parts(&self, start: u64, len: u64) -> Vec<(u64, u64, PageAttrs)> {
        let end = start + len;
        let first = self
            .map
            .range(..start)
            .next_back()
            .map_or(start, |(&s, _)| s);
        self.map
            .range(first..end)
            .filter_map(|(&s, &(l, _, a, _))| {
                let (lo, hi) = (s.max(start), (s + l).min(end));
                (lo < hi).then(|| (lo, hi - lo, a))
            })
            .collect()
    }

    /// Returns the start of some interval overlapping `[start, start + len)`, if any.
    pub fn overlaps(&self, start: u64, len: u64) -> Option<u64> {
        let end = start + len;
        if let Some((&s, &(l, ..))) = self.map.range(..start).next_back() {
            if s + l > start {
                return Some(start);
            }
        }
        self.map.range(start..end).next().map(|(&s, _)| s)
    }

    /// Records a new mapping (which must not overlap an existing one).
    ///
    /// # Panics
    ///
    /// If it overlaps an existing interval.
    pub fn insert(&mut self, start: u64, len: u64, pa: u64, attrs: PageAttrs, access: AccessState) {
        assert!(self.overlaps(start, len).is_none(), "model overlap");
        self.map.insert(start, (len, pa, attrs, access));
    }

    /// Cuts the interval containing `at` (if any) so that `at` is a boundary.
    fn cut(&mut self, at: u64) {
        if let Some((&s, &(l, pa, a, x))) = self.map.range(..at).next_back() {
            if s + l > at {
                self.map.insert(s, (at - s, pa, a, x));
                self.map.insert(at, (s + l - at, pa + (at - s), a, x));
            }
        }
    }

    fn keys(&self, start: u64, len: u64) -> Vec<u64> {
        self.map
            .range(start..start + len)
            .map(|(&k, _)| k)
            .collect()
    }

    /// Removes every mapping in `[start, start + len)`.
    pub fn remove(&mut self, start: u64, len: u64) {
        self.cut(start);
        self.cut(start + len);
        for k in self.keys(start, len) {
            self.map.remove(&k);
        }
    }

    /// Sets the attributes of every mapping in `[start, start + len)`, keeping its
    /// accessed/dirty state.
    pub fn protect(&mut self, start: u64, len: u64, attrs: PageAttrs) {
        self.cut(start);
        self.cut(start + len);
        for (_, v) in self.map.range_mut(start..start + len) {
            v.2 = attrs;
        }
    }

    /// Clears the accessed/dirty state named by `clear` of every mapping in
    /// `[start, start + len)`.
    pub fn clear_access(&mut self, start: u64, len: u64, clear: AccessState) {
        self.cut(start);
        self.cut(start + len);
        for (_, v) in self.map.range_mut(start..start + len) {
            v.3.accessed &= !clear.accessed;
            v.3.dirty &= !clear.dirty;
        }
    }

    /// Returns the physical offset, attributes and accessed/dirty state at window offset `off`.
    pub fn lookup(&self, off: u64) -> Option<(u64, PageAttrs, AccessState)> {
        let (&s, &(l, pa, a, x)) = self.map.range(..=off).next_back()?;
        (off < s + l).then_some((pa + (off - s), a, x))
    }

    /// Returns how many bytes of `[start, start + len)` are mapped.
    pub fn covered(&self, start: u64, len: u64) -> u64 {
        let end = start + len;
        let mut n = 0;
        let first = self
            .map
            .range(..start)
            .next_back()
            .map(|(&s, &(l, ..))| (s, l));
        for (s, l) in first
            .into_iter()
            .chain(self.map.range(start..end).map(|(&s, &(l, ..))| (s, l)))
        {
            let (a, b) = (s.max(start), (s + l).min(end));
            n += b.saturating_sub(a);
        }
        n
    }

    /// Returns whether `[start, start + len)` is mapped by one physically contiguous run with
    /// uniform attributes and accessed/dirty state, starting at physical offset `pa`; returns
    /// those attributes and that state.
    pub fn uniform(&self, start: u64, len: u64, pa: u64) -> Option<(PageAttrs, AccessState)> {
        let (p, a, x) = self.lookup(start)?;
        if p != pa {
            return None;
        }
        let mut at = start;
        while at < start + len {
            let (&s, &(l, p, a2, x2)) = self.map.range(..=at).next_back()?;
            if at >= s + l || p + (at - s) != pa + (at - start) || a2 != a || x2 != x {
                return None;
            }
            at = s + l;
        }
        Some((a, x))
    }

    /// Returns the mappings merged into maximal runs (adjacent intervals with contiguous
    /// physical offsets, equal attributes and equal accessed/dirty state join).
    pub fn runs(&self) -> Vec<Run> {
        merge(
            self.map
                .iter()
                .map(|(&off, &(len, pa, attrs, access))| Run {
                    off,
                    len,
                    pa,
                    attrs,
                    access,
                }),
        )
    }

    /// Returns whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Merges runs given in address order into maximal runs.
pub fn merge(it: impl IntoIterator<Item = Run>) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    for r in it {
        if let Some(last) = out.last_mut() {
            if last.off + last.len == r.off
                && last.pa + last.len == r.pa
                && last.attrs == r.attrs
                && last.access == r.access
            {
                last.len += r.len;
                continue;
            }
        }
        out.push(r);
    }
    out
}

/// One operation on the table and the model.
///
/// Sizes (`unit`, `size`, `largest`) are engine levels `0..=2` (0 = the granule), resolved per
/// format to the largest leaf size at or below that level. Ranges are `count` units at
/// `idx * unit`, clamped to the [`WINDOW`]; physical addresses are `pa_idx` units above
/// [`PA_BASE`]; `attrs` picks one of four attribute sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// `map_range` of `count` units (capped at 16 MiB when `largest` is 0, 1 GiB when 1).
    MapRange {
        /// Level of the unit.
        unit: u8,
        /// Index of the first unit.
        idx: u64,
        /// Number of units (at most 2 when a unit is 1 GiB or more).
        count: u64,
        /// Physical index, in units.
        pa_idx: u64,
        /// Attribute choice.
        attrs: u8,
        /// Level of the largest leaf allowed.
        largest: u8,
        /// Whether to use `map_range_contiguous`.
        contiguous: bool,
    },
    /// `map` of one page or block.
    Map {
        /// Level of the leaf.
        size: u8,
        /// Index of the leaf in the window.
        idx: u64,
        /// Physical index, in leaves.
        pa_idx: u64,
        /// Attribute choice.
        attrs: u8,
    },
    /// `unmap_range`, or `unmap_range_with` a visitor whose reports are checked.
    UnmapRange {
        /// Level of the unit.
        unit: u8,
        /// Index of the first unit.
        idx: u64,
        /// Number of units.
        count: u64,
        /// Whether to use `unmap_range_with`.
        visit: bool,
    },
    /// `unmap` of the leaf at one unit's start (`NotMapped` if no leaf starts there).
    UnmapLeaf {
        /// Level of the unit.
        unit: u8,
        /// Index of the unit.
        idx: u64,
    },
    /// `protect_range`.
    Protect {
        /// Level of the unit.
        unit: u8,
        /// Index of the first unit.
        idx: u64,
        /// Number of units.
        count: u64,
        /// Attribute choice.
        attrs: u8,
    },
    /// `harvest`, clearing the accessed (bit 0 of `clear`) and dirty (bit 1) state.
    Harvest {
        /// Level of the unit.
        unit: u8,
        /// Index of the first unit.
        idx: u64,
        /// Number of units.
        count: u64,
        /// What to clear.
        clear: u8,
    },
    /// `translate` at a window offset (mapped or not).
    Translate {
        /// Offset in the window (below [`WINDOW`]).
        offset: u64,
    },
    /// A [`Cursor`](crate::Cursor) batch of `count` single-leaf operations on consecutive
    /// leaves of `size` from `idx` (ascending or descending), each checked on its own.
    Cursor {
        /// Level of the leaves.
        size: u8,
        /// Index of the first leaf in the window.
        idx: u64,
        /// Number of operations.
        count: u64,
        /// Physical index of the first leaf, in leaves (maps).
        pa_idx: u64,
        /// Attribute choice (maps).
        attrs: u8,
        /// Bit 0: descending; bits 1..: 0 `map`, 1 `unmap`, 2 `unmap_discard`.
        mode: u8,
    },
    /// Makes the allocator fail after `after` more allocations, for the next operation that
    /// changes the table.
    FailNext {
        /// Allocations that still succeed.
        after: u64,
    },
}

/// Level choice from a byte, weighted 4:2:1 towards small units.
fn level_of_byte(b: u8) -> u8 {
    match b % 7 {
        0..=3 => 0,
        4 | 5 => 1,
        _ => 2,
    }
}

fn byte_of_level(level: u8) -> u8 {
    [0, 4, 6][usize::from(level.min(2))]
}

impl Op {
    /// Decodes one operation from the front of `bytes`, consuming what it reads; `None` when
    /// the bytes run out.
    ///
    /// Every decoded value is within the bounds of [`Op`]'s documentation (levels `0..=2`,
    /// `idx < 600` (`< 700` for [`Op::Map`]), `count` `1..=39`, `pa_idx < 8`, `attrs < 4`,
    /// `after < 3`, `offset < WINDOW` and 8-byte aligned), the bounds of the crate's
    /// property tests.
    pub fn decode(bytes: &mut &[u8]) -> Option<Op> {
        fn byte(bytes: &mut &[u8]) -> Option<u8> {
            let (&b, rest) = bytes.split_first()?;
            *bytes = rest;
            Some(b)
        }
        fn word(bytes: &mut &[u8]) -> Option<u64> {
            Some(u64::from(u16::from_le_bytes([byte(bytes)?, byte(bytes)?])))
        }
        let tag = byte(bytes)?;
        let op = match tag % 16 {
            0..=3 => Op::MapRange {
                unit: level_of_byte(byte(bytes)?),
                idx: word(bytes)? % 600,
                count: 1 + u64::from(byte(bytes)? % 39),
                pa_idx: u64::from(byte(bytes)? % 8),
                attrs: byte(bytes)? % 4,
                largest: byte(bytes)? % 3,
                contiguous: tag & 0x10 != 0,
            },
            4 | 5 => Op::Map {
                size: byte(bytes)? % 3,
                idx: word(bytes)? % 700,
                pa_idx: u64::from(byte(bytes)? % 8),
                attrs: byte(bytes)? % 4,
            },
            6..=8 => Op::UnmapRange {
                unit: level_of_byte(byte(bytes)?),
                idx: word(bytes)? % 600,
                count: 1 + u64::from(byte(bytes)? % 39),
                visit: tag & 0x10 != 0,
            },
            9 => Op::UnmapLeaf {
                unit: level_of_byte(byte(bytes)?),
                idx: word(bytes)? % 600,
            },
            10 | 11 => Op::Protect {
                unit: level_of_byte(byte(bytes)?),
                idx: word(bytes)? % 600,
                count: 1 + u64::from(byte(bytes)? % 39),
                attrs: byte(bytes)? % 4,
            },
            12 | 13 => {
                let lo = word(bytes)?;
                let hi = word(bytes)?;
                Op::Translate {
                    offset: ((hi << 16) | lo) & !7,
                }
            }
            14 => Op::FailNext {
                after: u64::from(byte(bytes)? % 3),
            },
            15 if tag & 0x20 != 0 => Op::Cursor {
                size: byte(bytes)? % 3,
                idx: word(bytes)? % 700,
                count: 1 + u64::from(byte(bytes)? % 39),
                pa_idx: u64::from(byte(bytes)? % 8),
                attrs: byte(bytes)? % 4,
                mode: byte(bytes)? % 6,
            },
            _ => Op::Harvest {
                unit: level_of_byte(byte(bytes)?),
                idx: word(bytes)? % 600,
                count: 1 + u64::from(byte(bytes)? % 39),
                clear: byte(bytes)? % 4,
            },
        };
        Some(op)
    }

    /// Appends an encoding of `self` that [`decode`](Self::decode) reads back as `self`
    /// (for operations within the bounds `decode` produces), for writing seed inputs.
    pub fn encode(&self, out: &mut Vec<u8>) {
        fn word(out: &mut Vec<u8>, v: u64) {
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        let count = |c: u64| (c.clamp(1, 39) - 1) as u8;
        match *self {
            Op::MapRange {
                unit,
                idx,
                count: c,
                pa_idx,
                attrs,
                largest,
                contiguous,
            } => {
                out.extend_from_slice(&[u8::from(contiguous) << 4, byte_of_level(unit)]);
                word(out, idx);
                out.extend_from_slice(&[count(c), pa_idx as u8, attrs, largest]);
            }
            Op::Map {
                size,
                idx,
                pa_idx,
                attrs,
            } => {
                out.extend_from_slice(&[4, size]);
                word(out, idx);
                out.extend_from_slice(&[pa_idx as u8, attrs]);
            }
            Op::UnmapRange {
                unit,
                idx,
                count: c,
                visit,
            } => {
                out.extend_from_slice(&[if visit { 0x16 } else { 6 }, byte_of_level(unit)]);
                word(out, idx);
                out.push(count(c));
            }
            Op::UnmapLeaf { unit, idx } => {
                out.extend_from_slice(&[9, byte_of_level(unit)]);
                word(out, idx);
            }
            Op::Protect {
                unit,
                idx,
                count: c,
                attrs,
            } => {
                out.extend_from_slice(&[10, byte_of_level(unit)]);
                word(out, idx);
                out.extend_from_slice(&[count(c), attrs]);
            }
            Op::Translate { offset } => {
                out.push(12);
                word(out, offset);
                word(out, offset >> 16);
            }
            Op::Cursor {
                size,
                idx,
                count: c,
                pa_idx,
                attrs,
                mode,
            } => {
                out.extend_from_slice(&[0x2f, size]);
                word(out, idx);
                out.extend_from_slice(&[count(c), pa_idx as u8, attrs, mode]);
            }
            Op::FailNext { after } => out.extend_from_slice(&[14, after as u8]),
            Op::Harvest {
                unit,
                idx,
                count: c,
                clear,
            } => {
                out.extend_from_slice(&[15, byte_of_level(unit)]);
                word(out, idx);
                out.extend_from_slice(&[count(c), clear]);
            }
        }
    }

    /// Decodes operations from `bytes` until they run out (at most `max`).
    pub fn decode_all(mut bytes: &[u8], max: usize) -> Vec<Op> {
        let mut ops = Vec::new();
        while ops.len() < max {
            let Some(op) = Op::decode(&mut bytes) else {
                break;
            };
            ops.push(op);
        }
        ops
    }
}

/// The four attribute sets operations choose from.
pub fn attrs_of(k: u8) -> PageAttrs {
    match k % 4 {
        0 => PageAttrs::new(VmProt::READ),
        1 => PageAttrs::new(VmProt::READ | VmProt::WRITE).user(true),
        2 => PageAttrs::new(VmProt::READ | VmProt::EXECUTE).user(true),
        _ => PageAttrs::new(VmProt::READ | VmProt::WRITE).global(true),
    }
}

fn access_of(k: u8) -> AccessState {
    AccessState {
        accessed: k & 1 != 0,
        dirty: k & 2 != 0,
    }
}

/// Drives a [`PageTable`] of format `F` over a [`SimPhysMemory`] and a [`Model`] in lockstep.
///
/// The table's window is `[base, base + WINDOW)` (wrapping at the top of the address space);
/// it must lie inside the table's region.
pub struct Harness<'a, F: Format> {
    pt: PageTable<F, &'a SimPhysMemory>,
    sim: &'a SimPhysMemory,
    base: u64,
    model: Model,
    fail_armed: bool,
    /// Frames (as `SimPhysMemory` counts them) in use with only the root allocated.
    root_frames: u64,
}

impl<F: Format> fmt::Debug for Harness<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("pt", &self.pt)
            .field("base", &format_args!("{:#x}", self.base))
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl<'a, F: Format> Harness<'a, F> {
    /// Creates an empty table of `region` on `sim`, checked through the window at `base`.
    ///
    /// # Panics
    ///
    /// If the table cannot be created (`F` does not support `region`, or `sim` is full).
    pub fn new(sim: &'a SimPhysMemory, region: Region, base: u64) -> Self {
        let before = sim.frames_in_use();
        let pt = PageTable::<F, _>::new(region, sim, &mut sim.frame_allocator())
            .expect("creating the table");
        Self {
            pt,
            sim,
            base,
            model: Model::default(),
            fail_armed: false,
            root_frames: sim.frames_in_use() - before,
        }
    }

    /// Returns the table.
    pub fn table(&self) -> &PageTable<F, &'a SimPhysMemory> {
        &self.pt
    }

    /// Returns the model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    fn va(&self, off: u64) -> VirtAddr {
        VirtAddr::new(self.base.wrapping_add(off))
    }

    fn off(&self, va: VirtAddr) -> u64 {
        va.as_u64().wrapping_sub(self.base)
    }

    /// The largest level at or below `level` that has leaves.
    fn leaf_level(level: u8) -> u8 {
        (0..=level.min(2))
            .rev()
            .find(|&l| F::leaf_size(l).is_some())
            .unwrap_or(0)
    }

    fn size_of(level: u8) -> PageSize {
        F::leaf_size(Self::leaf_level(level)).unwrap_or(F::GRANULE)
    }

    /// Clamps a (unit, idx, count) choice into the window, keeping big units sane.
    fn range_of(unit: u8, idx: u64, count: u64) -> (u64, u64) {
        let unit = Self::size_of(unit).bytes();
        let count = if unit >= G1 { count.min(2) } else { count };
        let start = (idx * unit) % WINDOW;
        let start = start - start % unit;
        let len = (count * unit).min(WINDOW - start);
        (start, len)
    }

    /// The accessed/dirty state of a new leaf with `attrs`.
    /// Checks a map operation's result against the model and records a successful mapping
    /// of `[start, start + len)` to `pa`.
    fn record_map(
        &mut self,
        op: &Op,
        r: Result<PendingFlush, PageTableError>,
        start: u64,
        len: u64,
        pa: u64,
        a: PageAttrs,
    ) -> Result<PendingFlush, PageTableError> {
        match r {
            Ok(p) => {
                assert!(
                    self.model.overlaps(start, len).is_none(),
                    "{op:?}: mapped over {start:#x}"
                );
                self.model.insert(start, len, pa, a, Self::fresh_access(&a));
                Ok(p)
            }
            Err(e) => {
                if let PageTableError::AlreadyMapped { .. } = e {
                    assert!(
                        self.model.overlaps(start, len).is_some(),
                        "{op:?}: {e} but nothing is mapped there"
                    );
                }
                Err(e)
            }
        }
    }

    fn fresh_access(attrs: &PageAttrs) -> AccessState {
        F::leaf_template(attrs, 0).map_or_else(|_| AccessState::default(), F::access_state)
    }

    /// Checks reported leaves against the model: in address order, disjoint, each one
    /// physically contiguous with uniform attributes and state in the model, equal to what
    /// was reported, and together covering every mapped byte of `[start, start + len)`.
    /// Returns the leaves as window offsets and lengths.
    fn check_reported(
        &self,
        what: &str,
        reported: &[Mapping],
        start: u64,
        len: u64,
        inside: bool,
    ) -> Vec<(u64, u64)> {
        let mut leaves = Vec::new();
        let mut next = 0;
        let mut inter = 0;
        for m in reported {
            let off = self.off(m.va);
            let size = m.size.bytes();
            assert!(off < WINDOW, "{what}: leaf {m:?} outside the window");
            assert!(off >= next, "{what}: leaves out of order or overlapping");
            assert!(
                off < start + len && off + size > start,
                "{what}: {m:?} outside range"
            );
            if inside {
                assert!(
                    off >= start && off + size <= start + len,
                    "{what}: {m:?} partial"
                );
            }
            next = off + size;
            let pa = m.pa.as_u64().wrapping_sub(PA_BASE);
            let want = self.model.uniform(off, size, pa);
            assert_eq!(
                want,
                Some((m.attrs, m.access)),
                "{what}: reported {m:?} disagrees with the model"
            );
            inter += (off + size).min(start + len) - off.max(start);
            leaves.push((off, size));
        }
        assert_eq!(
            inter,
            self.model.covered(start, len),
            "{what}: reported leaves do not cover the mapped part of {start:#x}+{len:#x}"
        );
        leaves
    }

    /// Applies `op` to the table and the model; returns the op's error if it failed.
    ///
    /// # Errors
    ///
    /// The table's error when the operation failed. Failures are checked by [`run_ops`], not
    /// here.
    ///
    /// # Panics
    ///
    /// On any disagreement between what the table reports and what the model predicts.
    pub fn apply(&mut self, op: &Op) -> Result<(), PageTableError> {
        let sim = self.sim;
        let mut alloc = sim.frame_allocator();
        let mut hook = CountingFlush::default();
        // Mapped parts whose translation the op changes: its flush must cover them.
        let mut must_flush = match *op {
            Op::UnmapRange {
                unit, idx, count, ..
            } => {
                let (start, len) = Self::range_of(unit, idx, count);
                self.model.parts(start, len)
            }
            Op::Protect {
                unit,
                idx,
                count,
                attrs,
            } => {
                let (start, len) = Self::range_of(unit, idx, count);
                let a = attrs_of(attrs);
                let mut parts = self.model.parts(start, len);
                parts.retain(|p| p.2 != a);
                parts
            }
            _ => Vec::new(),
        };
        let result = match *op {
            Op::FailNext { after } => {
                sim.fail_after(Some(after));
                self.fail_armed = true;
                return Ok(());
            }
            Op::Translate { offset } => {
                self.check_translate(offset);
                return Ok(());
            }
            Op::MapRange {
                unit,
                idx,
                count,
                pa_idx,
                attrs,
                largest,
                contiguous,
            } => {
                let (start, len) = Self::range_of(unit, idx, count);
                // Keep runs of small pages short so every check stays fast.
                let len = len.min(MAP_CAP[usize::from(largest.min(2))]);
                let pa = pa_idx * Self::size_of(unit).bytes();
                let largest = Self::size_of(largest);
                let a = attrs_of(attrs);
                let (va, pa_addr) = (self.va(start), PhysAddr::new(PA_BASE + pa));
                let r = if contiguous {
                    self.pt
                        .map_range_contiguous(va, pa_addr, len, &a, largest, &mut alloc)
                } else {
                    self.pt.map_range(va, pa_addr, len, &a, largest, &mut alloc)
                };
                self.record_map(op, r, start, len, pa, a)
            }
            Op::Map {
                size,
                idx,
                pa_idx,
                attrs,
            } => {
                let size = Self::size_of(size);
                let len = size.bytes();
                let start = (idx * len) % WINDOW;
                let a = attrs_of(attrs);
                let r = self.pt.map(
                    self.va(start),
                    PhysAddr::new(PA_BASE + pa_idx * len),
                    size,
                    &a,
                    &mut alloc,
                );
                self.record_map(op, r, start, len, pa_idx * len, a)
            }
            Op::UnmapRange {
                unit,
                idx,
                count,
                visit,
            } => {
                let (start, len) = Self::range_of(unit, idx, count);
                if visit {
                    let mut seen = Vec::new();
                    let r = self.pt.unmap_range_with(
                        self.va(start),
                        len,
                        &mut hook,
                        &mut alloc,
                        &mut |m: &Mapping| seen.push(*m),
                    );
                    if r.is_ok() {
                        self.check_reported("unmap_range_with", &seen, start, len, true);
                        self.model.remove(start, len);
                    } else {
                        assert!(seen.is_empty(), "{op:?} failed but reported {seen:?}");
                    }
                    r
                } else {
                    let r = self
                        .pt
                        .unmap_range(self.va(start), len, &mut hook, &mut alloc);
                    if r.is_ok() {
                        self.model.remove(start, len);
                    }
                    r
                }
            }
            Op::UnmapLeaf { unit, idx } => {
                let (start, _) = Self::range_of(unit, idx, 1);
                let leaf = self.pt.translate(self.va(start)).ok().map(|t| t.mapping());
                match self.pt.unmap(self.va(start)) {
                    Ok((m, p)) => {
                        let leaf = leaf.expect("unmap succeeded where translate failed");
                        assert_eq!(leaf.va, m.va, "{op:?}");
                        assert_eq!(leaf.va, self.va(start), "{op:?}: leaf does not start there");
                        assert_eq!(leaf, m, "{op:?}: unmap reported another leaf");
                        self.check_reported("unmap", &[m], start, m.size.bytes(), true);
                        self.model.remove(start, m.size.bytes());
                        Ok(p)
                    }
                    Err(
                        e @ (PageTableError::NotMapped { .. }
                        | PageTableError::BreakBeforeMake { .. }),
                    ) => {
                        Self::check_not_mapped(op, e, leaf, self.va(start));
                        return Ok(());
                    }
                    Err(e) => Err(e),
                }
            }
            Op::Cursor { .. } => {
                let (pending, removed) = self.apply_cursor(op);
                must_flush = removed;
                Ok(pending)
            }
            Op::Protect {
                unit,
                idx,
                count,
                attrs,
            } => {
                let (start, len) = Self::range_of(unit, idx, count);
                let a = attrs_of(attrs);
                let r = self
                    .pt
                    .protect_range(self.va(start), len, &a, &mut hook, &mut alloc);
                if r.is_ok() {
                    self.model.protect(start, len, a);
                }
                r
            }
            Op::Harvest {
                unit,
                idx,
                count,
                clear,
            } => {
                let (start, len) = Self::range_of(unit, idx, count);
                let clear = access_of(clear);
                let mut seen = Vec::new();
                let r = self
                    .pt
                    .harvest(self.va(start), len, clear, |m| seen.push(*m));
                if let Ok(p) = &r {
                    let leaves = self.check_reported("harvest", &seen, start, len, false);
                    let changed = seen.iter().any(|m| {
                        (m.access.accessed && clear.accessed) || (m.access.dirty && clear.dirty)
                    });
                    assert_eq!(
                        p.range().is_some(),
                        changed,
                        "{op:?}: flush range {:?} after reporting {seen:?}",
                        p.range()
                    );
                    // Whole leaves are cleared, also their parts outside the range, and whole
                    // contiguous groups.
                    let group = (F::CONTIGUOUS_PAGES as u64) * F::GRANULE.bytes();
                    for ((off, size), m) in leaves.into_iter().zip(&seen) {
                        if m.contiguous {
                            let start = self.off(m.va) & !(group - 1);
                            self.model.clear_access(start, group, clear);
                        } else {
                            self.model.clear_access(off, size, clear);
                        }
                    }
                }
                r
            }
        };
        if self.fail_armed {
            sim.fail_after(None);
            self.fail_armed = false;
        }
        match result {
            Ok(pending) => {
                let flushed = pending.range();
                for (off, len, _) in must_flush {
                    let (va, last) = (self.va(off).as_u64(), self.va(off + len - 1).as_u64());
                    let covered = flushed.is_some_and(|r| {
                        let start = r.start.as_u64();
                        va >= start && last - start < r.len
                    });
                    assert!(
                        covered,
                        "{op:?}: {va:#x}+{len:#x} changed, flush {flushed:?}"
                    );
                }
                self.pt
                    .finish(pending, &mut NoFlush, &mut alloc)
                    .expect("finishing the flush");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Runs an [`Op::Cursor`] batch and checks every operation of it against the model;
    /// returns the batch's flush and the parts it unmapped (nothing for other ops).
    fn apply_cursor(&mut self, op: &Op) -> (PendingFlush, Vec<(u64, u64, PageAttrs)>) {
        let Op::Cursor {
            size,
            idx,
            count,
            pa_idx,
            attrs,
            mode,
        } = *op
        else {
            return (PendingFlush::new(F::GRANULE), Vec::new());
        };
        enum Done {
            Map(Result<(), PageTableError>),
            Unmap(Option<Mapping>, Result<Mapping, PageTableError>),
            Discard(
                Option<Mapping>,
                Result<(PhysAddr, PageSize), PageTableError>,
            ),
        }
        let size = Self::size_of(size);
        let len = size.bytes();
        let a = attrs_of(attrs);
        let steps: Vec<(u64, VirtAddr, PhysAddr)> = (0..count)
            .map(|k| {
                let j = if mode & 1 == 1 { count - 1 - k } else { k };
                let start = ((idx + j) * len) % WINDOW;
                (
                    start,
                    self.va(start),
                    PhysAddr::new(PA_BASE + (pa_idx + j) * len),
                )
            })
            .collect();
        let sim = self.sim;
        let mut alloc = sim.frame_allocator();
        let (done, pending) = self.pt.cursor(&mut alloc, |c| {
            let leaf =
                |c: &crate::Cursor<'_, F, _, _>, va| c.translate(va).ok().map(|t| t.mapping());
            steps
                .iter()
                .map(|&(_, va, pa)| match mode >> 1 {
                    0 => Done::Map(c.map(va, pa, size, &a)),
                    1 => Done::Unmap(leaf(c, va), c.unmap(va)),
                    _ => Done::Discard(leaf(c, va), c.unmap_discard(va)),
                })
                .collect::<Vec<_>>()
        });
        let mut removed = Vec::new();
        for (&(start, va, pa), done) in steps.iter().zip(done) {
            let gone = match done {
                Done::Map(r) => {
                    let r = r.map(|()| PendingFlush::new(F::GRANULE));
                    let pa = pa.as_u64() - PA_BASE;
                    match self.record_map(op, r, start, len, pa, a) {
                        Ok(_) | Err(PageTableError::AlreadyMapped { .. }) => {}
                        Err(PageTableError::FrameAllocation(_)) if self.fail_armed => {}
                        Err(e) => panic!("{op:?}: map at {start:#x}: unexpected {e}"),
                    }
                    None
                }
                Done::Unmap(leaf, r) => match r {
                    Ok(m) => {
                        assert_eq!(leaf, Some(m), "{op:?}: unmap reported another leaf");
                        self.check_reported("cursor unmap", &[m], start, m.size.bytes(), true);
                        Some(m.size.bytes())
                    }
                    Err(e) => {
                        Self::check_not_mapped(op, e, leaf, va);
                        None
                    }
                },
                Done::Discard(leaf, r) => match r {
                    Ok((pa, size)) => {
                        let leaf = leaf.expect("unmap_discard succeeded where translate failed");
                        assert_eq!((leaf.va, leaf.pa, leaf.size), (va, pa, size), "{op:?}");
                        Some(size.bytes())
                    }
                    Err(e) => {
                        Self::check_not_mapped(op, e, leaf, va);
                        None
                    }
                },
            };
            if let Some(size) = gone {
                removed.extend(self.model.parts(start, size));
                self.model.remove(start, size);
            }
        }
        (pending, removed)
    }

    /// Checks a single-page unmap failure: `NotMapped` where no leaf starts at `va`, or
    /// `BreakBeforeMake` for a page with the contiguous hint.
    fn check_not_mapped(op: &Op, e: PageTableError, leaf: Option<Mapping>, va: VirtAddr) {
        match e {
            PageTableError::NotMapped { .. } => assert!(
                leaf.is_none_or(|l| l.va != va),
                "{op:?}: NotMapped but a leaf starts at {va:?}"
            ),
            PageTableError::BreakBeforeMake { .. } => assert!(
                leaf.is_some_and(|l| l.va == va && l.contiguous),
                "{op:?}: BreakBeforeMake at {va:?} for {leaf:?}"
            ),
            _ => panic!("{op:?}: unmap at {va:?}: unexpected {e}"),
        }
    }

    fn check_translate(&self, offset: u64) {
        let va = self.va(offset);
        match (self.pt.translate(va), self.model.lookup(offset)) {
            (Ok(t), Some((pa, a, x))) => {
                assert_eq!(t.pa.as_u64(), PA_BASE + pa, "translate {offset:#x}");
                let m = t.mapping();
                assert_eq!((m.attrs, m.access), (a, x), "translate {offset:#x}");
                let size = m.size.bytes();
                assert!(
                    m.va.as_u64() <= va.as_u64() && va.as_u64() - m.va.as_u64() < size,
                    "translate {offset:#x}: leaf {m:?} does not contain it"
                );
            }
            (Err(PageTableError::NotMapped { va: got }), None) => {
                assert_eq!(
                    got,
                    va.as_u64(),
                    "translate {offset:#x}: NotMapped at {got:#x}"
                );
            }
            (got, want) => panic!("translate {offset:#x}: table {got:?}, model {want:?}"),
        }
    }

    /// Checks that the table's mappings in the window, merged into runs, equal the model's.
    ///
    /// # Panics
    ///
    /// If they differ.
    pub fn check(&self) {
        let mappings: Vec<Mapping> = self
            .pt
            .mappings(self.va(0), WINDOW)
            .expect("the window is in the table's region")
            .collect();
        Self::check_groups(&mappings);
        let runs = merge(mappings.iter().map(|m| Run {
            off: self.off(m.va),
            len: m.size.bytes(),
            pa: m.pa.as_u64().wrapping_sub(PA_BASE),
            attrs: m.attrs,
            access: m.access,
        }));
        assert_eq!(runs, self.model.runs(), "table and model differ");
    }

    /// Checks the contiguous-hint invariant on `mappings` (in address order): hinted pages
    /// come in whole aligned groups of [`Format::CONTIGUOUS_PAGES`] pages mapping one aligned
    /// physical run with the same attributes.
    fn check_groups(mappings: &[Mapping]) {
        let g = F::CONTIGUOUS_PAGES;
        let gran = F::GRANULE.bytes();
        let mut i = 0;
        while i < mappings.len() {
            let m = &mappings[i];
            if !m.contiguous {
                i += 1;
                continue;
            }
            let span = g as u64 * gran;
            assert!(g > 1, "{m:?}: hint on a format without one");
            assert_eq!(
                m.va.as_u64() % span,
                0,
                "{m:?}: group does not start aligned"
            );
            assert_eq!(m.pa.as_u64() % span, 0, "{m:?}: group's frame not aligned");
            let group = mappings
                .get(i..i + g)
                .expect("a hinted group runs past the window");
            for (k, p) in group.iter().enumerate() {
                let step = k as u64 * gran;
                assert!(
                    p.contiguous
                        && p.size == F::GRANULE
                        && p.va.as_u64() == m.va.as_u64() + step
                        && p.pa.as_u64() == m.pa.as_u64() + step
                        && p.attrs == m.attrs,
                    "page {k} of the group at {m:?} breaks it: {p:?}"
                );
            }
            i += g;
        }
    }

    /// Unmaps the whole window, checks that only the root frame is left, then frees the table
    /// and checks that no frame is (the simulation must have held nothing else).
    ///
    /// # Panics
    ///
    /// If an operation fails or a frame leaks.
    pub fn teardown(mut self) {
        let sim = self.sim;
        let mut alloc = sim.frame_allocator();
        let p = self
            .pt
            .unmap_range(self.va(0), WINDOW, &mut NoFlush, &mut alloc)
            .expect("unmapping the window");
        self.pt
            .finish(p, &mut NoFlush, &mut alloc)
            .expect("finishing the flush");
        assert_eq!(
            sim.frames_in_use(),
            self.root_frames,
            "only the root is left"
        );
        self.model = Model::default();
        self.check();
        let freed = self.pt.into_freed_tables();
        freed
            .release(sim, &mut sim.frame_allocator())
            .expect("releasing the root");
        assert_eq!(sim.frames_in_use(), 0, "every frame is back");
    }
}

/// Runs `ops` on a fresh table of format `F` for `region`, whose window starts at `base`,
/// over a fresh [`SIM_BYTES`] simulation: see [`run_ops_on`].
///
/// # Panics
///
/// On the first divergence.
pub fn run_ops<F: Format>(region: Region, base: u64, ops: &[Op]) {
    let sim = SimPhysMemory::builder()
        .size_bytes(SIM_BYTES)
        .build()
        .expect("building the simulation");
    run_ops_on::<F>(&sim, region, base, ops);
}

/// Runs `ops` on a fresh table of format `F` for `region`, whose window starts at `base`,
/// over `sim`: checks the table against the model after every operation, that failed
/// operations change nothing and leak no frame, and that teardown returns every frame.
///
/// `sim` must have no frame in use; it has none again when this returns, so one simulation
/// can serve many runs (building one costs more than a short run).
///
/// # Panics
///
/// On the first divergence, or if `sim` has frames in use.
pub fn run_ops_on<F: Format>(sim: &SimPhysMemory, region: Region, base: u64, ops: &[Op]) {
    assert_eq!(sim.frames_in_use(), 0, "the simulation is not empty");
    sim.fail_after(None);
    let mut h = Harness::<F>::new(sim, region, base);
    for op in ops {
        let before = h.model.clone();
        let frames_before = sim.frames_in_use();
        if let Err(e) = h.apply(op) {
            assert_eq!(
                h.model, before,
                "{op:?} failed with {e} but the model changed"
            );
            assert_eq!(
                sim.frames_in_use(),
                frames_before,
                "{op:?} failed with {e} but leaked"
            );
            assert!(
                matches!(
                    e,
                    PageTableError::AlreadyMapped { .. } | PageTableError::FrameAllocation(_)
                ),
                "{op:?}: unexpected {e}"
            );
        }
        h.check();
    }
    // A trailing `FailNext` must not outlive the run.
    sim.fail_after(None);
    h.teardown();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{A64Granule16K47, X86Pml4};

    #[test]
    fn decode_reads_back_encode() {
        let ops = [
            Op::MapRange {
                unit: 1,
                idx: 599,
                count: 39,
                pa_idx: 7,
                attrs: 3,
                largest: 2,
                contiguous: true,
            },
            Op::Map {
                size: 2,
                idx: 699,
                pa_idx: 1,
                attrs: 1,
            },
            Op::UnmapRange {
                unit: 2,
                idx: 3,
                count: 1,
                visit: true,
            },
            Op::UnmapRange {
                unit: 0,
                idx: 0,
                count: 5,
                visit: false,
            },
            Op::UnmapLeaf { unit: 0, idx: 17 },
            Op::Protect {
                unit: 0,
                idx: 1,
                count: 2,
                attrs: 2,
            },
            Op::Harvest {
                unit: 1,
                idx: 4,
                count: 9,
                clear: 3,
            },
            Op::Translate { offset: WINDOW - 8 },
            Op::FailNext { after: 2 },
            Op::Cursor {
                size: 1,
                idx: 699,
                count: 39,
                pa_idx: 7,
                attrs: 3,
                mode: 5,
            },
        ];
        let mut bytes = Vec::new();
        for op in &ops {
            op.encode(&mut bytes);
        }
        assert_eq!(Op::decode_all(&bytes, usize::MAX), ops);
    }

    #[test]
    fn decode_stops_at_a_truncated_op() {
        let mut bytes: &[u8] = &[0, 1, 2];
        assert_eq!(Op::decode(&mut bytes), None);
        assert_eq!(Op::decode(&mut &[][..]), None);
    }

    #[test]
    fn split_and_harvest_sequence_passes() {
        let ops = [
            Op::MapRange {
                unit: 1,
                idx: 1,
                count: 2,
                pa_idx: 1,
                attrs: 1,
                largest: 1,
                contiguous: false,
            },
            Op::Harvest {
                unit: 0,
                idx: 600,
                count: 3,
                clear: 3,
            },
            Op::UnmapRange {
                unit: 0,
                idx: 513,
                count: 2,
                visit: true,
            },
            Op::Protect {
                unit: 0,
                idx: 700,
                count: 4,
                attrs: 0,
            },
            Op::Translate { offset: 0x40_1008 },
        ];
        run_ops::<X86Pml4>(Region::Both, 0x40_0000_0000, &ops);
        run_ops::<A64Granule16K47>(Region::Upper, 0xffff_8000_0000_0000, &ops);
    }
}
