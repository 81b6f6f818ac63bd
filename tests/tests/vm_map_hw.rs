//! Address maps over real page tables: random sequences of enter / remove / protect /
//! set-max / inherit / wire / unwire / fork / exit / collapse / read / write / execute over
//! several address spaces (a parent and its forked children), each a `VmMap` whose pmap is
//! the facade's `TablePmap` (a `machvm-page-table` table on simulated physical memory), run by
//! two simulated CPUs that translate every access through `machvm-tlb`'s `SoftTlb`, against a
//! flat reference model. Runs with the `x86_64` 4-level format (4 KiB pages) and the aarch64
//! 16 KiB-granule format (16 KiB pages).
//!
//! Properties checked:
//! - every byte a CPU reads equals the model's byte (copy on write, sharing and zero fill);
//! - an access faults with a protection error exactly when the model's page does not grant
//!   it, and with "not mapped" exactly when the model has no page there;
//! - no CPU ever uses a translation the page table no longer holds (the soft TLB checks every
//!   access against a fresh walk: a missed invalidation fails the test);
//! - after every operation, no page-table entry grants more than its map entry, and an entry
//!   is wired in the page table exactly when the map entry is wired;
//! - when every space is gone, every data frame and every page-table frame is free.

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use machvm::pmap::TablePmap;
use machvm_addr::{PageSize, SimPhysMemory, VirtAddr, VmProt};
use machvm_page_table::{A64Granule16K48, FlushHook, FlushRange, Format, SwFlags, X86Pml4};
use machvm_sync::CpuIndex;
use machvm_tlb::soft::{Access, SoftTlb, SoftTlbError, Walked};
use machvm_tlb::{Asid, TlbFlush};
use machvm_vm_map::{FaultError, Inheritance, Location, MapRequest, VmMap};
use machvm_vm_object::{SimPageMemory, VmObject};
use proptest::prelude::*;

/// Pages in each address space.
const PAGES: u64 = 12;
/// Most address spaces alive at once.
const MAX_SPACES: usize = 4;
/// Simulated CPUs.
const CPUS: usize = 2;
/// First page of every map.
const BASE: u64 = 0x40_0000;

/// Protections every format expresses exactly (write-only and execute-only pages are widened
/// to readable by `x86_64`, which the model does not describe).
const PROTS: [VmProt; 5] = [
    VmProt::NONE,
    VmProt::READ,
    VmProt::DEFAULT,
    VmProt::READ.union(VmProt::EXECUTE),
    VmProt::ALL,
];
const INHERITS: [Inheritance; 3] = [Inheritance::Share, Inheritance::Copy, Inheritance::None];

/// A flush hook that invalidates on every simulated CPU through `machvm-tlb`'s `TlbFlush`.
struct SoftFlush {
    tlb: &'static SoftTlb,
    asid: Asid,
}

impl FlushHook for SoftFlush {
    fn sync(&mut self) {
        let ops = self.tlb.broadcast(CpuIndex::new(0)).expect("cpu 0");
        TlbFlush::new(&ops, self.asid).sync();
    }

    fn invalidate(&mut self, range: &FlushRange) {
        let ops = self.tlb.broadcast(CpuIndex::new(0)).expect("cpu 0");
        TlbFlush::new(&ops, self.asid).invalidate(range);
    }
}

type HwPmap<F> = TablePmap<F, &'static SimPhysMemory, &'static SimPhysMemory, SoftFlush>;
type HwMap<F> = VmMap<HwPmap<F>>;

/// What one test (one format) shares across its cases: memory and the TLB. Cases of one
/// test run one after another (the mutex), and each leaves every frame free.
struct Machine {
    mem: Arc<SimPageMemory>,
    phys: &'static SimPhysMemory,
    tlb: &'static SoftTlb,
    lock: Mutex<()>,
}

fn machine(cell: &'static OnceLock<Machine>, page: PageSize) -> &'static Machine {
    cell.get_or_init(|| {
        let phys = SimPhysMemory::builder()
            .size_bytes(32 << 20)
            .build()
            .expect("memory");
        // One memory serves the data frames (through the VM objects) and the table frames.
        let mem = Arc::new(SimPageMemory::new(phys, page).expect("page memory"));
        let phys: &'static SimPhysMemory = Box::leak(Box::new(mem.clone())).memory();
        Machine {
            mem,
            phys,
            tlb: Box::leak(Box::new(SoftTlb::new(CPUS, 16, 4).expect("tlb"))),
            lock: Mutex::new(()),
        }
    })
}

#[derive(Clone, Debug)]
enum Op {
    Enter {
        s: usize,
        page: u64,
        n: u64,
        prot: usize,
        fixed: bool,
    },
    Remove {
        s: usize,
        page: u64,
        n: u64,
    },
    Protect {
        s: usize,
        page: u64,
        n: u64,
        prot: usize,
    },
    SetMax {
        s: usize,
        page: u64,
        n: u64,
        prot: usize,
    },
    Inherit {
        s: usize,
        page: u64,
        n: u64,
        inh: usize,
    },
    Wire {
        s: usize,
        page: u64,
        n: u64,
    },
    Unwire {
        s: usize,
        page: u64,
        n: u64,
    },
    Fork {
        s: usize,
    },
    Exit {
        s: usize,
    },
    Collapse {
        s: usize,
    },
    Access {
        s: usize,
        cpu: usize,
        page: u64,
        off: u64,
        kind: u8,
        value: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let s = 0..MAX_SPACES;
    let page = 0..PAGES;
    let n = 1..5u64;
    prop_oneof![
        4 => (s.clone(), page.clone(), n.clone(), 0..PROTS.len(), any::<bool>())
            .prop_map(|(s, page, n, prot, fixed)| Op::Enter { s, page, n, prot, fixed }),
        1 => (s.clone(), page.clone(), n.clone()).prop_map(|(s, page, n)| Op::Remove { s, page, n }),
        2 => (s.clone(), page.clone(), n.clone(), 0..PROTS.len())
            .prop_map(|(s, page, n, prot)| Op::Protect { s, page, n, prot }),
        1 => (s.clone(), page.clone(), n.clone(), 0..PROTS.len())
            .prop_map(|(s, page, n, prot)| Op::SetMax { s, page, n, prot }),
        2 => (s.clone(), page.clone(), n.clone(), 0..INHERITS.len())
            .prop_map(|(s, page, n, inh)| Op::Inherit { s, page, n, inh }),
        1 => (s.clone(), page.clone(), n.clone()).prop_map(|(s, page, n)| Op::Wire { s, page, n }),
        1 => (s.clone(), page.clone(), n.clone()).prop_map(|(s, page, n)| Op::Unwire { s, page, n }),
        2 => s.clone().prop_map(|s| Op::Fork { s }),
        1 => s.clone().prop_map(|s| Op::Exit { s }),
        1 => s.clone().prop_map(|s| Op::Collapse { s }),
        // Accesses favour a few pages, so translations are reused (TLB hits) between changes.
        30 => (s, 0..CPUS, prop_oneof![0..3u64, page], 0..64u64, 0..3u8, any::<u8>())
            .prop_map(|(s, cpu, page, off, kind, value)| Op::Access { s, cpu, page, off, kind, value }),
    ]
}

impl Op {
    /// The same operation on space `s`.
    fn with_space(&self, s: usize) -> Self {
        let mut op = self.clone();
        match &mut op {
            Op::Enter { s: t, .. }
            | Op::Remove { s: t, .. }
            | Op::Protect { s: t, .. }
            | Op::SetMax { s: t, .. }
            | Op::Inherit { s: t, .. }
            | Op::Wire { s: t, .. }
            | Op::Unwire { s: t, .. }
            | Op::Fork { s: t }
            | Op::Exit { s: t }
            | Op::Collapse { s: t }
            | Op::Access { s: t, .. } => *t = s,
        }
        op
    }
}

/// One page of the model.
#[derive(Clone, Debug)]
struct MPage {
    cell: usize,
    cur: VmProt,
    inh: Inheritance,
    max: VmProt,
    wired: u32,
}

struct Space<F: Format> {
    map: HwMap<F>,
    asid: Asid,
}

struct World<F: Format> {
    m: &'static Machine,
    spaces: Vec<Option<Space<F>>>,
    model: Vec<Option<BTreeMap<u64, MPage>>>,
    cells: Vec<Vec<u8>>,
    next_asid: u16,
    ps: u64,
}

impl<F: Format> World<F> {
    fn new(m: &'static Machine) -> Self {
        let mut w = Self {
            m,
            spaces: (0..MAX_SPACES).map(|_| None).collect(),
            model: vec![None; MAX_SPACES],
            cells: Vec::new(),
            next_asid: 1,
            ps: F::GRANULE.bytes(),
        };
        let first = w.new_space();
        w.spaces[0] = Some(VmMap::new(
            F::GRANULE,
            VirtAddr::new(BASE),
            VirtAddr::new(BASE + PAGES * w.ps),
            m.mem.clone(),
            first.0,
        ))
        .map(|map| Space {
            map: map.expect("map"),
            asid: first.1,
        });
        w.model[0] = Some(BTreeMap::new());
        w
    }

    /// A new pmap with a fresh ASID.
    fn new_space(&mut self) -> (HwPmap<F>, Asid) {
        let asid = Asid::new(self.next_asid);
        self.next_asid += 1;
        let hook = SoftFlush {
            tlb: self.m.tlb,
            asid,
        };
        let pmap = TablePmap::new_user(
            F::GRANULE,
            VirtAddr::new(BASE),
            VirtAddr::new(BASE + PAGES * self.ps),
            self.m.phys,
            self.m.phys,
            hook,
        )
        .expect("pmap");
        (pmap, asid)
    }

    fn va(&self, page: u64) -> u64 {
        BASE + page * self.ps
    }

    fn range(page: u64, n: u64) -> (u64, u64) {
        (page, n.min(PAGES - page))
    }

    /// A simulated CPU's access through the soft TLB and the page-table walk, faulting into
    /// the map on a miss or a permission fault.
    fn access(&mut self, s: usize, cpu: usize, va: u64, access: Access) -> Result<u64, FaultError> {
        let tlb = self.m.tlb;
        let space = self.spaces[s].as_mut().expect("space");
        for _ in 0..4 {
            let pmap = space.map.pmap();
            let walk = |v: VirtAddr| {
                pmap.lookup(v).map(|m| {
                    let prot = m.attrs.prot();
                    Walked::new(m.pa, m.size)
                        .with_writable(prot.contains(VmProt::WRITE))
                        .with_executable(prot.contains(VmProt::EXECUTE))
                })
            };
            match tlb.translate(
                CpuIndex::new(cpu as u32),
                space.asid,
                VirtAddr::new(va),
                access,
                walk,
            ) {
                Ok(t) => {
                    let e = space
                        .map
                        .lookup(VirtAddr::new(va))
                        .expect("translation without entry");
                    assert!(
                        e.protection().contains(access.prot()),
                        "{access} at {va:#x} allowed by the TLB but not by {e:?}"
                    );
                    return Ok(t.pa.as_u64());
                }
                Err(SoftTlbError::Fault { .. }) => {
                    space.map.fault(VirtAddr::new(va), access.prot())?;
                }
                Err(e) => panic!("cpu {cpu} space {s}: {e}"),
            }
        }
        panic!("no progress at {va:#x}");
    }

    #[allow(clippy::too_many_lines)]
    fn run(&mut self, op: &Op) {
        let s = match *op {
            Op::Enter { s, .. }
            | Op::Remove { s, .. }
            | Op::Protect { s, .. }
            | Op::SetMax { s, .. }
            | Op::Inherit { s, .. }
            | Op::Wire { s, .. }
            | Op::Unwire { s, .. }
            | Op::Fork { s }
            | Op::Exit { s }
            | Op::Collapse { s }
            | Op::Access { s, .. } => s,
        };
        // `s` picks among the live spaces, so no operation is wasted on a missing one.
        let live: Vec<usize> = (0..MAX_SPACES)
            .filter(|&i| self.spaces[i].is_some())
            .collect();
        let s = live[s % live.len()];
        let op = &op.with_space(s);
        let ps = self.ps;
        match *op {
            Op::Enter {
                page,
                n,
                prot,
                fixed,
                ..
            } => {
                let (page, n) = Self::range(page, n);
                let va = self.va(page);
                let occupied =
                    (page..page + n).any(|p| self.model[s].as_ref().unwrap().contains_key(&p));
                let location = if fixed {
                    Location::Fixed(VirtAddr::new(va))
                } else {
                    Location::Overwrite(VirtAddr::new(va))
                };
                let req = MapRequest::anonymous(n * ps)
                    .location(location)
                    .protection(PROTS[prot], VmProt::ALL);
                let r = self.spaces[s].as_mut().unwrap().map.enter(req);
                if fixed && occupied {
                    assert!(r.is_err(), "{r:?}");
                    return;
                }
                assert_eq!(r.expect("enter").as_u64(), va);
                for p in page..page + n {
                    self.cells.push(vec![0; ps as usize]);
                    let cell = self.cells.len() - 1;
                    let m = MPage {
                        cell,
                        cur: PROTS[prot],
                        max: VmProt::ALL,
                        inh: Inheritance::Copy,
                        wired: 0,
                    };
                    self.model[s].as_mut().unwrap().insert(p, m);
                }
            }
            Op::Remove { page, n, .. } => {
                let (page, n) = Self::range(page, n);
                let va = self.va(page);
                self.spaces[s]
                    .as_mut()
                    .unwrap()
                    .map
                    .remove(VirtAddr::new(va), n * ps)
                    .expect("remove");
                for p in page..page + n {
                    self.model[s].as_mut().unwrap().remove(&p);
                }
            }
            Op::Protect { page, n, prot, .. } | Op::SetMax { page, n, prot, .. } => {
                let is_max = matches!(op, Op::SetMax { .. });
                let (page, n) = Self::range(page, n);
                let va = VirtAddr::new(self.va(page));
                let new = PROTS[prot];
                let map = &mut self.spaces[s].as_mut().unwrap().map;
                let r = if is_max {
                    map.set_max_protection(va, n * ps, new)
                } else {
                    map.protect(va, n * ps, new)
                };
                let space = self.model[s].as_mut().unwrap();
                let ok = (page..page + n)
                    .all(|p| space.get(&p).is_some_and(|m| new.is_subset_of(m.max)));
                assert_eq!(r.is_ok(), ok, "{r:?}");
                if ok {
                    for p in page..page + n {
                        let m = space.get_mut(&p).unwrap();
                        if is_max {
                            m.max = new;
                            m.cur &= new;
                        } else {
                            m.cur = new;
                        }
                    }
                }
            }
            Op::Inherit { page, n, inh, .. } => {
                let (page, n) = Self::range(page, n);
                let va = VirtAddr::new(self.va(page));
                let map = &mut self.spaces[s].as_mut().unwrap().map;
                map.inherit(va, n * ps, INHERITS[inh]).expect("inherit");
                for p in page..page + n {
                    if let Some(m) = self.model[s].as_mut().unwrap().get_mut(&p) {
                        m.inh = INHERITS[inh];
                    }
                }
            }
            Op::Wire { page, n, .. } | Op::Unwire { page, n, .. } => {
                let wire = matches!(op, Op::Wire { .. });
                let (page, n) = Self::range(page, n);
                let va = VirtAddr::new(self.va(page));
                let map = &mut self.spaces[s].as_mut().unwrap().map;
                let r = if wire {
                    map.wire(va, n * ps)
                } else {
                    map.unwire(va, n * ps)
                };
                let space = self.model[s].as_mut().unwrap();
                let ok = (page..page + n).all(|p| {
                    space.get(&p).is_some_and(|m| {
                        if wire {
                            m.cur != VmProt::NONE
                        } else {
                            m.wired > 0
                        }
                    })
                });
                assert_eq!(r.is_ok(), ok, "{r:?}");
                if ok {
                    for p in page..page + n {
                        let m = space.get_mut(&p).unwrap();
                        if wire {
                            m.wired += 1;
                        } else {
                            m.wired -= 1;
                        }
                    }
                }
            }
            Op::Fork { .. } => {
                let Some(slot) = self.spaces.iter().position(Option::is_none) else {
                    return;
                };
                let (pmap, asid) = self.new_space();
                let child = self.spaces[s]
                    .as_mut()
                    .unwrap()
                    .map
                    .fork(pmap)
                    .expect("fork");
                self.spaces[slot] = Some(Space { map: child, asid });
                let mut cspace = BTreeMap::new();
                let parent: Vec<(u64, MPage)> = self.model[s]
                    .as_ref()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (*k, v.clone()))
                    .collect();
                for (p, m) in parent {
                    let cell = match m.inh {
                        Inheritance::None => continue,
                        Inheritance::Share => m.cell,
                        _ => {
                            let copy = self.cells[m.cell].clone();
                            self.cells.push(copy);
                            self.cells.len() - 1
                        }
                    };
                    cspace.insert(
                        p,
                        MPage {
                            cell,
                            wired: 0,
                            ..m
                        },
                    );
                }
                self.model[slot] = Some(cspace);
            }
            Op::Exit { .. } => {
                if self.spaces.iter().filter(|m| m.is_some()).count() > 1 {
                    self.spaces[s] = None;
                    self.model[s] = None;
                }
            }
            Op::Collapse { .. } => {
                for e in self.spaces[s].as_ref().unwrap().map.entries() {
                    if e.object().shadow().is_some() {
                        let _ = VmObject::collapse(e.object());
                    }
                }
            }
            Op::Access {
                cpu,
                page,
                off,
                kind,
                value,
                ..
            } => {
                let access = [Access::Read, Access::Write, Access::Execute][usize::from(kind)];
                let off = off * (ps / 64) + (u64::from(value) % (ps / 64));
                let r = self.access(s, cpu, self.va(page) + off, access);
                let mpage = self.model[s].as_ref().unwrap().get(&page).cloned();
                match mpage {
                    None => assert!(matches!(r, Err(FaultError::NotMapped { .. })), "{r:?}"),
                    Some(m) if !m.cur.contains(access.prot()) => {
                        assert!(
                            matches!(r, Err(FaultError::Protection { .. })),
                            "{access}: {r:?}"
                        );
                    }
                    Some(m) => {
                        let pa = r.expect("access");
                        let phys = self.m.mem.memory();
                        let byte = &mut self.cells[m.cell][off as usize];
                        if access == Access::Write {
                            phys.write_bytes(machvm_addr::PhysAddr::new(pa), &[value])
                                .expect("store");
                            *byte = value;
                        } else {
                            let mut got = [0u8];
                            phys.read_bytes(machvm_addr::PhysAddr::new(pa), &mut got)
                                .expect("load");
                            assert_eq!(got[0], *byte, "{access} {s}:{page}+{off:#x}");
                        }
                    }
                }
            }
        }
    }

    /// Every translation stays within its entry; wiring agrees.
    fn check(&self) {
        for (space, model) in self.spaces.iter().zip(&self.model) {
            let (Some(space), Some(model)) = (space, model) else {
                continue;
            };
            for p in 0..PAGES {
                let va = VirtAddr::new(self.va(p));
                let e = space.map.lookup(va);
                assert_eq!(e.is_some(), model.contains_key(&p), "page {p}");
                let Some(t) = space.map.pmap().lookup(va) else {
                    continue;
                };
                let e = e.expect("translation without entry");
                assert!(
                    t.attrs.prot().is_subset_of(e.protection()),
                    "page {p}: {t:?} vs {e:?}"
                );
                assert_eq!(
                    t.attrs.sw_flags().contains(SwFlags::WIRED),
                    e.wired_count() > 0,
                    "page {p} wiring"
                );
                assert_eq!(e.wired_count(), model[&p].wired, "page {p}");
            }
            let stats = space.map.pmap().stats();
            let mapped = (0..PAGES)
                .filter(|&p| space.map.pmap().lookup(VirtAddr::new(self.va(p))).is_some())
                .count() as u64;
            assert_eq!(stats.resident, mapped, "resident counter");
        }
    }
}

fn run_case<F: Format>(m: &'static Machine, ops: &[Op]) {
    let _one_at_a_time = m
        .lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    m.tlb.broadcast_invalidate_all();
    m.tlb.reset_stats();
    let before = m.phys.frames_in_use();
    let mut world = World::<F>::new(m);
    // Start from a populated space: two read-write entries over every page.
    let half = PAGES / 2;
    for page in [0, half] {
        world.run(&Op::Enter {
            s: 0,
            page,
            n: half,
            prot: 2,
            fixed: true,
        });
    }
    for op in ops {
        world.run(op);
        world.check();
    }
    drop(world);
    if std::env::var_os("MACHVM_TEST_VERBOSE").is_some() {
        eprintln!("{} ops: {:?}", ops.len(), m.tlb.stats());
    }
    assert_eq!(
        m.phys.frames_in_use(),
        before,
        "frames leaked (data or page-table frames)"
    );
}

static X86: OnceLock<Machine> = OnceLock::new();
static A64_16K: OnceLock<Machine> = OnceLock::new();

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 128 },
        ..ProptestConfig::default()
    })]

    #[test]
    fn x86_64_maps_match_the_model(ops in prop::collection::vec(op(), 1..100)) {
        run_case::<X86Pml4>(machine(&X86, PageSize::Size4KiB), &ops);
    }

    #[test]
    fn aarch64_16k_maps_match_the_model(ops in prop::collection::vec(op(), 1..100)) {
        run_case::<A64Granule16K48>(machine(&A64_16K, PageSize::Size16KiB), &ops);
    }
}

/// A fork write-protects the parent's pages: its writable translations must be flushed from
/// every CPU's TLB, or the parent's next store would reach the frame the child shares.
#[test]
fn fork_flushes_the_parents_writable_translations() {
    static M: OnceLock<Machine> = OnceLock::new();
    let m = machine(&M, PageSize::Size4KiB);
    let mut w = World::<X86Pml4>::new(m);
    let ps = w.ps;
    w.run(&Op::Enter {
        s: 0,
        page: 0,
        n: 2,
        prot: 2,
        fixed: true,
    });
    for cpu in 0..CPUS {
        // Both CPUs cache a writable translation of page 0.
        w.run(&Op::Access {
            s: 0,
            cpu,
            page: 0,
            off: 0,
            kind: 1,
            value: 7,
        });
    }
    w.run(&Op::Fork { s: 0 });
    // The parent's store after the fork faults (copy on write) instead of using the cached
    // writable entry; the child still sees the old byte.
    w.run(&Op::Access {
        s: 0,
        cpu: 1,
        page: 0,
        off: 0,
        kind: 1,
        value: 9,
    });
    w.run(&Op::Access {
        s: 1,
        cpu: 0,
        page: 0,
        off: 0,
        kind: 0,
        value: 7,
    });
    w.check();
    let parent = w.spaces[0].as_ref().unwrap().map.pmap().stats();
    assert!(
        parent.replaced >= 1,
        "the parent's page was copied: {parent:?}"
    );
    assert!(m.tlb.stats().stale_reports == 0);
    let _ = ps;
}
