//! Zone and kalloc operation sequences checked against a model, with hardening violations
//! provoked on purpose.
//!
//! Two zones (one hardened behind a per-CPU cache, one release-default on the locked path) and
//! a hardened kalloc heap; every other zone operation goes through the zone's
//! `SpecializedZone` handle instead of the zone itself. Checked after every step: live blocks never overlap and keep their
//! contents; every double free of a free element is reported as one; every write to a free
//! element of the hardened zone is caught before the element is handed out again (the
//! allocation that meets it fails with a violation, and a written element is never returned);
//! the statistics count exactly the live blocks.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ptr::NonNull;

use arbitrary::Arbitrary;
use machvm_sync::CpuIndex;
use machvm_zone_alloc::{
    CpuLocal, HardenedFlags, Kalloc, NoCpuCache, ReleaseDefaultFlags, SystemPages, Violation,
    ViolationKind, Zone, ZoneConfig, ZoneError, ZoneFlags,
};

/// One step.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    /// Allocate from zone `zone % 2`.
    Alloc {
        /// The zone.
        zone: u8,
    },
    /// Allocate `size` bytes aligned to `1 << (shift % 13)` from the kalloc heap.
    Kalloc {
        /// The size (times 4, so large blocks occur).
        size: u16,
        /// The alignment shift.
        shift: u8,
    },
    /// Free the `pick`-th live block.
    Free {
        /// Which one.
        pick: u16,
    },
    /// Free the `pick`-th free element of zone 0 again.
    DoubleFree {
        /// Which one.
        pick: u16,
    },
    /// Write `byte` at word `1 + word % (words - 1)` of the `pick`-th free element of zone 0.
    WriteAfterFree {
        /// Which one.
        pick: u16,
        /// The word (modulo the words of an element).
        word: u8,
        /// The byte written (0 is made 1 so the write changes something).
        byte: u8,
    },
    /// Resize the `pick`-th live kalloc block.
    Realloc {
        /// Which one.
        pick: u16,
        /// The new size (times 4).
        size: u16,
    },
    /// Drain zone `zone % 2` (depot and this CPU's cache back to the chunks; empty chunks
    /// back to the source).
    Drain {
        /// The zone.
        zone: u8,
    },
    /// Trim zone `zone % 2` and the kalloc heap (depots to their working sets, empty chunks
    /// and idle magazine pages back to the source).
    Trim {
        /// The zone.
        zone: u8,
    },
}

/// The only CPU.
struct OneCpu;

// SAFETY: the fuzz target is single-threaded and has no interrupt handlers; CPU 0 is the
// calling thread's alone.
unsafe impl CpuLocal for OneCpu {
    fn with_cpu<R>(&self, f: impl FnOnce(Option<CpuIndex>) -> R) -> R {
        f(Some(CpuIndex::new(0)))
    }
}

thread_local! {
    static SEEN: RefCell<Vec<(ViolationKind, usize)>> = const { RefCell::new(Vec::new()) };
}

fn record(v: &Violation<'_>) {
    SEEN.with(|s| s.borrow_mut().push((v.kind, v.addr)));
}

fn take_seen() -> Vec<(ViolationKind, usize)> {
    SEEN.with(|s| s.borrow_mut().drain(..).collect())
}

/// Element sizes; zone 0's are large enough that a run of frees overflows what the depot
/// always keeps (128 KiB), so trimming has idle magazines to return.
const SIZES: [usize; 2] = [1024, 200];

/// Where a live block came from.
#[derive(Debug, Clone, Copy)]
enum Owner {
    Zone(usize),
    Kalloc(core::alloc::Layout),
}

/// Runs `ops`, panicking on the first disagreement with the model.
pub fn run(ops: &[Op]) {
    take_seen();
    let pages = SystemPages::new();
    let zones: [Zone<&SystemPages, &dyn CpuLocalDyn, 1>; 2] = [
        Zone::new(
            ZoneConfig::new("fuzz.hardened", SIZES[0])
                .flags(ZoneFlags::HARDENED)
                .magazine_size(4)
                .on_violation(record),
            &pages,
            &OneCpu as &dyn CpuLocalDyn,
        )
        .expect("valid zone"),
        Zone::new(
            ZoneConfig::new("fuzz.release", SIZES[1])
                .flags(ZoneFlags::RELEASE_DEFAULT.with(ZoneFlags::NO_CACHE))
                .on_violation(record),
            &pages,
            &NoCpuCache as &dyn CpuLocalDyn,
        )
        .expect("valid zone"),
    ];
    // Every other operation on a zone goes through its specialized handle (the same checks,
    // compiled for the zone's case of the flags).
    let hardened = zones[0]
        .specialize::<HardenedFlags>()
        .expect("zone 0 is hardened");
    let release = zones[1]
        .specialize::<ReleaseDefaultFlags>()
        .expect("zone 1 has the release default's checks");
    let alloc = |z: usize, tag: u8| match (z, tag % 2) {
        (0, 1) => hardened.alloc(),
        (_, 1) => release.alloc(),
        _ => zones[z].alloc(),
    };
    let heap: Kalloc<'_, SystemPages, OneCpu, 1> =
        Kalloc::with_flags("fuzz.kalloc", &pages, &OneCpu, 9, ZoneFlags::HARDENED)
            .expect("valid heap");
    // address -> (owner, length, fill byte)
    let mut live: BTreeMap<usize, (Owner, usize, u8)> = BTreeMap::new();
    // Free elements of zone 0 that are still mapped (cleared when the zone is drained).
    let mut free0: Vec<usize> = Vec::new();
    // Free elements of zone 0 written after free: must never be handed out.
    let mut written: BTreeSet<usize> = BTreeSet::new();
    // Written elements the model lost track of (after a drain): they may still be caught.
    let mut stale_written = false;
    let mut tag = 0u8;
    for op in ops {
        tag = tag.wrapping_add(1).max(1);
        match *op {
            Op::Alloc { zone } => {
                let z = usize::from(zone % 2);
                match alloc(z, tag) {
                    Ok(p) => {
                        let a = p.as_ptr() as usize;
                        assert!(
                            !written.contains(&a),
                            "an element written after free was handed out"
                        );
                        insert(&mut live, a, Owner::Zone(z), SIZES[z], tag);
                        free0.retain(|&f| f != a);
                    }
                    Err(ZoneError::Violation(kind)) => {
                        assert!(
                            z == 0 && (!written.is_empty() || stale_written),
                            "violation without a cause: {kind:?}"
                        );
                        assert!(
                            matches!(
                                kind,
                                ViolationKind::ModifiedAfterFree | ViolationKind::FreelistCorrupted
                            ),
                            "{kind:?}"
                        );
                        // The element (or its chunk) left circulation; forget what we wrote.
                        let seen = take_seen();
                        for (_, addr) in seen {
                            written.remove(&addr);
                            free0.retain(|&f| f != addr);
                        }
                        if kind == ViolationKind::FreelistCorrupted {
                            // The whole chunk is retired: its free elements are gone for good.
                            written.clear();
                            free0.clear();
                        }
                    }
                    Err(e) => panic!("allocation failed: {e}"),
                }
            }
            Op::Kalloc { size, shift } => {
                let size = usize::from(size) * 4;
                let layout = core::alloc::Layout::from_size_align(size, 1 << (shift % 13))
                    .expect("valid layout");
                let p = heap.alloc(layout).expect("memory available").as_ptr() as usize;
                assert_eq!(p % layout.align(), 0);
                insert(&mut live, p, Owner::Kalloc(layout), size, tag);
            }
            Op::Free { pick } => {
                let Some((&a, &(owner, len, byte))) = nth(&live, pick) else {
                    continue;
                };
                check_contents(a, len, byte);
                live.remove(&a);
                let p = NonNull::new(a as *mut u8).expect("non-null");
                match owner {
                    Owner::Zone(z) => {
                        // SAFETY: a live element of zone `z`, freed once.
                        unsafe {
                            match (z, tag % 2) {
                                (0, 1) => hardened.free(p),
                                (_, 1) => release.free(p),
                                _ => zones[z].free(p),
                            }
                        }
                        .expect("a valid free");
                        if z == 0 {
                            free0.push(a);
                        }
                    }
                    // SAFETY: a live kalloc block of `layout`, freed once.
                    Owner::Kalloc(layout) => unsafe { heap.free(p, layout) },
                }
            }
            Op::DoubleFree { pick } => {
                if free0.is_empty() || written.contains(&free0[usize::from(pick) % free0.len()]) {
                    continue;
                }
                let a = free0[usize::from(pick) % free0.len()];
                let p = NonNull::new(a as *mut u8).expect("non-null");
                // SAFETY: deliberately frees a free element, which is still mapped (its zone
                // was not drained since); the zone must catch it.
                let r = unsafe {
                    if tag % 2 == 1 {
                        hardened.free(p)
                    } else {
                        zones[0].free(p)
                    }
                };
                assert_eq!(r, Err(ZoneError::Violation(ViolationKind::DoubleFree)));
                assert_eq!(take_seen(), [(ViolationKind::DoubleFree, a)]);
            }
            Op::WriteAfterFree { pick, word, byte } => {
                if free0.is_empty() {
                    continue;
                }
                let a = free0[usize::from(pick) % free0.len()];
                // Words 1.. (the marker and the zeroed contents). A write to word 0 of an
                // element on a chunk freelist forges its link, which is caught when the link
                // is checked but may by chance name another free element: the unit test
                // `a_forged_freelist_link_is_caught` covers link forgery.
                let word = 1 + usize::from(word) % (SIZES[0] / 8 - 1);
                // SAFETY: deliberately writes a free element, still mapped (see DoubleFree).
                unsafe { (a as *mut u8).add(word * 8).write(byte.max(1)) };
                written.insert(a);
            }
            Op::Realloc { pick, size } => {
                let kalloc_blocks: Vec<usize> = live
                    .iter()
                    .filter(|(_, (o, _, _))| matches!(o, Owner::Kalloc(_)))
                    .map(|(&a, _)| a)
                    .collect();
                if kalloc_blocks.is_empty() {
                    continue;
                }
                let a = kalloc_blocks[usize::from(pick) % kalloc_blocks.len()];
                let (owner, len, byte) = live[&a];
                let Owner::Kalloc(layout) = owner else {
                    continue;
                };
                let new_size = usize::from(size) * 4;
                let p = NonNull::new(a as *mut u8).expect("non-null");
                // SAFETY: a live kalloc block of `layout`.
                let q = unsafe { heap.realloc(p, layout, new_size) }.expect("memory available");
                live.remove(&a);
                check_contents(q.as_ptr() as usize, len.min(new_size), byte);
                let new_layout = core::alloc::Layout::from_size_align(new_size, layout.align())
                    .expect("valid layout");
                insert(
                    &mut live,
                    q.as_ptr() as usize,
                    Owner::Kalloc(new_layout),
                    new_size,
                    tag,
                );
            }
            Op::Drain { zone } | Op::Trim { zone } => {
                let z = usize::from(zone % 2);
                if matches!(op, Op::Drain { .. }) {
                    zones[z].drain_cpu_cache();
                    zones[z].drain();
                } else {
                    zones[z].trim(0);
                    heap.trim();
                }
                if z == 0 {
                    // Emptied chunks may have gone back to the source (and their addresses be
                    // reused): stop touching free elements and stop expecting particular
                    // written ones; any still in circulation are caught when met.
                    free0.clear();
                    stale_written |= !written.is_empty();
                    written.clear();
                    take_seen();
                }
            }
        }
        for (z, zone) in zones.iter().enumerate() {
            let want = live
                .values()
                .filter(|(o, _, _)| matches!(o, Owner::Zone(i) if *i == z))
                .count();
            assert_eq!(zone.stats().in_use, want, "zone {z} in-use count");
        }
        let want = live
            .values()
            .filter(|(o, _, _)| matches!(o, Owner::Kalloc(_)))
            .count();
        let got: usize =
            heap.zone_stats().map(|s| s.in_use).sum::<usize>() + heap.large_stats().live;
        assert_eq!(got, want, "kalloc live blocks");
    }
    for (a, (owner, _, _)) in live {
        let p = NonNull::new(a as *mut u8).expect("non-null");
        match owner {
            // SAFETY: live, freed once.
            Owner::Zone(z) => unsafe { zones[z].free(p) }.expect("a valid free"),
            // SAFETY: live, freed once.
            Owner::Kalloc(layout) => unsafe { heap.free(p, layout) },
        }
    }
}

/// A `CpuLocal` usable as a trait object (its method is generic, so it is not object-safe
/// itself); both zones share one type this way.
pub trait CpuLocalDyn {
    /// The current CPU, if any.
    fn cpu(&self) -> Option<CpuIndex>;
}

impl CpuLocalDyn for OneCpu {
    fn cpu(&self) -> Option<CpuIndex> {
        Some(CpuIndex::new(0))
    }
}

impl CpuLocalDyn for NoCpuCache {
    fn cpu(&self) -> Option<CpuIndex> {
        None
    }
}

// SAFETY: the implementations are `OneCpu` (single-threaded, see its `CpuLocal` impl) and
// `NoCpuCache` (always `None`).
unsafe impl CpuLocal for dyn CpuLocalDyn {
    fn with_cpu<R>(&self, f: impl FnOnce(Option<CpuIndex>) -> R) -> R {
        f(self.cpu())
    }
}

fn nth<V>(map: &BTreeMap<usize, V>, pick: u16) -> Option<(&usize, &V)> {
    if map.is_empty() {
        return None;
    }
    map.iter().nth(usize::from(pick) % map.len())
}

fn insert(
    live: &mut BTreeMap<usize, (Owner, usize, u8)>,
    a: usize,
    owner: Owner,
    len: usize,
    tag: u8,
) {
    let len1 = len.max(1);
    if let Some((&b, &(_, l, _))) = live.range(..=a).next_back() {
        assert!(b + l.max(1) <= a, "overlaps the block below");
    }
    if let Some((&b, _)) = live.range(a..).next() {
        assert!(a + len1 <= b, "overlaps the block above");
    }
    // SAFETY: a fresh block of at least `len` bytes.
    unsafe { (a as *mut u8).write_bytes(tag, len) };
    live.insert(a, (owner, len, tag));
}

fn check_contents(a: usize, len: usize, byte: u8) {
    // SAFETY: a live block of at least `len` bytes.
    let bytes = unsafe { core::slice::from_raw_parts(a as *const u8, len) };
    assert!(bytes.iter().all(|&b| b == byte), "contents changed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_and_model_agree_on_a_fixed_sequence() {
        run(&[
            Op::Alloc { zone: 0 },
            Op::Alloc { zone: 0 },
            Op::Alloc { zone: 1 },
            Op::Kalloc {
                size: 30_000,
                shift: 12,
            },
            Op::Free { pick: 0 },
            Op::DoubleFree { pick: 0 },
            Op::WriteAfterFree {
                pick: 0,
                word: 3,
                byte: 7,
            },
            Op::Alloc { zone: 0 },
            Op::Alloc { zone: 0 },
            Op::Realloc { pick: 0, size: 10 },
            Op::Drain { zone: 0 },
            Op::Trim { zone: 0 },
            Op::Free { pick: 1 },
        ]);
    }

    #[test]
    fn trims_after_a_burst() {
        let mut ops = vec![Op::Alloc { zone: 0 }; 300];
        ops.extend((0..300).map(|i| Op::Free { pick: i * 7 }));
        ops.push(Op::Trim { zone: 0 });
        ops.extend([Op::Alloc { zone: 0 }; 40]);
        ops.extend((0..20).map(|_| Op::Free { pick: 3 }));
        ops.extend([Op::Trim { zone: 0 }, Op::Trim { zone: 0 }]);
        ops.extend([Op::Alloc { zone: 0 }; 60]);
        ops.push(Op::Trim { zone: 0 });
        run(&ops);
    }

    #[test]
    fn decodes_from_bytes() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let mut u = arbitrary::Unstructured::new(&bytes);
        let ops: Vec<Op> = u.arbitrary().expect("decodes");
        run(&ops);
    }
}
