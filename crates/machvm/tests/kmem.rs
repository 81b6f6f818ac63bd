//! `KernelPages`: zones' guard pages and read-only elements on real page tables, checked by
//! walking the table and through a software TLB (a missed flush shows as a stale use).

// Host tests: std is the natural choice.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::ptr::NonNull;

use machvm::kmem::{KernelPages, KernelPagesError, PhysView};
use machvm_addr::{SimPhysMemory, VirtAddr, VmProt};
use machvm_page_table::{
    A64Granule16K48, FlushHook, FlushRange, Format, PageTable, PageTableError, Region, TableReader,
    X86Pml4,
};
use machvm_sync::{CpuIndex, Mutex};
use machvm_tlb::soft::{Access, FaultKind, SoftTlb, SoftTlbError, Walked};
use machvm_tlb::{Asid, TlbFlush};
use machvm_zone_alloc::{
    NoCpuCache, PageAccess, PageSource, PageSourceError, Zone, ZoneConfig, ZoneFlags,
};

/// Flushes the kernel's (global) translations in the software TLB; `skip_invalidate`
/// leaves them (the broken hook the tests must catch).
struct SoftFlush<'a> {
    tlb: &'a SoftTlb,
    skip_invalidate: bool,
}

impl FlushHook for SoftFlush<'_> {
    fn sync(&mut self) {
        if let Ok(ops) = self.tlb.broadcast(CpuIndex::new(0)) {
            TlbFlush::new(&ops, Asid::KERNEL).sync();
        }
    }

    fn invalidate(&mut self, range: &FlushRange) {
        if self.skip_invalidate {
            return;
        }
        if let Ok(ops) = self.tlb.broadcast(CpuIndex::new(0)) {
            TlbFlush::new(&ops, Asid::KERNEL).invalidate(range);
        }
    }
}

type Pages<'t, F> = KernelPages<
    't,
    F,
    &'t SimPhysMemory,
    &'t SimPhysMemory,
    SoftFlush<'t>,
    PhysView<&'t SimPhysMemory>,
>;

/// What a format's test runs on: its region and window.
trait Setup: Format {
    const REGION: Region;
    const WINDOW: u64;
}

impl Setup for X86Pml4 {
    const REGION: Region = Region::Both;
    const WINDOW: u64 = 0xffff_c000_0000_0000;
}

impl Setup for A64Granule16K48 {
    // The kernel's own half (TTBR1).
    const REGION: Region = Region::Upper;
    const WINDOW: u64 = 0xffff_8000_0000_0000;
}

const WINDOW_BYTES: u64 = 16 << 20;

fn sim() -> SimPhysMemory {
    SimPhysMemory::builder()
        // Miri interprets every byte it zeroes: keep its memory small.
        .size_bytes(if cfg!(miri) { 8 << 20 } else { 32 << 20 })
        .build()
        .expect("simulated memory")
}

fn table<F: Setup>(sim: &SimPhysMemory) -> Mutex<PageTable<F, &SimPhysMemory>> {
    Mutex::new(PageTable::new(F::REGION, sim, &mut &*sim).expect("table"))
}

fn pages<'t, F: Setup>(
    sim: &'t SimPhysMemory,
    table: &'t Mutex<PageTable<F, &'t SimPhysMemory>>,
    tlb: &'t SoftTlb,
    skip_invalidate: bool,
) -> Pages<'t, F> {
    KernelPages::new(
        table,
        VirtAddr::new(F::WINDOW),
        VirtAddr::new(F::WINDOW + WINDOW_BYTES),
        sim,
        SoftFlush {
            tlb,
            skip_invalidate,
        },
        PhysView::new(sim),
    )
    .expect("kernel pages")
}

/// A simulated CPU (0, running ASID 1) accessing `va`: through the software TLB, walking the
/// table as the MMU does.
fn cpu<F: Setup>(
    tlb: &SoftTlb,
    reader: &TableReader<F, &SimPhysMemory>,
    va: VirtAddr,
    access: Access,
) -> Result<(), SoftTlbError> {
    let walk = |v: VirtAddr| {
        reader.translate(v).ok().map(|t| {
            let m = t.mapping();
            let prot = m.attrs.prot();
            Walked::new(m.pa, m.size)
                .with_writable(prot.contains(VmProt::WRITE))
                .with_executable(prot.contains(VmProt::EXECUTE))
                .with_global(m.attrs.is_global())
        })
    };
    tlb.translate(CpuIndex::new(0), Asid::new(1), va, access, walk)
        .map(|_| ())
}

fn is_fault(r: &Result<(), SoftTlbError>, kind: FaultKind) -> bool {
    matches!(r, Err(SoftTlbError::Fault { kind: k, .. }) if *k == kind)
}

fn reader<'a, F: Setup>(
    table: &Mutex<PageTable<F, &'a SimPhysMemory>>,
    sim: &'a SimPhysMemory,
) -> TableReader<F, &'a SimPhysMemory> {
    let root = table.lock().root();
    // SAFETY: the table outlives the reader (both live to the end of the test), and it frees
    // tables only after the flush, while no walk of this single-threaded test is running.
    unsafe { TableReader::new(root, F::REGION, sim) }.expect("reader")
}

/// Whether anything is mapped in the window.
fn window_mapped<F: Setup>(table: &Mutex<PageTable<F, &SimPhysMemory>>) -> usize {
    table
        .lock()
        .mappings(VirtAddr::new(F::WINDOW), WINDOW_BYTES)
        .expect("window in range")
        .count()
}

fn guarded_read_only_zone<F: Setup>() {
    let sim = sim();
    let table = table::<F>(&sim);
    let tlb = SoftTlb::new(1, 16, 4).expect("tlb");
    let frames_before = sim.frames_in_use();
    let pages = pages(&sim, &table, &tlb, false);
    let reader = reader(&table, &sim);
    let page = F::GRANULE.bytes();
    let zone: Zone<_, _, 1> = Zone::new(
        ZoneConfig::new("ro.guarded", 48).flags(
            ZoneFlags::HARDENED
                .with(ZoneFlags::READ_ONLY)
                .with(ZoneFlags::GUARD_PAGES),
        ),
        &pages,
        NoCpuCache,
    )
    .expect("zone");
    let chunk = zone.chunk_size() as u64;
    let mut live = vec![zone.alloc().expect("alloc")];
    let per_chunk = zone.stats().cur_elements;
    while live.len() < 2 * per_chunk + 1 {
        live.push(zone.alloc().expect("alloc"));
    }
    assert_eq!(zone.stats().cur_size as u64 / chunk, 3, "three chunks");
    assert_eq!(pages.stats().allocations, 3);
    assert_eq!(pages.stats().hidden_pages, 3, "one guard page per chunk");

    let mut guards = Vec::new();
    for &e in &live {
        let va = pages.va_of(e).expect("element in the window");
        // A fresh walk: the element's page is read-only, not executable.
        let t = table.lock().translate(va).expect("element mapped");
        assert_eq!(
            t.mapping().attrs.prot(),
            VmProt::READ,
            "element page at {va:?}"
        );
        // The MMU's view: reads work, writes fault on the permission.
        cpu(&tlb, &reader, va, Access::Read).expect("read of a read-only element");
        let w = cpu(&tlb, &reader, va, Access::Write);
        assert!(is_fault(&w, FaultKind::Permission), "write: {w:?}");
        let guard = VirtAddr::new((va.as_u64() & !(chunk - 1)) + chunk - page);
        assert!(
            va.as_u64() + 48 <= guard.as_u64(),
            "an element reaches the guard page"
        );
        guards.push(guard);
    }
    guards.dedup();
    assert_eq!(guards.len(), 3);
    for &g in &guards {
        assert!(matches!(
            table.lock().translate(g),
            Err(PageTableError::NotMapped { .. })
        ));
        let r = cpu(&tlb, &reader, g, Access::Read);
        assert!(is_fault(&r, FaultKind::NotMapped), "guard read: {r:?}");
    }

    // `mutate` opens the element's pages for the write and closes them again: the new bytes
    // are in the frame the walk finds, and the CPU's next write faults again.
    let e = live[per_chunk + 1];
    let va = pages.va_of(e).expect("in the window");
    // SAFETY: `e` is an allocated element of `zone`.
    unsafe { zone.mutate(e, 3, b"kernel").expect("mutate") };
    let pa = table.lock().translate(va).expect("mapped").pa;
    let mut got = [0u8; 9];
    sim.read_bytes(pa, &mut got).expect("read the frame");
    assert_eq!(&got, b"\0\0\0kernel");
    assert_eq!(
        table
            .lock()
            .translate(va)
            .expect("mapped")
            .mapping()
            .attrs
            .prot(),
        VmProt::READ
    );
    let w = cpu(&tlb, &reader, va, Access::Write);
    assert!(
        is_fault(&w, FaultKind::Permission),
        "write after mutate: {w:?}"
    );

    for e in live {
        // SAFETY: allocated above, freed once.
        unsafe { zone.free(e).expect("free") };
    }
    zone.drain();
    let s = pages.stats();
    assert_eq!(
        (s.allocations, s.frames, s.hidden_pages, s.read_only_pages),
        (0, 0, 0, 0)
    );
    assert_eq!(window_mapped(&table), 0, "drain left mappings");
    assert_eq!(
        sim.frames_in_use(),
        frames_before,
        "frames or tables not given back"
    );
    assert_eq!(s.rejected, 0);
    drop(zone);
    drop(pages);
    assert_eq!(sim.frames_in_use(), frames_before);
    assert!(
        tlb.stats().stale_reports == 0,
        "a stale translation was used"
    );
}

#[test]
// Thousands of elements, each through `protect` and a table walk: far too slow under miri;
// the protect and validation tests run the same unsafe code there.
#[cfg_attr(miri, ignore)]
fn guarded_read_only_zone_x86_64_4level() {
    guarded_read_only_zone::<X86Pml4>();
}

#[test]
// Thousands of elements, each through `protect` and a table walk: far too slow under miri;
// the protect and validation tests run the same unsafe code there.
#[cfg_attr(miri, ignore)]
fn guarded_read_only_zone_aarch64_16k() {
    guarded_read_only_zone::<A64Granule16K48>();
}

fn normal_zone_round_trips<F: Setup>() {
    let sim = sim();
    let table = table::<F>(&sim);
    let tlb = SoftTlb::new(1, 16, 4).expect("tlb");
    let frames_before = sim.frames_in_use();
    let pages = pages(&sim, &table, &tlb, false);
    let reader = reader(&table, &sim);
    let zone: Zone<_, _, 1> = Zone::new(
        ZoneConfig::new("plain", 200).flags(ZoneFlags::HARDENED),
        &pages,
        NoCpuCache,
    )
    .expect("zone");
    let live: Vec<NonNull<u8>> = (0..150).map(|_| zone.alloc().expect("alloc")).collect();
    for (i, &e) in live.iter().enumerate() {
        // SAFETY: `e` is 200 writable bytes of this zone.
        unsafe { e.as_ptr().write_bytes(i as u8, 200) };
    }
    for (i, &e) in live.iter().enumerate() {
        let va = pages.va_of(e).expect("in the window");
        cpu(&tlb, &reader, va, Access::Write).expect("writable element");
        let f = cpu(&tlb, &reader, va, Access::Execute);
        assert!(
            is_fault(&f, FaultKind::Permission),
            "kernel pages are never executable"
        );
        let pa = table.lock().translate(va).expect("mapped").pa;
        let mut got = [0u8; 200];
        sim.read_bytes(pa, &mut got).expect("frame");
        assert!(
            got.iter().all(|&b| b == i as u8),
            "element {i} through the table"
        );
    }
    assert!(pages.stats().frames > 0);
    for e in live {
        // SAFETY: allocated above, freed once.
        unsafe { zone.free(e).expect("free") };
    }
    drop(zone);
    assert_eq!(pages.stats().frames, 0);
    assert_eq!(window_mapped(&table), 0);
    assert_eq!(sim.frames_in_use(), frames_before);
}

#[test]
// Thousands of elements, each through `protect` and a table walk: far too slow under miri;
// the protect and validation tests run the same unsafe code there.
#[cfg_attr(miri, ignore)]
fn normal_zone_round_trips_x86_64_4level() {
    normal_zone_round_trips::<X86Pml4>();
}

#[test]
// Thousands of elements, each through `protect` and a table walk: far too slow under miri;
// the protect and validation tests run the same unsafe code there.
#[cfg_attr(miri, ignore)]
fn normal_zone_round_trips_aarch64_16k() {
    normal_zone_round_trips::<A64Granule16K48>();
}

/// Protection changes through the software TLB: with the real hook every change is visible
/// to a CPU that cached the old translation; with invalidations skipped, the same sequence
/// uses a stale translation (so this harness catches a `protect` that does not flush).
fn protect_sequence<F: Setup>(skip_invalidate: bool) -> Result<(), SoftTlbError> {
    let sim = sim();
    let table = table::<F>(&sim);
    let tlb = SoftTlb::new(1, 16, 4).expect("tlb");
    let pages = pages(&sim, &table, &tlb, skip_invalidate);
    let reader = reader(&table, &sim);
    let page = F::GRANULE.bytes() as usize;
    let p = pages.allocate(3 * page, page).expect("allocate");
    let va = pages.va_of(p).expect("in the window");
    let second = VirtAddr::new(va.as_u64() + page as u64);
    // SAFETY: 3 pages of writable memory from `allocate`.
    unsafe { p.as_ptr().add(page).write_bytes(0x5a, page) };
    cpu(&tlb, &reader, second, Access::Write)?; // cached writable
    let p2 = NonNull::new(p.as_ptr().wrapping_add(page)).expect("non-null");
    pages
        .protect(p2, page, PageAccess::ReadOnly)
        .expect("read-only");
    let w = cpu(&tlb, &reader, second, Access::Write);
    assert!(
        !matches!(w, Ok(())),
        "a write went through a read-only page"
    );
    w.or_else(|e| if e.is_stale() { Err(e) } else { Ok(()) })?;
    cpu(&tlb, &reader, second, Access::Read)?;
    pages.protect(p2, page, PageAccess::None).expect("hide");
    let r = cpu(&tlb, &reader, second, Access::Read);
    r.clone()
        .or_else(|e| if e.is_stale() { Err(e) } else { Ok(()) })?;
    assert!(
        is_fault(&r, FaultKind::NotMapped),
        "read of a hidden page: {r:?}"
    );
    pages
        .protect(p, 3 * page, PageAccess::ReadWrite)
        .expect("restore");
    cpu(&tlb, &reader, second, Access::Write)?;
    // The hidden page kept its frame and contents.
    let pa = table.lock().translate(second).expect("mapped again").pa;
    let mut got = vec![0u8; page];
    sim.read_bytes(pa, &mut got).expect("frame");
    assert!(got.iter().all(|&b| b == 0x5a));
    // SAFETY: allocated above with these arguments, not used again.
    unsafe { pages.deallocate(p, 3 * page, page) };
    let r = cpu(&tlb, &reader, second, Access::Read);
    r.clone()
        .or_else(|e| if e.is_stale() { Err(e) } else { Ok(()) })?;
    assert!(
        is_fault(&r, FaultKind::NotMapped),
        "read after deallocate: {r:?}"
    );
    Ok(())
}

#[test]
fn protect_and_deallocate_flush_before_returning() {
    protect_sequence::<X86Pml4>(false).expect("x86_64");
    protect_sequence::<A64Granule16K48>(false).expect("aarch64 16K");
}

#[test]
fn a_hook_that_does_not_invalidate_is_caught() {
    let e = protect_sequence::<X86Pml4>(true).expect_err("stale use must be reported");
    assert!(e.is_stale(), "{e:?}");
}

/// A few elements of a guarded read-only zone: small enough for miri, which runs the zone's
/// raw-pointer work over `KernelPages` memory.
#[test]
fn few_read_only_elements_round_trip() {
    let sim = sim();
    let table = table::<X86Pml4>(&sim);
    let tlb = SoftTlb::new(1, 16, 4).expect("tlb");
    let frames_before = sim.frames_in_use();
    let pages = pages(&sim, &table, &tlb, false);
    let zone: Zone<_, _, 1> = Zone::new(
        ZoneConfig::new("ro.few", 24).flags(ZoneFlags::READ_ONLY.with(ZoneFlags::GUARD_PAGES)),
        &pages,
        NoCpuCache,
    )
    .expect("zone");
    let live: Vec<_> = (0..3).map(|_| zone.alloc().expect("alloc")).collect();
    for (i, &e) in live.iter().enumerate() {
        // SAFETY: `e` is an allocated element of `zone`.
        unsafe { zone.mutate(e, 0, &[i as u8 + 1; 24]).expect("mutate") };
        // SAFETY: 24 readable bytes of the element.
        let got = unsafe { std::slice::from_raw_parts(e.as_ptr(), 24) };
        assert!(got.iter().all(|&b| b == i as u8 + 1));
        let va = pages.va_of(e).expect("in the window");
        let prot = table
            .lock()
            .translate(va)
            .expect("mapped")
            .mapping()
            .attrs
            .prot();
        assert_eq!(prot, VmProt::READ);
    }
    assert_eq!(pages.stats().hidden_pages, 1, "the chunk's guard page");
    for e in live {
        // SAFETY: allocated above, freed once.
        unsafe { zone.free(e).expect("free") };
    }
    drop(zone);
    assert_eq!(pages.stats().frames, 0);
    assert_eq!(window_mapped(&table), 0);
    assert_eq!(sim.frames_in_use(), frames_before);
}

#[test]
fn bad_arguments_are_refused_and_change_nothing() {
    let sim = sim();
    let table = table::<X86Pml4>(&sim);
    let tlb = SoftTlb::new(1, 16, 4).expect("tlb");
    let pages = pages(&sim, &table, &tlb, false);
    let page = 4096usize;
    let bad = |bytes, align| Err(PageSourceError::BadRequest { bytes, align });
    let refused = |bytes| Err::<(), _>(PageSourceError::BadRequest { bytes, align: page });

    // Malformed allocations.
    assert_eq!(pages.allocate(0, page), bad(0, page));
    assert_eq!(pages.allocate(page + 1, page), bad(page + 1, page));
    assert_eq!(pages.allocate(page, page / 2), bad(page, page / 2));
    assert_eq!(pages.allocate(page, 3 * page), bad(page, 3 * page));
    assert_eq!(pages.stats().rejected, 4);

    let a = pages.allocate(2 * page, page).expect("a");
    let b = pages.allocate(2 * page, page).expect("b");
    let (va_a, va_b) = (pages.va_of(a).unwrap(), pages.va_of(b).unwrap());
    assert_eq!(
        va_b.as_u64(),
        va_a.as_u64() + 2 * page as u64,
        "first fit: b follows a"
    );
    let snapshot = |pt: &Mutex<PageTable<X86Pml4, &SimPhysMemory>>| {
        pt.lock()
            .mappings(VirtAddr::new(X86Pml4::WINDOW), WINDOW_BYTES)
            .unwrap()
            .map(|m| (m.va, m.pa, m.attrs))
            .collect::<Vec<_>>()
    };
    let before = snapshot(&table);
    let stats = pages.stats();
    let frames = sim.frames_in_use();
    let at = |p: NonNull<u8>, off: usize| NonNull::new(p.as_ptr().wrapping_add(off)).unwrap();

    let misuse: [(NonNull<u8>, usize); 6] = [
        (at(a, 1), page),        // unaligned pointer
        (a, 0),                  // no bytes
        (a, page + 8),           // not whole pages
        (at(a, page), 2 * page), // runs past the end of a
        (
            NonNull::new(std::ptr::without_provenance_mut(0x1000)).unwrap(),
            page,
        ), // no allocation there
        (at(a, 2 * page), page + page), // past b's end
    ];
    for (i, &(ptr, bytes)) in misuse.iter().enumerate() {
        assert_eq!(
            pages.protect(ptr, bytes, PageAccess::None),
            refused(bytes),
            "misuse {i}"
        );
    }
    // Spanning a and b, when their host pointers happen to be adjacent too.
    let span = pages.protect(at(a, page), 2 * page, PageAccess::ReadOnly);
    assert_eq!(span, refused(2 * page));
    // Frees that do not name a whole live allocation are refused.
    // SAFETY: none of these is a live allocation with its size, so nothing is given back.
    unsafe {
        pages.deallocate(a, page, page); // part of a
        pages.deallocate(at(a, page), page, page); // interior
        pages.deallocate(
            NonNull::new(std::ptr::without_provenance_mut(0x1000)).unwrap(),
            page,
            page,
        ); // foreign
    }
    assert_eq!(snapshot(&table), before, "a refused call changed the table");
    assert_eq!(sim.frames_in_use(), frames);
    let after = pages.stats();
    assert_eq!(after.rejected, stats.rejected + 10);
    assert_eq!(
        (after.allocations, after.frames),
        (stats.allocations, stats.frames)
    );

    // Out of window space, out of frames, out of page-table frames: nothing changes.
    assert_eq!(
        pages.allocate(WINDOW_BYTES as usize, page),
        Err(PageSourceError::Exhausted)
    );
    sim.fail_after(Some(0));
    assert_eq!(pages.allocate(page, page), Err(PageSourceError::Exhausted));
    sim.fail_after(None);
    // A new 2 MiB-aligned allocation needs a new leaf table: the run is taken, the table
    // frame is not.
    sim.fail_after(Some(1));
    assert_eq!(
        pages.allocate(2 << 20, 2 << 20),
        Err(PageSourceError::Exhausted)
    );
    sim.fail_after(None);
    assert_eq!(snapshot(&table), before);
    assert_eq!(sim.frames_in_use(), frames);
    assert_eq!(pages.stats().exhausted, 3);

    // SAFETY: allocated above with these arguments, not used again.
    unsafe {
        pages.deallocate(a, 2 * page, page);
        pages.deallocate(b, 2 * page, page);
    }
    assert_eq!(pages.stats().allocations, 0);
}

#[test]
fn windows_are_checked() {
    let sim = sim();
    let table = table::<X86Pml4>(&sim);
    let tlb = SoftTlb::new(1, 16, 4).expect("tlb");
    let flush = || SoftFlush {
        tlb: &tlb,
        skip_invalidate: false,
    };
    let w = X86Pml4::WINDOW;
    let e = KernelPages::new(
        &table,
        VirtAddr::new(w + 1),
        VirtAddr::new(w + 0x1000),
        &sim,
        flush(),
        PhysView::new(&sim),
    )
    .err();
    assert_eq!(
        e,
        Some(KernelPagesError::BadWindow {
            start: w + 1,
            end: w + 0x1000
        })
    );
    let first = pages(&sim, &table, &tlb, false);
    let p = first.allocate(0x1000, 0x1000).expect("page");
    let e = KernelPages::new(
        &table,
        VirtAddr::new(w),
        VirtAddr::new(w + 0x10_0000),
        &sim,
        flush(),
        PhysView::new(&sim),
    )
    .err();
    assert_eq!(e, Some(KernelPagesError::WindowInUse { va: w }));
    // SAFETY: allocated above with these arguments.
    unsafe { first.deallocate(p, 0x1000, 0x1000) };
}
