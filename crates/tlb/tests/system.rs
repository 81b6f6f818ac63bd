//! System test: real page tables (`machvm-page-table` over simulated memory), the
//! [`ShootdownFlush`] hook, [`SpaceCpus`] and the [`Shootdown`] engine, with host threads as
//! CPUs and the software TLB checking every translation they use.
//!
//! CPU 0 changes two address spaces (unmap, remap to other frames, write-protect, map again)
//! and flushes through the hook; CPUs 1–3 keep switching between the two spaces, serve their
//! IPIs and read every page of the space they run. Each page-table change is made inside a
//! software-TLB update window that closes when the hook returns, so any use of an old
//! translation after the shootdown — a CPU that was not interrupted, or a lazy CPU that did
//! not catch up when it switched back — is reported as stale and fails the test.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use machvm_addr::{PageSize, PhysAddr, SimPhysMemory, VirtAddr, VmProt};
use machvm_page_table::{PageAttrs, PageTable, Region, X86Pml4};
use machvm_sync::CpuIndex;
use machvm_tlb::shootdown::{IpiSender, Shootdown};
use machvm_tlb::soft::{Access, SoftTlb, SoftTlbError, Walked};
use machvm_tlb::{Asid, ShootdownFlush, SpaceCpus};

const CPUS: usize = 4;
const PAGES: u64 = 8;
const BASE: u64 = 0x4000_0000;
const ROUNDS: u64 = 120;

/// One address space: its page table, its CPU tracking and its ASID.
struct Space<'m> {
    table: RwLock<PageTable<X86Pml4, &'m SimPhysMemory>>,
    cpus: SpaceCpus<CPUS>,
    asid: Asid,
}

impl Space<'_> {
    /// The page-table walk the software TLB compares its entries with.
    fn walk(&self, va: VirtAddr) -> Option<Walked> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        let t = table.translate(va).ok()?;
        let m = t.mapping();
        Some(Walked::new(m.pa, m.size).with_writable(m.attrs.prot().contains(VmProt::WRITE)))
    }
}

/// IPIs: one pending flag per CPU, polled by the CPU's thread.
struct Flags([AtomicBool; CPUS]);

impl IpiSender for Flags {
    fn send(&self, target: CpuIndex) {
        if let Some(flag) = self.0.get(target.as_usize()) {
            flag.store(true, Ordering::Release);
        }
    }
}

fn va(page: u64) -> VirtAddr {
    VirtAddr::new(BASE + page * 0x1000)
}

fn frame(space: usize, round: u64) -> PhysAddr {
    // Frames well above the page-table frames the allocator hands out first.
    PhysAddr::new(0x80_0000 + (space as u64 * 0x100 + round % 0x40) * PAGES * 0x1000)
}

#[test]
#[cfg_attr(
    miri,
    ignore = "thousands of host-thread translations are too slow under miri; tests/soft.rs and the loom models cover the parts"
)]
fn shootdowns_with_lazy_cpus_leave_no_stale_translation() {
    let sim = SimPhysMemory::builder()
        .size_bytes(16 << 20)
        .build()
        .unwrap();
    let mut alloc = sim.frame_allocator();
    let rw = PageAttrs::new(VmProt::READ | VmProt::WRITE);
    let ro = PageAttrs::new(VmProt::READ);
    let spaces: Vec<Space<'_>> = (0..2)
        .map(|i| {
            let mut pt = PageTable::<X86Pml4, _>::new(Region::Both, &sim, &mut alloc).unwrap();
            let done = pt
                .map_range(
                    va(0),
                    frame(i, 0),
                    PAGES * 0x1000,
                    &rw,
                    PageSize::Size4KiB,
                    &mut alloc,
                )
                .unwrap();
            pt.finish(done, &mut machvm_page_table::NoFlush, &mut alloc)
                .unwrap();
            Space {
                table: RwLock::new(pt),
                cpus: SpaceCpus::new(),
                asid: Asid::new(i as u16 + 1),
            }
        })
        .collect();
    let tlb = SoftTlb::new(CPUS, 8, 2).unwrap();
    let engine = Shootdown::<CPUS>::new(64);
    let ipis = Flags(core::array::from_fn(|_| AtomicBool::new(false)));
    let done = AtomicBool::new(false);
    let translations = AtomicU64::new(0);
    let catch_ups = AtomicU64::new(0);
    let errors: Mutex<Vec<SoftTlbError>> = Mutex::new(Vec::new());

    std::thread::scope(|s| {
        for cpu in 1..CPUS as u32 {
            let (spaces, tlb, engine, ipis, done) = (&spaces, &tlb, &engine, &ipis, &done);
            let (translations, catch_ups, errors) = (&translations, &catch_ups, &errors);
            s.spawn(move || {
                let me = CpuIndex::new(cpu);
                let local = tlb.cpu(me).unwrap();
                let serve = || {
                    if ipis.0[me.as_usize()].swap(false, Ordering::AcqRel) {
                        engine.handle(me, &local).unwrap();
                    }
                };
                let mut current = cpu as usize % 2;
                let _ = spaces[current].cpus.switch_in(me).unwrap();
                let mut step = 0u64;
                while !done.load(Ordering::Acquire) {
                    step += 1;
                    // Switch spaces every few steps, at a different pace per CPU.
                    if step % (u64::from(cpu) + 2) == 0 {
                        spaces[current].cpus.switch_out(me).unwrap();
                        current = 1 - current;
                        let space = &spaces[current];
                        if space.cpus.switch_in(me).unwrap().apply(space.asid, &local) {
                            catch_ups.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    serve();
                    let space = &spaces[current];
                    for page in 0..PAGES {
                        let r = tlb
                            .translate(me, space.asid, va(page), Access::Read, |v| space.walk(v));
                        match r {
                            Ok(_) | Err(SoftTlbError::Fault { .. }) => {}
                            Err(e) => errors.lock().unwrap().push(e),
                        }
                        translations.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::yield_now();
                }
                spaces[current].cpus.switch_out(me).unwrap();
                serve();
            });
        }

        let me = CpuIndex::new(0);
        let local = tlb.cpu(me).unwrap();
        for round in 1..=ROUNDS {
            let i = (round % 2) as usize;
            let space = &spaces[i];
            let mut hook =
                ShootdownFlush::new(&engine, &space.cpus, me, space.asid, &local, &ipis).unwrap();
            let window = tlb.begin_update(space.asid, va(0), PAGES * 0x1000);
            let mut table = space.table.write().unwrap();
            let len = PAGES * 0x1000;
            let done = match round % 4 {
                // Unmap half the pages (the other half stays), then map them elsewhere.
                0 => table
                    .unmap_range(va(0), len / 2, &mut hook, &mut alloc)
                    .unwrap(),
                1 => table
                    .protect_range(va(0), len, &ro, &mut hook, &mut alloc)
                    .unwrap(),
                _ => {
                    let mut done = table
                        .unmap_range(va(0), len, &mut hook, &mut alloc)
                        .unwrap();
                    let mapped = table
                        .map_range(
                            va(0),
                            frame(i, round),
                            len,
                            &rw,
                            PageSize::Size4KiB,
                            &mut alloc,
                        )
                        .unwrap();
                    table.merge_pending(&mut done, mapped);
                    done
                }
            };
            drop(table);
            // Readers may use old translations until the shootdown completes.
            std::thread::yield_now();
            let table = space.table.read().unwrap();
            table.finish(done, &mut hook, &mut alloc).unwrap();
            drop(table);
            drop(window);
            if round % 4 == 0 {
                // Put the unmapped half back for the next rounds.
                let mut table = space.table.write().unwrap();
                let mapped = table
                    .map_range(
                        va(0),
                        frame(i, round),
                        len / 2,
                        &rw,
                        PageSize::Size4KiB,
                        &mut alloc,
                    )
                    .unwrap();
                drop(table);
                let table = space.table.read().unwrap();
                table.finish(mapped, &mut hook, &mut alloc).unwrap();
            }
            // CPU 0 serves its own mailbox too (no one targets it, it runs no space).
            engine.handle(me, &local).unwrap();
        }
        done.store(true, Ordering::Release);
    });

    let errors = errors.into_inner().unwrap();
    assert!(
        errors.is_empty(),
        "{} stale or bad uses; the first: {:?}",
        errors.len(),
        errors.first()
    );
    let stats = tlb.stats();
    assert_eq!(stats.stale_reports, 0, "{stats:?}");
    assert!(translations.load(Ordering::Relaxed) > 0);
    // Lazy catch-up happened: CPUs came back to a space changed while they were away.
    assert!(
        catch_ups.load(Ordering::Relaxed) > 0,
        "no CPU ever caught up"
    );
}
