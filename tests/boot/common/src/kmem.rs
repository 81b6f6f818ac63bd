//! Zones over kernel pages on the kernel's own page table: machvm's
//! [`KernelPages`](machvm::kmem::KernelPages) maps zone chunks into a window of the table the
//! CPU runs on, so guard pages and read-only elements are enforced by the real MMU.
//!
//! The checks ([`check`]):
//!
//! - **kmem-guard** — a read of every chunk's guard page faults (the probe's fault is counted
//!   and the kernel carries on);
//! - **kmem-read-only** — a write to a read-only zone's element faults, and the element keeps
//!   its contents;
//! - **kmem-mutate** — the same element changed through `Zone::mutate` reads back the new
//!   value through the MMU, and the next stray write faults again;
//! - **kmem-zone** — a plain zone over kernel pages round-trips data in many chunks, and every
//!   frame (data and page-table) is back in the pool once the zones are gone.

use alloc::vec::Vec;
use core::ptr::NonNull;

use machvm::kmem::{KernelPages, Mmu};
use machvm_addr::VirtAddr;
use machvm_page_table::Format;
use machvm_tlb::{Asid, TlbFlush, TlbOps};
use machvm_zone_alloc::{NoCpuCache, Zone, ZoneConfig, ZoneFlags};

use crate::fault::{self, Cpu};
use crate::report::pass;
use crate::space::AddressSpace;
use crate::vm::PoolFrames;
use crate::{ensure, must};

/// Bytes of the kernel-pages window.
const WINDOW_BYTES: u64 = 64 << 20;

/// Runs the kernel-pages checks on `space`'s table (the kernel's, live on this CPU) with the
/// window at `window`, which nothing in the table maps.
pub fn check<F: Format, T: TlbOps, C: Cpu>(space: &AddressSpace<'_, F, T>, window: u64) {
    let cpu = C::index();
    let page = F::GRANULE.bytes();
    let pool_before = space.pool.lock().in_use();
    let plain_bytes;
    {
        // SAFETY: `space.pt` is the table this CPU runs on (the kernel's), the hook flushes
        // this CPU's TLB (the only CPU touching the window), and nothing else maps in the
        // window while `pages` lives.
        let view = unsafe { Mmu::new() };
        let pages = must!(
            KernelPages::new(
                &space.pt,
                VirtAddr::new(window),
                VirtAddr::new(window + WINDOW_BYTES),
                PoolFrames(space.pool),
                TlbFlush::new(space.tlb, Asid::KERNEL),
                view,
            ),
            "creating kernel pages at {window:#x}"
        );
        read_only::<F, T, C>(&pages, cpu, page);
        plain_bytes = plain::<C>(&pages);
        let s = pages.stats();
        ensure!(
            s.allocations == 0 && s.frames == 0,
            "kernel pages still hold {} allocations, {} frames",
            s.allocations,
            s.frames
        );
    }
    let pool_after = space.pool.lock().in_use();
    ensure!(
        pool_after == pool_before,
        "frames in use {pool_before} before the kernel-pages checks, {pool_after} after"
    );
    pass(
        "kmem-zone",
        format_args!(
            "200 elements of 256 bytes in {} KiB of kernel pages round-tripped; every frame \
             (data and page-table) back in the pool ({pool_after} in use)",
            plain_bytes >> 10
        ),
    );
}

type Pages<'a, 'p, F, T> =
    KernelPages<'a, F, machvm_addr::IdentityMapper, PoolFrames<'p>, TlbFlush<'a, T>, Mmu>;

fn read_only<F: Format, T: TlbOps, C: Cpu>(pages: &Pages<'_, '_, F, T>, cpu: usize, page: u64) {
    let zone: Zone<_, _, 1> = must!(
        Zone::new(
            ZoneConfig::new("kmem.ro", 64).flags(
                ZoneFlags::HARDENED
                    .with(ZoneFlags::READ_ONLY)
                    .with(ZoneFlags::GUARD_PAGES)
            ),
            pages,
            NoCpuCache,
        ),
        "creating the read-only zone"
    );
    let chunk = zone.chunk_size() as u64;
    let first = must!(zone.alloc(), "allocating a read-only element");
    let per_chunk = zone.stats().cur_elements;
    let mut live = Vec::new();
    live.push(first);
    while live.len() < per_chunk + 1 {
        live.push(must!(zone.alloc(), "allocating a read-only element"));
    }
    let chunks = zone.stats().cur_size as u64 / chunk;
    ensure!(chunks == 2, "expected 2 chunks, the zone has {chunks}");

    // (a) Guard pages: every chunk's last page has no translation.
    let mut guards = Vec::new();
    for e in &live {
        let g = (e.as_ptr() as u64 & !(chunk - 1)) + chunk - page;
        if !guards.contains(&g) {
            guards.push(g);
        }
    }
    let faults = fault::count(cpu);
    for &g in &guards {
        let got = C::read(g);
        ensure!(
            got.is_none(),
            "the guard page at {g:#x} read {got:x?}: no fault"
        );
    }
    let taken = fault::count(cpu) - faults;
    ensure!(
        taken == guards.len() as u64,
        "{taken} faults for {} guard reads",
        guards.len()
    );
    pass(
        "kmem-guard",
        format_args!(
            "{} chunks of {} KiB over kernel pages at {:#x}: a read of each guard page faulted",
            guards.len(),
            chunk >> 10,
            guards[0] & !(chunk - 1)
        ),
    );

    // (b) Read-only elements: a stray write faults and changes nothing.
    let e = live[per_chunk];
    let va = e.as_ptr() as u64;
    let before = C::read(va);
    ensure!(
        before == Some(0),
        "a new read-only element reads {before:x?}"
    );
    let faults = fault::count(cpu);
    ensure!(
        !C::write(va, 0xbad0_bad0_bad0_bad0),
        "a write to the read-only element at {va:#x} did not fault"
    );
    ensure!(
        fault::count(cpu) == faults + 1,
        "the write was not one fault"
    );
    let after = C::read(va);
    ensure!(
        after == Some(0),
        "the refused write changed the element: {after:x?}"
    );
    pass(
        "kmem-read-only",
        format_args!("a write to read-only element {va:#x} faulted; its contents are unchanged"),
    );

    // (c) The zone's own way in.
    let value = 0x6b6d_656d_5f72_6f21u64;
    // SAFETY: `e` is an allocated element of `zone`.
    let mutated = unsafe { zone.mutate(e, 0, &value.to_ne_bytes()) };
    must!(mutated, "mutating the element");
    let got = C::read(va);
    ensure!(
        got == Some(value),
        "after mutate the element reads {got:x?}"
    );
    let faults = fault::count(cpu);
    ensure!(
        !C::write(va, 0),
        "after mutate the element at {va:#x} is writable"
    );
    ensure!(
        fault::count(cpu) == faults + 1,
        "the write was not one fault"
    );
    // SAFETY: `e` is an allocated element of `zone`.
    let sealed = unsafe { zone.verify(e) };
    ensure!(sealed.is_ok(), "the element's seal: {sealed:?}");
    pass(
        "kmem-mutate",
        format_args!("Zone::mutate wrote {value:#x}, read back through the MMU; still read-only"),
    );

    for e in live {
        // SAFETY: allocated above, freed once.
        must!(unsafe { zone.free(e) }, "freeing a read-only element");
    }
    drop(zone);
}

/// Round-trips data through a plain zone; returns the bytes of chunks it used.
fn plain<C: Cpu>(pages: &impl machvm_zone_alloc::PageSource) -> usize {
    let zone: Zone<_, _, 1> = must!(
        Zone::new(
            ZoneConfig::new("kmem.plain", 256).flags(ZoneFlags::HARDENED),
            pages,
            NoCpuCache,
        ),
        "creating the plain zone"
    );
    let mut live: Vec<NonNull<u8>> = Vec::new();
    for i in 0..200u64 {
        let e = must!(zone.alloc(), "allocating element {i}");
        for w in 0..32u64 {
            // SAFETY: `e` is 256 writable bytes of the zone, 8-byte aligned.
            unsafe { e.as_ptr().cast::<u64>().add(w as usize).write(i << 8 | w) };
        }
        live.push(e);
    }
    for (i, e) in live.iter().enumerate() {
        for w in 0..32u64 {
            let got = C::read(e.as_ptr() as u64 + 8 * w);
            ensure!(
                got == Some((i as u64) << 8 | w),
                "element {i} word {w} reads {got:x?}"
            );
        }
    }
    let stats = zone.stats();
    for e in live {
        // SAFETY: allocated above, freed once.
        must!(unsafe { zone.free(e) }, "freeing a plain element");
    }
    drop(zone);
    stats.cur_size
}
