//! The checks every configuration runs on the real MMU, generic over the translation format
//! `F`, the TLB operations `T` and the CPU's probes `C`.
//!
//! Test addresses live in a window of the lower half that every format can translate (below
//! 2^39, the smallest aarch64 region used): one 4 GiB slot per check, far from the identity
//! map of the kernel. Each check maps what it needs, tests it, and unmaps it again, so the
//! checks can run in any order and on any address space.

use machvm_addr::{PageSize, VirtAddr, VmProt};
use machvm_page_table::{Format, PageAttrs};
use machvm_tlb::TlbOps;

use crate::fault::{self, Cpu};
use crate::report::{info, pass};
use crate::space::{AddressSpace, DATA, peek};
use crate::{ensure, must};

/// Single-page map / remap / unmap checks.
pub const SINGLE_BASE: u64 = 0x40_0000_0000;
/// The 40-page range check.
pub const RANGE_BASE: u64 = 0x41_0000_0000;
/// Pages mapped on demand by the fault hook.
pub const DEMAND_BASE: u64 = 0x42_0000_0000;
/// The permission-change check.
pub const PROTECT_BASE: u64 = 0x43_0000_0000;
/// The block alias and split check (1 GiB aligned, so any block size fits).
pub const BLOCK_BASE: u64 = 0x44_0000_0000;

/// Pages in the range check: above the flush gather's page-by-page ceiling (33), so the gather
/// takes its range (`FEAT_TLBIRANGE`) or whole-ASID path.
pub const RANGE_PAGES: u64 = 40;

/// A value read through the test mappings, recognisable in a hex dump.
pub const fn pattern(tag: u64, index: u64) -> u64 {
    0x5a5a_0000_0000_0000 | (tag << 32) | index
}

/// A known value in the kernel image, read through an alias in the block check.
#[used]
pub static MAGIC: [u64; 2] = [0x6d61_6368_766d_2121, 0x0123_4567_89ab_cdef];

fn granule<F: Format>() -> u64 {
    F::GRANULE.bytes()
}

/// Runs every generic check on `space` (whose table the CPU is using now).
pub fn run_all<F: Format, T: TlbOps, C: Cpu>(space: &AddressSpace<'_, F, T>) {
    map_remap_unmap::<F, T, C>(space, SINGLE_BASE);
    range::<F, T, C>(space, "range");
    demand::<F, T, C>(space);
    protect::<F, T, C>(space);
    block_split::<F, T, C>(space);
}

/// Maps a page to frame A and reads it; remaps it to frame B and flushes one page through
/// `TlbFlush` (x86 `invlpg`, aarch64 `TLBI VALE1IS`), requiring B; unmaps it and requires a
/// fault. A neighbouring "anchor" page keeps the leaf table alive so the flush stays a
/// one-page flush.
pub fn map_remap_unmap<F: Format, T: TlbOps, C: Cpu>(space: &AddressSpace<'_, F, T>, va: u64) {
    let g = granule::<F>();
    let cpu = C::index();
    let a = space.frame_with(pattern(0xa, 0));
    let b = space.frame_with(pattern(0xb, 0));
    let anchor = space.frame_with(pattern(0xc, 0));
    must!(
        space.map(va + g, anchor, F::GRANULE, &DATA),
        "mapping the anchor page"
    );
    must!(space.map(va, a, F::GRANULE, &DATA), "mapping {va:#x}");
    let pa = must!(
        space.pt.lock().translate(VirtAddr::new(va)),
        "translating {va:#x}"
    )
    .pa
    .as_u64();
    ensure!(pa == a, "translate({va:#x}) = {pa:#x}, mapped {a:#x}");
    let got = C::read(va);
    ensure!(
        got == Some(pattern(0xa, 0)),
        "read {va:#x} -> frame A {a:#x}: got {got:x?}"
    );
    ensure!(
        C::write(va, pattern(0xa, 1)) && peek(a) == pattern(0xa, 1),
        "write through {va:#x} did not reach frame A {a:#x}"
    );
    pass(
        "map",
        format_args!("{va:#x} -> {a:#x}: read and write through the new mapping"),
    );

    // Remap: unmap, map B, read once *before* flushing the unmap (TCG models TLBs, so the
    // stale translation to A is usually still cached), then flush and require B. The early
    // read is a deliberate break-before-make violation on aarch64 (no TLBI between the invalid
    // and the new entry): fine under QEMU, but on real hardware it may give either frame or a
    // TLB conflict abort, so drop that read when porting this check to silicon.
    let pending = {
        let mut pt = space.pt.lock();
        let (old, pending) = must!(pt.unmap(VirtAddr::new(va)), "unmapping {va:#x}");
        ensure!(
            old.pa.as_u64() == a,
            "unmap returned {:#x}",
            old.pa.as_u64()
        );
        let mapped = must!(
            pt.map(
                VirtAddr::new(va),
                machvm_addr::PhysAddr::new(b),
                F::GRANULE,
                &DATA,
                &mut *space.pool.lock()
            ),
            "mapping {va:#x} -> B"
        );
        must!(space.finish(&pt, mapped), "syncing the new entry");
        pending
    };
    let before = C::read(va);
    let flushed = {
        let pt = space.pt.lock();
        must!(space.finish(&pt, pending), "flushing the unmap")
    };
    let after = C::read(va);
    ensure!(
        after == Some(pattern(0xb, 0)),
        "after remap to B {b:#x} and flush, {va:#x} read {after:x?} (stale TLB entry?)"
    );
    ensure!(
        flushed.pages == 1 && flushed.ranges == 0 && flushed.full == 0,
        "one-page remap flushed {flushed:?}, expected one per-page invalidation"
    );
    let control = match before {
        Some(v) if v == pattern(0xa, 1) => "stale A (the TLB held it)",
        Some(v) if v == pattern(0xb, 0) => "already B (no stale entry cached)",
        Some(_) => "other",
        None => "fault",
    };
    pass(
        "remap",
        format_args!("{va:#x} A -> B: before flush read {control}; after 1-page flush read B"),
    );

    let faults = fault::count(cpu);
    let flushed = must!(space.unmap_range(va, g), "unmapping {va:#x}");
    let got = C::read(va);
    ensure!(got.is_none(), "read of unmapped {va:#x} returned {got:x?}");
    ensure!(
        fault::count(cpu) == faults + 1,
        "fault counter did not count the unmapped read"
    );
    pass(
        "unmap",
        format_args!(
            "{va:#x}: read faults after the flush ({} page op(s))",
            flushed.pages
        ),
    );
    must!(space.unmap_range(va + g, g), "unmapping the anchor");
    for frame in [a, b, anchor] {
        space.free_frame(frame);
    }
}

/// Maps 40 pages one by one in a `Cursor` batch, reads them, unmaps them in one
/// `unmap_range`, and requires the gather to take its range or whole-ASID path and every page
/// to fault; then maps them to new frames and requires the new values.
pub fn range<F: Format, T: TlbOps, C: Cpu>(space: &AddressSpace<'_, F, T>, name: &str) {
    let g = granule::<F>();
    let cpu = C::index();
    let mut frames = [0u64; RANGE_PAGES as usize];
    for round in 0..2u64 {
        for (i, f) in frames.iter_mut().enumerate() {
            *f = space.frame_with(pattern(0x10 + round, i as u64));
        }
        {
            let mut pt = space.pt.lock();
            let mut pool = space.pool.lock();
            let (mapped, pending) = pt.cursor(&mut *pool, |c| {
                frames.iter().enumerate().try_for_each(|(i, &f)| {
                    let va = VirtAddr::new(RANGE_BASE + i as u64 * g);
                    c.map(va, machvm_addr::PhysAddr::new(f), F::GRANULE, &DATA)
                })
            });
            drop(pool);
            must!(mapped, "mapping the range");
            must!(space.finish(&pt, pending), "syncing the range");
        }
        for i in 0..RANGE_PAGES {
            let got = C::read(RANGE_BASE + i * g);
            ensure!(
                got == Some(pattern(0x10 + round, i)),
                "range round {round}: page {i} read {got:x?}"
            );
        }
        let faults = fault::count(cpu);
        let flushed = must!(
            space.unmap_range(RANGE_BASE, RANGE_PAGES * g),
            "unmapping the range"
        );
        for i in 0..RANGE_PAGES {
            let got = C::read(RANGE_BASE + i * g);
            ensure!(
                got.is_none(),
                "range round {round}: page {i} still reads {got:x?} after the flush"
            );
        }
        ensure!(
            fault::count(cpu) == faults + RANGE_PAGES,
            "range: expected {RANGE_PAGES} faults"
        );
        let caps = space.tlb.caps();
        let path_ok = if caps.range {
            flushed.ranges >= 1 && flushed.pages == 0
        } else {
            flushed.full >= 1 && flushed.pages == 0
        };
        ensure!(
            path_ok,
            "range flush {flushed:?} does not match caps {caps:?} (range TLBI expected: {})",
            caps.range
        );
        for &f in &frames {
            space.free_frame(f);
        }
        if round == 1 {
            pass(
                name,
                format_args!(
                    "{RANGE_PAGES} pages mapped by cursor, unmapped by one flush ({} via {}), all fault; remapped twice",
                    if caps.range {
                        "range TLBI"
                    } else {
                        "whole ASID"
                    },
                    if caps.range {
                        "FlushGather range path"
                    } else {
                        "FlushGather ASID path"
                    }
                ),
            );
        }
    }
}

/// Installs the demand hook and reads three unmapped pages: the exception handler maps each on
/// the fault and retries the access.
pub fn demand<F: Format, T: TlbOps, C: Cpu>(space: &AddressSpace<'_, F, T>) {
    let g = granule::<F>();
    let cpu = C::index();
    let hits = fault::demand_hits();
    let faults = fault::count(cpu);
    // SAFETY: `space` outlives the hook, which is cleared below before returning; the hook only
    // uses `try_lock`.
    unsafe { fault::set_demand_hook(demand_map::<F, T>, core::ptr::from_ref(space).cast::<()>()) };
    for i in [0u64, 5, 2] {
        let va = DEMAND_BASE + i * g + 8;
        let got = C::read(va);
        ensure!(
            got == Some(pattern(0xd, i)),
            "demand page {i}: read {got:x?}"
        );
    }
    fault::clear_demand_hook();
    ensure!(
        fault::demand_hits() == hits + 3,
        "expected 3 demand faults, got {}",
        fault::demand_hits() - hits
    );
    ensure!(
        fault::count(cpu) == faults,
        "demand faults were counted as failed probes"
    );
    for i in [0u64, 5, 2] {
        let pa = must!(
            space
                .pt
                .lock()
                .translate(VirtAddr::new(DEMAND_BASE + i * g)),
            "translating demand page {i}"
        )
        .pa
        .as_u64();
        must!(
            space.unmap_range(DEMAND_BASE + i * g, g),
            "unmapping demand page {i}"
        );
        space.free_frame(pa);
    }
    pass(
        "demand",
        format_args!("3 faults at {DEMAND_BASE:#x}.. mapped by the handler and retried"),
    );
}

/// The demand-paging hook: maps a fresh frame filled with `pattern(0xd, page)` at any page of
/// the demand window.
///
/// # Safety
///
/// `ctx` points to a live `AddressSpace<F, T>`.
unsafe fn demand_map<F: Format, T: TlbOps>(ctx: *const (), fault: fault::HwFault) -> bool {
    // SAFETY: the caller (the check that installed the hook) keeps the space alive.
    let space = unsafe { &*ctx.cast::<AddressSpace<'_, F, T>>() };
    let va = fault.va;
    let g = granule::<F>();
    if !(DEMAND_BASE..DEMAND_BASE + 16 * g).contains(&va) {
        return false;
    }
    let page = (va - DEMAND_BASE) / g;
    let Some(mut pt) = space.pt.try_lock() else {
        return false;
    };
    let frame = space.frame_with(pattern(0xd, page));
    let Some(mut pool) = space.pool.try_lock() else {
        return false;
    };
    let Ok(pending) = pt.map(
        VirtAddr::new(DEMAND_BASE + page * g),
        machvm_addr::PhysAddr::new(frame),
        F::GRANULE,
        &DATA,
        &mut *pool,
    ) else {
        return false;
    };
    drop(pool);
    space.finish(&pt, pending).is_ok()
}

/// Maps a page read-write, writes it, makes it read-only with `protect_range` (a permission
/// change of a live entry, flushed through `TlbFlush`), and requires writes to fault while
/// reads still work.
pub fn protect<F: Format, T: TlbOps, C: Cpu>(space: &AddressSpace<'_, F, T>) {
    let g = granule::<F>();
    let cpu = C::index();
    let frame = space.frame_with(0);
    let anchor = space.frame_with(0);
    must!(
        space.map(PROTECT_BASE + g, anchor, F::GRANULE, &DATA),
        "mapping the anchor"
    );
    must!(
        space.map(PROTECT_BASE, frame, F::GRANULE, &DATA),
        "mapping the page"
    );
    ensure!(
        C::write(PROTECT_BASE, pattern(0xe, 1)),
        "write to the writable page faulted"
    );
    let flushed = {
        let mut pt = space.pt.lock();
        let mut hook = machvm_tlb::TlbFlush::new(space.tlb, space.asid);
        let pending = must!(
            pt.protect_range(
                VirtAddr::new(PROTECT_BASE),
                g,
                &PageAttrs::new(VmProt::READ),
                &mut hook,
                &mut *space.pool.lock()
            ),
            "protect_range"
        );
        must!(space.finish(&pt, pending), "flushing the protection change")
    };
    let faults = fault::count(cpu);
    ensure!(
        !C::write(PROTECT_BASE, pattern(0xe, 2)),
        "write to the read-only page succeeded after the flush"
    );
    ensure!(
        fault::count(cpu) == faults + 1,
        "the write fault was not counted"
    );
    let got = C::read(PROTECT_BASE);
    ensure!(
        got == Some(pattern(0xe, 1)),
        "read-only page reads {got:x?}"
    );
    must!(space.unmap_range(PROTECT_BASE, 2 * g), "unmapping");
    space.free_frame(frame);
    space.free_frame(anchor);
    pass(
        "protect",
        format_args!(
            "RW -> R flushed ({} page op): writes fault, reads work",
            flushed.pages
        ),
    );
}

/// Maps the block-sized, block-aligned physical region around [`MAGIC`] as one block (2 MiB
/// for 4 KiB granules, 32 MiB for 16 KiB), reads `MAGIC` through it, then unmaps the one page
/// holding `MAGIC`: the engine splits the live block (break-before-make on aarch64, through
/// the same flush hook), that page must fault, its neighbour must still read the same bytes
/// as the identity map.
pub fn block_split<F: Format, T: TlbOps, C: Cpu>(space: &AddressSpace<'_, F, T>) {
    let g = granule::<F>();
    let Some(block) = F::leaf_size(1) else {
        info(
            "block",
            format_args!("format has no level-1 blocks, skipped"),
        );
        return;
    };
    let bs = block.bytes();
    let magic = core::ptr::addr_of!(MAGIC) as u64;
    let base = magic & !(bs - 1);
    let alias = |pa: u64| BLOCK_BASE + (pa - base);
    let ro = PageAttrs::new(VmProt::READ);
    must!(
        space.map(BLOCK_BASE, base, block, &ro),
        "mapping a {block} block"
    );
    let got = C::read(alias(magic));
    ensure!(got == Some(MAGIC[0]), "block alias of MAGIC read {got:x?}");
    let page = magic & !(g - 1);
    let neighbour = (page ^ g) + 8;
    let want = C::read(neighbour);
    ensure!(want.is_some(), "identity read of {neighbour:#x} faulted");
    let flushed = must!(
        space.unmap_range(alias(page), g),
        "unmapping one page of the block"
    );
    let got = C::read(alias(magic));
    ensure!(
        got.is_none(),
        "page unmapped from a split block still reads {got:x?}"
    );
    let got = C::read(alias(neighbour));
    ensure!(
        got == want,
        "neighbour after split reads {got:x?}, identity has {want:x?}"
    );
    let t = must!(
        space.pt.lock().translate(VirtAddr::new(alias(neighbour))),
        "translating the neighbour"
    );
    ensure!(
        t.size == F::GRANULE,
        "neighbour is mapped by a {} leaf after the split",
        t.size
    );
    must!(space.unmap_range(BLOCK_BASE, bs), "unmapping the block");
    pass(
        "block",
        format_args!(
            "{block} block alias read; 1-page unmap split it ({:?}): page faults, neighbour intact",
            Op(flushed)
        ),
    );
}

/// Prints a flush outcome briefly.
struct Op(machvm_tlb::gather::FlushOutcome);

impl core::fmt::Debug for Op {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} page/{} range/{} full invalidations",
            self.0.pages, self.0.ranges, self.0.full
        )
    }
}

/// Maps a page at `va` (in any region the space translates, e.g. the upper half), reads it,
/// unmaps it and requires a fault.
pub fn single_page_at<F: Format, T: TlbOps, C: Cpu>(
    space: &AddressSpace<'_, F, T>,
    name: &str,
    va: u64,
) {
    let g = granule::<F>();
    let frame = space.frame_with(pattern(0xf, va >> 40));
    must!(space.map(va, frame, F::GRANULE, &DATA), "mapping {va:#x}");
    let got = C::read(va);
    ensure!(
        got == Some(pattern(0xf, va >> 40)),
        "{name}: read {va:#x} got {got:x?}"
    );
    must!(space.unmap_range(va, g), "unmapping {va:#x}");
    let got = C::read(va);
    ensure!(got.is_none(), "{name}: unmapped {va:#x} reads {got:x?}");
    space.free_frame(frame);
    pass(
        name,
        format_args!("{va:#x}: mapped, read, unmapped, faults"),
    );
}

/// Returns the page size of `F` (for messages).
pub fn granule_size<F: Format>() -> PageSize {
    F::GRANULE
}
