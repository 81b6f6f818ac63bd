//! Address-map operations (enter anonymous or shared objects of each copy strategy, remove,
//! protect, inherit, wire, fork, exit, collapse, read, write) over up to four address spaces,
//! checked against a flat model of what every byte of every space reads as and which
//! accesses fault.

#![no_main]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::collections::BTreeMap;
use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use machvm_addr::{PageSize, PhysAddr, SimPhysMemory, VirtAddr, VmProt};
use machvm_vm_map::{FaultError, Inheritance, Location, MapError, MapRequest, SoftPmap, VmMap};
use machvm_vm_object::{CopyStrategy, ObjectRef, SimPageMemory, VmObject};

const PS: u64 = 4096;
const PAGES: u64 = 8;
const BASE: u64 = 0x40_0000;
const SPACES: usize = 4;
/// Bytes of each page the model tracks (the rest are checked to stay zero at one spot).
const TRACK: usize = 4;

const PROTS: [VmProt; 5] = [
    VmProt::NONE,
    VmProt::READ,
    VmProt::DEFAULT,
    VmProt::WRITE,
    VmProt::ALL,
];
const INHERITS: [Inheritance; 3] = [Inheritance::Share, Inheritance::Copy, Inheritance::None];
const STRATEGIES: [CopyStrategy; 3] = [
    CopyStrategy::Symmetric,
    CopyStrategy::Delay,
    CopyStrategy::None,
];

#[derive(Arbitrary, Debug, Clone)]
enum Op {
    Enter {
        s: u8,
        page: u8,
        n: u8,
        prot: u8,
        fixed: bool,
    },
    EnterShared {
        s: u8,
        page: u8,
        n: u8,
        object: u8,
        offset: u8,
    },
    Remove {
        s: u8,
        page: u8,
        n: u8,
    },
    Protect {
        s: u8,
        page: u8,
        n: u8,
        prot: u8,
    },
    Inherit {
        s: u8,
        page: u8,
        n: u8,
        inh: u8,
    },
    Wire {
        s: u8,
        page: u8,
        n: u8,
    },
    Unwire {
        s: u8,
        page: u8,
        n: u8,
    },
    Fork {
        s: u8,
    },
    Exit {
        s: u8,
    },
    Collapse {
        s: u8,
    },
    Read {
        s: u8,
        page: u8,
        off: u8,
    },
    Write {
        s: u8,
        page: u8,
        off: u8,
        value: u8,
    },
}

#[derive(Clone)]
struct MPage {
    cell: usize,
    cur: VmProt,
    max: VmProt,
    inh: Inheritance,
    wired: u32,
}

type Map = VmMap<SoftPmap>;

struct World {
    mem: Arc<SimPageMemory>,
    maps: Vec<Option<Map>>,
    spaces: Vec<Option<BTreeMap<u64, MPage>>>,
    cells: Vec<[u8; TRACK]>,
    /// Shared objects (one per strategy) and the model cell of each of their pages.
    objects: Vec<(ObjectRef, Vec<usize>)>,
}

fn va(page: u64) -> u64 {
    BASE + page * PS
}

fn access(
    map: &mut Map,
    mem: &SimPageMemory,
    a: u64,
    want: VmProt,
    op: &mut dyn FnMut(PhysAddr),
) -> Result<(), FaultError> {
    for _ in 0..4 {
        if let Some(t) = map.pmap().translate(VirtAddr::new(a))
            && t.prot.contains(want)
        {
            op(PhysAddr::new(t.frame.as_u64() + a % PS));
            let _ = mem;
            return Ok(());
        }
        map.fault(VirtAddr::new(a), want)?;
    }
    panic!("no progress at {a:#x}");
}

impl World {
    fn new() -> Self {
        let phys = SimPhysMemory::builder()
            .size_bytes(4 << 20)
            .build()
            .unwrap();
        let mem = Arc::new(SimPageMemory::new(phys, PageSize::Size4KiB).unwrap());
        let first = VmMap::new(
            PageSize::Size4KiB,
            VirtAddr::new(BASE),
            VirtAddr::new(va(PAGES)),
            mem.clone(),
            SoftPmap::new(PS),
        )
        .unwrap();
        let mut cells = Vec::new();
        let mut objects = Vec::new();
        for strategy in STRATEGIES {
            let o = VmObject::builder(PAGES * PS, mem.clone())
                .strategy(strategy)
                .build()
                .unwrap();
            let ids = (0..PAGES)
                .map(|_| {
                    cells.push([0; TRACK]);
                    cells.len() - 1
                })
                .collect();
            objects.push((o, ids));
        }
        Self {
            mem,
            maps: vec![Some(first), None, None, None],
            spaces: vec![Some(BTreeMap::new()), None, None, None],
            cells,
            objects,
        }
    }

    fn new_cell(&mut self) -> usize {
        self.cells.push([0; TRACK]);
        self.cells.len() - 1
    }

    fn run(&mut self, op: &Op) {
        let s = match op {
            Op::Enter { s, .. }
            | Op::EnterShared { s, .. }
            | Op::Remove { s, .. }
            | Op::Protect { s, .. }
            | Op::Inherit { s, .. }
            | Op::Wire { s, .. }
            | Op::Unwire { s, .. }
            | Op::Fork { s }
            | Op::Exit { s }
            | Op::Collapse { s }
            | Op::Read { s, .. }
            | Op::Write { s, .. } => usize::from(*s) % SPACES,
        };
        if self.maps[s].is_none() {
            return;
        }
        let range = |page: u8, n: u8| {
            let page = u64::from(page) % PAGES;
            let n = (u64::from(n) % 4 + 1).min(PAGES - page);
            (page, n)
        };
        match *op {
            Op::Enter {
                page,
                n,
                prot,
                fixed,
                ..
            } => {
                let (page, n) = range(page, n);
                let prot = PROTS[usize::from(prot) % PROTS.len()];
                let occupied =
                    (page..page + n).any(|p| self.spaces[s].as_ref().unwrap().contains_key(&p));
                let loc = if fixed {
                    Location::Fixed(VirtAddr::new(va(page)))
                } else {
                    Location::Overwrite(VirtAddr::new(va(page)))
                };
                let r = self.maps[s].as_mut().unwrap().enter(
                    MapRequest::anonymous(n * PS)
                        .location(loc)
                        .protection(prot, VmProt::ALL),
                );
                if fixed && occupied {
                    assert!(matches!(r, Err(MapError::Occupied { .. })), "{r:?}");
                    return;
                }
                r.unwrap();
                for p in page..page + n {
                    let cell = self.new_cell();
                    self.spaces[s].as_mut().unwrap().insert(
                        p,
                        MPage {
                            cell,
                            cur: prot,
                            max: VmProt::ALL,
                            inh: Inheritance::Copy,
                            wired: 0,
                        },
                    );
                }
            }
            Op::EnterShared {
                page,
                n,
                object,
                offset,
                ..
            } => {
                let (page, n) = range(page, n);
                let k = usize::from(object) % self.objects.len();
                let offset = u64::from(offset) % (PAGES - n + 1);
                let (o, ids) = self.objects[k].clone();
                self.maps[s]
                    .as_mut()
                    .unwrap()
                    .enter(
                        MapRequest::shared(o, offset * PS, n * PS)
                            .overwrite(VirtAddr::new(va(page))),
                    )
                    .unwrap();
                for i in 0..n {
                    self.spaces[s].as_mut().unwrap().insert(
                        page + i,
                        MPage {
                            cell: ids[(offset + i) as usize],
                            cur: VmProt::DEFAULT,
                            max: VmProt::ALL,
                            inh: Inheritance::Copy,
                            wired: 0,
                        },
                    );
                }
            }
            Op::Remove { page, n, .. } => {
                let (page, n) = range(page, n);
                self.maps[s]
                    .as_mut()
                    .unwrap()
                    .remove(VirtAddr::new(va(page)), n * PS)
                    .unwrap();
                for p in page..page + n {
                    self.spaces[s].as_mut().unwrap().remove(&p);
                }
            }
            Op::Protect { page, n, prot, .. } => {
                let (page, n) = range(page, n);
                let prot = PROTS[usize::from(prot) % PROTS.len()];
                let r =
                    self.maps[s]
                        .as_mut()
                        .unwrap()
                        .protect(VirtAddr::new(va(page)), n * PS, prot);
                let space = self.spaces[s].as_mut().unwrap();
                match (page..page + n).find(|p| !space.contains_key(p)) {
                    Some(h) => assert_eq!(r, Err(MapError::NotMapped { addr: va(h) })),
                    None => {
                        r.unwrap();
                        for p in page..page + n {
                            space.get_mut(&p).unwrap().cur = prot;
                        }
                    }
                }
            }
            Op::Inherit { page, n, inh, .. } => {
                let (page, n) = range(page, n);
                let inh = INHERITS[usize::from(inh) % INHERITS.len()];
                self.maps[s]
                    .as_mut()
                    .unwrap()
                    .inherit(VirtAddr::new(va(page)), n * PS, inh)
                    .unwrap();
                for p in page..page + n {
                    if let Some(m) = self.spaces[s].as_mut().unwrap().get_mut(&p) {
                        m.inh = inh;
                    }
                }
            }
            Op::Wire { page, n, .. } | Op::Unwire { page, n, .. } => {
                let wire = matches!(op, Op::Wire { .. });
                let (page, n) = range(page, n);
                let map = self.maps[s].as_mut().unwrap();
                let r = if wire {
                    map.wire(VirtAddr::new(va(page)), n * PS)
                } else {
                    map.unwire(VirtAddr::new(va(page)), n * PS)
                };
                let space = self.spaces[s].as_mut().unwrap();
                let first = (page..page + n).find_map(|p| match space.get(&p) {
                    None => Some(Err(p)),
                    Some(m) if (wire && m.cur == VmProt::NONE) || (!wire && m.wired == 0) => {
                        Some(Ok(()))
                    }
                    Some(_) => None,
                });
                match first {
                    Some(Err(h)) => assert_eq!(r, Err(MapError::NotMapped { addr: va(h) })),
                    Some(Ok(())) => assert!(
                        matches!(
                            r,
                            Err(MapError::NoAccess { .. } | MapError::NotWired { .. })
                        ),
                        "{r:?}"
                    ),
                    None => {
                        r.unwrap();
                        for p in page..page + n {
                            let m = space.get_mut(&p).unwrap();
                            if wire { m.wired += 1 } else { m.wired -= 1 }
                        }
                    }
                }
            }
            Op::Fork { .. } => {
                let Some(slot) = self.maps.iter().position(Option::is_none) else {
                    return;
                };
                let child = self.maps[s]
                    .as_mut()
                    .unwrap()
                    .fork(SoftPmap::new(PS))
                    .unwrap();
                self.maps[slot] = Some(child);
                let parent: Vec<(u64, MPage)> = self.spaces[s]
                    .as_ref()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (*k, v.clone()))
                    .collect();
                let mut cspace = BTreeMap::new();
                for (p, m) in parent {
                    let cell = match m.inh {
                        Inheritance::None => continue,
                        Inheritance::Share => m.cell,
                        _ => {
                            let copy = self.cells[m.cell];
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
                self.spaces[slot] = Some(cspace);
            }
            Op::Exit { .. } => {
                if self.maps.iter().filter(|m| m.is_some()).count() > 1 {
                    self.maps[s] = None;
                    self.spaces[s] = None;
                }
            }
            Op::Collapse { .. } => {
                for e in self.maps[s].as_ref().unwrap().entries() {
                    if e.object().shadow().is_some() {
                        let _ = VmObject::collapse(e.object());
                    }
                }
            }
            Op::Read { page, off, .. } => {
                let page = u64::from(page) % PAGES;
                let off = usize::from(off) % TRACK;
                let mem = self.mem.clone();
                let mut byte = [0u8];
                let r = access(
                    self.maps[s].as_mut().unwrap(),
                    &mem,
                    va(page) + off as u64,
                    VmProt::READ,
                    &mut |pa| {
                        mem.memory().read_bytes(pa, &mut byte).unwrap();
                    },
                );
                match self.spaces[s].as_ref().unwrap().get(&page) {
                    None => assert!(matches!(r, Err(FaultError::NotMapped { .. })), "{r:?}"),
                    Some(m) if !m.cur.contains(VmProt::READ) => {
                        assert!(matches!(r, Err(FaultError::Protection { .. })), "{r:?}")
                    }
                    Some(m) => {
                        r.unwrap();
                        assert_eq!(
                            byte[0], self.cells[m.cell][off],
                            "space {s} page {page} byte {off}"
                        );
                    }
                }
            }
            Op::Write {
                page, off, value, ..
            } => {
                let page = u64::from(page) % PAGES;
                let off = usize::from(off) % TRACK;
                let mem = self.mem.clone();
                let r = access(
                    self.maps[s].as_mut().unwrap(),
                    &mem,
                    va(page) + off as u64,
                    VmProt::WRITE,
                    &mut |pa| {
                        mem.memory().write_bytes(pa, &[value]).unwrap();
                    },
                );
                match self.spaces[s].as_ref().unwrap().get(&page) {
                    None => assert!(matches!(r, Err(FaultError::NotMapped { .. })), "{r:?}"),
                    Some(m) if !m.cur.contains(VmProt::WRITE) => {
                        assert!(matches!(r, Err(FaultError::Protection { .. })), "{r:?}")
                    }
                    Some(m) => {
                        r.unwrap();
                        self.cells[m.cell][off] = value;
                    }
                }
            }
        }
    }

    fn check(&self) {
        for (map, space) in self.maps.iter().zip(&self.spaces) {
            let (Some(map), Some(space)) = (map, space) else {
                continue;
            };
            for p in 0..PAGES {
                match (map.lookup(VirtAddr::new(va(p))), space.get(&p)) {
                    (None, None) => {}
                    (Some(e), Some(m)) => {
                        assert_eq!(
                            (
                                e.protection(),
                                e.max_protection(),
                                e.inheritance(),
                                e.wired_count()
                            ),
                            (m.cur, m.max, m.inh, m.wired)
                        );
                    }
                    _ => panic!("page {p} mapped in one of map and model only"),
                }
            }
            for (a, t) in map.pmap().iter() {
                let e = map.lookup(a).expect("translation outside every entry");
                assert!(t.prot.is_subset_of(e.protection()));
            }
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut world = World::new();
    for op in ops.iter().take(256) {
        world.run(op);
        world.check();
    }
    let mem = world.mem.clone();
    drop(world);
    assert_eq!(mem.memory().frames_in_use(), 0, "frames leaked");
});
