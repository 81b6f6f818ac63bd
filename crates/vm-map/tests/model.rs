//! Property test: random sequences of enter / remove / protect / set-max / inherit / wire /
//! unwire / fork / exit / collapse / read / write over several address spaces (a parent and
//! its forked children) against a flat reference model.
//!
//! Properties checked:
//! - every byte a simulated CPU reads equals the model's byte (copy on write, sharing and
//!   zero fill are right, no stale translation is used);
//! - an access faults with a protection error exactly when the model's page does not grant
//!   it, and with "not mapped" exactly when the model has no page there;
//! - every operation succeeds or fails exactly as the model predicts, and a failed one
//!   changes nothing;
//! - after every operation, each space's entries describe the model's pages (protection,
//!   maximum, inheritance, wiring) and no translation grants more than its entry;
//! - when every space is gone, every frame is free.

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{BASE, Map, PS, map, memory, pmap, read, write};
use machvm_addr::{VirtAddr, VmProt};
use machvm_vm_map::{FaultError, Inheritance, Location, MapError, MapRequest};
use machvm_vm_object::{SimPageMemory, VmObject};
use proptest::prelude::*;

/// Pages in each address space.
const PAGES: u64 = 16;
/// Most address spaces alive at once.
const MAX_SPACES: usize = 4;

const PROTS: [VmProt; 6] = [
    VmProt::NONE,
    VmProt::READ,
    VmProt::DEFAULT,
    VmProt::WRITE,
    VmProt::READ.union(VmProt::EXECUTE),
    VmProt::ALL,
];
const INHERITS: [Inheritance; 3] = [Inheritance::Share, Inheritance::Copy, Inheritance::None];

#[derive(Clone, Debug)]
enum Op {
    Enter {
        s: usize,
        page: u64,
        n: u64,
        prot: usize,
        fixed: bool,
    },
    EnterAnywhere {
        s: usize,
        n: u64,
        prot: usize,
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
    Read {
        s: usize,
        page: u64,
        off: u64,
    },
    Write {
        s: usize,
        page: u64,
        off: u64,
        value: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let s = 0..MAX_SPACES;
    let page = 0..PAGES;
    let n = 1..6u64;
    let off = prop_oneof![Just(0u64), Just(PS - 1), 0..PS];
    prop_oneof![
        3 => (s.clone(), page.clone(), n.clone(), 0..PROTS.len(), any::<bool>())
            .prop_map(|(s, page, n, prot, fixed)| Op::Enter { s, page, n, prot, fixed }),
        1 => (s.clone(), n.clone(), 0..PROTS.len())
            .prop_map(|(s, n, prot)| Op::EnterAnywhere { s, n, prot }),
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
        6 => (s.clone(), page.clone(), off.clone()).prop_map(|(s, page, off)| Op::Read { s, page, off }),
        6 => (s, page, off, any::<u8>())
            .prop_map(|(s, page, off, value)| Op::Write { s, page, off, value }),
    ]
}

/// One page of the model.
#[derive(Clone, Debug)]
struct MPage {
    cell: usize,
    cur: VmProt,
    max: VmProt,
    inh: Inheritance,
    wired: u32,
}

/// The reference: every address space's pages, and the contents cells they show (shared
/// pages show the same cell).
struct Model {
    cells: Vec<Vec<u8>>,
    spaces: Vec<Option<BTreeMap<u64, MPage>>>,
}

struct World {
    mem: Arc<SimPageMemory>,
    maps: Vec<Option<Map>>,
    model: Model,
}

fn va(page: u64) -> u64 {
    BASE + page * PS
}

impl World {
    fn new() -> Self {
        let mem = memory(16 << 20);
        let first = map(&mem, PAGES);
        Self {
            mem,
            maps: vec![Some(first), None, None, None],
            model: Model {
                cells: Vec::new(),
                spaces: vec![Some(BTreeMap::new()), None, None, None],
            },
        }
    }

    /// Clamps `[page, page + n)` to the space.
    fn range(page: u64, n: u64) -> (u64, u64) {
        let n = n.min(PAGES - page);
        (page, n)
    }

    fn run(&mut self, op: &Op) {
        let s = match op {
            Op::Enter { s, .. }
            | Op::EnterAnywhere { s, .. }
            | Op::Remove { s, .. }
            | Op::Protect { s, .. }
            | Op::SetMax { s, .. }
            | Op::Inherit { s, .. }
            | Op::Wire { s, .. }
            | Op::Unwire { s, .. }
            | Op::Fork { s }
            | Op::Exit { s }
            | Op::Collapse { s }
            | Op::Read { s, .. }
            | Op::Write { s, .. } => *s,
        };
        if self.maps[s].is_none() {
            return;
        }
        let mem = self.mem.clone();
        let Model { cells, spaces } = &mut self.model;
        match *op {
            Op::Enter {
                page,
                n,
                prot,
                fixed,
                ..
            } => {
                let (page, n) = Self::range(page, n);
                let map = self.maps[s].as_mut().unwrap();
                let space = spaces[s].as_mut().unwrap();
                let occupied = (page..page + n).any(|p| space.contains_key(&p));
                let location = if fixed {
                    Location::Fixed(VirtAddr::new(va(page)))
                } else {
                    Location::Overwrite(VirtAddr::new(va(page)))
                };
                let req = MapRequest::anonymous(n * PS)
                    .location(location)
                    .protection(PROTS[prot], VmProt::ALL);
                let r = map.enter(req);
                if fixed && occupied {
                    assert!(matches!(r, Err(MapError::Occupied { .. })), "{r:?}");
                    return;
                }
                assert_eq!(r.unwrap().as_u64(), va(page));
                for p in page..page + n {
                    cells.push(vec![0; PS as usize]);
                    let cell = cells.len() - 1;
                    space.insert(
                        p,
                        MPage {
                            cell,
                            cur: PROTS[prot],
                            max: VmProt::ALL,
                            inh: Inheritance::Copy,
                            wired: 0,
                        },
                    );
                }
            }
            Op::EnterAnywhere { n, prot, .. } => {
                let map = self.maps[s].as_mut().unwrap();
                let space = spaces[s].as_mut().unwrap();
                let first = (0..=PAGES.saturating_sub(n))
                    .find(|&p| p + n <= PAGES && (p..p + n).all(|q| !space.contains_key(&q)));
                let r =
                    map.enter(MapRequest::anonymous(n * PS).protection(PROTS[prot], VmProt::ALL));
                match first {
                    None => assert!(matches!(r, Err(MapError::NoSpace { .. })), "{r:?}"),
                    Some(page) => {
                        assert_eq!(r.unwrap().as_u64(), va(page));
                        for p in page..page + n {
                            cells.push(vec![0; PS as usize]);
                            let cell = cells.len() - 1;
                            space.insert(
                                p,
                                MPage {
                                    cell,
                                    cur: PROTS[prot],
                                    max: VmProt::ALL,
                                    inh: Inheritance::Copy,
                                    wired: 0,
                                },
                            );
                        }
                    }
                }
            }
            Op::Remove { page, n, .. } => {
                let (page, n) = Self::range(page, n);
                let map = self.maps[s].as_mut().unwrap();
                map.remove(VirtAddr::new(va(page)), n * PS).unwrap();
                let space = spaces[s].as_mut().unwrap();
                for p in page..page + n {
                    space.remove(&p);
                }
            }
            Op::Protect { page, n, prot, .. } | Op::SetMax { page, n, prot, .. } => {
                let is_max = matches!(op, Op::SetMax { .. });
                let (page, n) = Self::range(page, n);
                let map = self.maps[s].as_mut().unwrap();
                let space = spaces[s].as_mut().unwrap();
                let new = PROTS[prot];
                let r = if is_max {
                    map.set_max_protection(VirtAddr::new(va(page)), n * PS, new)
                } else {
                    map.protect(VirtAddr::new(va(page)), n * PS, new)
                };
                // The map reports the first failing page in address order.
                let first = (page..page + n).find_map(|p| match space.get(&p) {
                    None => Some(Err(p)),
                    Some(m) if !new.is_subset_of(m.max) => Some(Ok(())),
                    Some(_) => None,
                });
                if let Some(Err(h)) = first {
                    assert_eq!(r, Err(MapError::NotMapped { addr: va(h) }));
                } else if first.is_some() {
                    assert!(
                        matches!(
                            r,
                            Err(MapError::ProtectionExceedsMax { .. } | MapError::MaxRaised { .. })
                        ),
                        "{r:?}"
                    );
                } else {
                    r.unwrap();
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
                let map = self.maps[s].as_mut().unwrap();
                map.inherit(VirtAddr::new(va(page)), n * PS, INHERITS[inh])
                    .unwrap();
                let space = spaces[s].as_mut().unwrap();
                for p in page..page + n {
                    if let Some(m) = space.get_mut(&p) {
                        m.inh = INHERITS[inh];
                    }
                }
            }
            Op::Wire { page, n, .. } | Op::Unwire { page, n, .. } => {
                let wire = matches!(op, Op::Wire { .. });
                let (page, n) = Self::range(page, n);
                let map = self.maps[s].as_mut().unwrap();
                let space = spaces[s].as_mut().unwrap();
                let r = if wire {
                    map.wire(VirtAddr::new(va(page)), n * PS)
                } else {
                    map.unwire(VirtAddr::new(va(page)), n * PS)
                };
                let first = (page..page + n).find_map(|p| match space.get(&p) {
                    None => Some(Err(p)),
                    Some(m) if (wire && m.cur == VmProt::NONE) || (!wire && m.wired == 0) => {
                        Some(Ok(()))
                    }
                    Some(_) => None,
                });
                if let Some(Err(h)) = first {
                    assert_eq!(r, Err(MapError::NotMapped { addr: va(h) }));
                    return;
                }
                if first.is_some() {
                    assert!(
                        matches!(
                            r,
                            Err(MapError::NoAccess { .. } | MapError::NotWired { .. })
                        ),
                        "{r:?}"
                    );
                    return;
                }
                r.unwrap();
                for p in page..page + n {
                    let m = space.get_mut(&p).unwrap();
                    if wire {
                        m.wired += 1;
                    } else {
                        m.wired -= 1;
                    }
                }
            }
            Op::Fork { .. } => {
                let Some(slot) = self.maps.iter().position(Option::is_none) else {
                    return;
                };
                let child = self.maps[s].as_mut().unwrap().fork(pmap()).unwrap();
                self.maps[slot] = Some(child);
                let mut cspace = BTreeMap::new();
                let parent: Vec<(u64, MPage)> = spaces[s]
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
                            let copy = cells[m.cell].clone();
                            cells.push(copy);
                            cells.len() - 1
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
                spaces[slot] = Some(cspace);
            }
            Op::Exit { .. } => {
                if self.maps.iter().filter(|m| m.is_some()).count() > 1 {
                    self.maps[s] = None;
                    spaces[s] = None;
                }
            }
            Op::Collapse { .. } => {
                let map = self.maps[s].as_ref().unwrap();
                for e in map.entries() {
                    if e.object().shadow().is_some() {
                        let _ = VmObject::collapse(e.object());
                    }
                }
            }
            Op::Read { page, off, .. } => {
                let map = self.maps[s].as_mut().unwrap();
                let r = read(map, &mem, va(page) + off);
                match spaces[s].as_ref().unwrap().get(&page) {
                    None => assert!(matches!(r, Err(FaultError::NotMapped { .. })), "{r:?}"),
                    Some(m) if !m.cur.contains(VmProt::READ) => {
                        assert!(matches!(r, Err(FaultError::Protection { .. })), "{r:?}");
                    }
                    Some(m) => assert_eq!(
                        r.unwrap(),
                        cells[m.cell][off as usize],
                        "read {s}:{page}+{off}"
                    ),
                }
            }
            Op::Write {
                page, off, value, ..
            } => {
                let map = self.maps[s].as_mut().unwrap();
                let r = write(map, &mem, va(page) + off, value);
                match spaces[s].as_ref().unwrap().get(&page) {
                    None => assert!(matches!(r, Err(FaultError::NotMapped { .. })), "{r:?}"),
                    Some(m) if !m.cur.contains(VmProt::WRITE) => {
                        assert!(matches!(r, Err(FaultError::Protection { .. })), "{r:?}");
                    }
                    Some(m) => {
                        r.unwrap();
                        cells[m.cell][off as usize] = value;
                    }
                }
            }
        }
    }

    /// Entries match the model page by page; translations stay within their entries.
    fn check(&self) {
        for (map, space) in self.maps.iter().zip(&self.model.spaces) {
            let (Some(map), Some(space)) = (map, space) else {
                continue;
            };
            for p in 0..PAGES {
                let e = map.lookup(VirtAddr::new(va(p)));
                match (e, space.get(&p)) {
                    (None, None) => {}
                    (Some(e), Some(m)) => {
                        assert_eq!(e.protection(), m.cur, "page {p}");
                        assert_eq!(e.max_protection(), m.max, "page {p}");
                        assert_eq!(e.inheritance(), m.inh, "page {p}");
                        assert_eq!(e.wired_count(), m.wired, "page {p}");
                    }
                    (e, m) => panic!("page {p}: map {e:?} model {m:?}"),
                }
            }
            for (va, t) in map.pmap().iter() {
                let e = map.lookup(va).expect("translation outside every entry");
                assert!(
                    t.prot.is_subset_of(e.protection()),
                    "{va:?}: {t:?} vs {e:?}"
                );
                assert_eq!(t.wired, e.wired_count() > 0, "{va:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        ..ProptestConfig::default()
    })]

    #[test]
    fn maps_match_the_flat_model(ops in prop::collection::vec(op(), 1..120)) {
        let mut world = World::new();
        for op in &ops {
            world.run(op);
            world.check();
        }
        let mem = world.mem.clone();
        drop(world);
        prop_assert_eq!(mem.memory().frames_in_use(), 0, "frames leaked");
    }
}
