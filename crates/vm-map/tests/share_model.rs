//! Property test for sharing and copying: a few address spaces forked from one another with
//! per-page inheritance (share, copy, none), wiring, writes, reads, exits and collapses,
//! against a flat model. Sharing makes anonymous objects "true share" (delayed copies), so
//! this drives symmetric, delayed and eager copies of objects written by sharers in the same
//! map and in other maps.
//!
//! Properties checked: every byte read equals the model's; wire / unwire fail exactly as the
//! model predicts; when every space is gone, every frame is free. Operations name a space
//! among the live ones, so few are wasted.

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{BASE, Map, PS, map, memory, pmap, read, write};
use machvm_addr::VirtAddr;
use machvm_vm_map::{FaultError, Inheritance, MapError, MapRequest};
use machvm_vm_object::{SimPageMemory, VmObject};
use proptest::prelude::*;

/// Pages in each address space.
const PAGES: u64 = 4;
/// Most address spaces alive at once.
const SPACES: usize = 4;

const INHERITS: [Inheritance; 3] = [Inheritance::Share, Inheritance::Copy, Inheritance::None];

#[derive(Clone, Debug)]
enum Op {
    Fork {
        s: usize,
    },
    Inherit {
        s: usize,
        page: u64,
        n: u64,
        inh: usize,
    },
    Write {
        s: usize,
        page: u64,
        value: u8,
    },
    Read {
        s: usize,
        page: u64,
    },
    Exit {
        s: usize,
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
    Collapse {
        s: usize,
    },
}

impl Op {
    fn space(&self) -> usize {
        match *self {
            Op::Fork { s }
            | Op::Inherit { s, .. }
            | Op::Write { s, .. }
            | Op::Read { s, .. }
            | Op::Exit { s }
            | Op::Wire { s, .. }
            | Op::Unwire { s, .. }
            | Op::Collapse { s } => s,
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    let s = 0..SPACES;
    let page = 0..PAGES;
    let n = 1..4u64;
    prop_oneof![
        3 => s.clone().prop_map(|s| Op::Fork { s }),
        3 => (s.clone(), page.clone(), n.clone(), 0..INHERITS.len())
            .prop_map(|(s, page, n, inh)| Op::Inherit { s, page, n, inh }),
        8 => (s.clone(), page.clone(), any::<u8>())
            .prop_map(|(s, page, value)| Op::Write { s, page, value }),
        8 => (s.clone(), page.clone()).prop_map(|(s, page)| Op::Read { s, page }),
        1 => s.clone().prop_map(|s| Op::Exit { s }),
        1 => (s.clone(), page.clone(), n.clone()).prop_map(|(s, page, n)| Op::Wire { s, page, n }),
        1 => (s.clone(), page.clone(), n).prop_map(|(s, page, n)| Op::Unwire { s, page, n }),
        1 => s.prop_map(|s| Op::Collapse { s }),
    ]
}

/// One page of the model: the cell it shows, its inheritance and wire count.
#[derive(Clone, Debug)]
struct MPage {
    cell: usize,
    inh: Inheritance,
    wired: u32,
}

struct World {
    mem: Arc<SimPageMemory>,
    maps: Vec<Option<Map>>,
    spaces: Vec<Option<BTreeMap<u64, MPage>>>,
    cells: Vec<u8>,
}

fn va(page: u64) -> u64 {
    BASE + page * PS
}

impl World {
    /// Space 0 maps `PAGES` pages: one anonymous region, or (`alias`) one anonymous object
    /// of half as many pages mapped shared twice, so page `i` and page `i + PAGES / 2` are
    /// the same.
    fn new(alias: bool) -> Self {
        let mem = memory(16 << 20);
        let mut first = map(&mem, 2 * PAGES);
        let mut space = BTreeMap::new();
        let half = PAGES / 2;
        if alias {
            let object = VmObject::anonymous(half * PS, mem.clone()).unwrap();
            for base in [0, half] {
                first
                    .enter(
                        MapRequest::shared(object.clone(), 0, half * PS)
                            .fixed(VirtAddr::new(va(base))),
                    )
                    .unwrap();
            }
        } else {
            first
                .enter(MapRequest::anonymous(PAGES * PS).fixed(VirtAddr::new(va(0))))
                .unwrap();
        }
        for p in 0..PAGES {
            let cell = if alias { p % half } else { p } as usize;
            space.insert(
                p,
                MPage {
                    cell,
                    inh: Inheritance::Copy,
                    wired: 0,
                },
            );
        }
        let mut maps: Vec<Option<Map>> = (0..SPACES).map(|_| None).collect();
        let mut spaces: Vec<Option<BTreeMap<u64, MPage>>> = (0..SPACES).map(|_| None).collect();
        maps[0] = Some(first);
        spaces[0] = Some(space);
        Self {
            mem,
            maps,
            spaces,
            cells: vec![0; PAGES as usize],
        }
    }

    fn run(&mut self, op: &Op) {
        // `s` picks among the live spaces, so no operation is lost on a dead one.
        let live: Vec<usize> = (0..SPACES).filter(|&i| self.maps[i].is_some()).collect();
        let s = live[op.space() % live.len()];
        let mem = self.mem.clone();
        let range = |page: u64, n: u64| (page, n.min(PAGES - page));
        match *op {
            Op::Fork { .. } => {
                let Some(slot) = self.maps.iter().position(Option::is_none) else {
                    return;
                };
                let child = self.maps[s].as_mut().unwrap().fork(pmap()).unwrap();
                self.maps[slot] = Some(child);
                let parent = self.spaces[s].clone().unwrap();
                let mut cspace = BTreeMap::new();
                for (p, m) in parent {
                    let cell = match m.inh {
                        Inheritance::None => continue,
                        Inheritance::Share => m.cell,
                        _ => {
                            self.cells.push(self.cells[m.cell]);
                            self.cells.len() - 1
                        }
                    };
                    cspace.insert(
                        p,
                        MPage {
                            cell,
                            inh: m.inh,
                            wired: 0,
                        },
                    );
                }
                self.spaces[slot] = Some(cspace);
            }
            Op::Inherit { page, n, inh, .. } => {
                let (page, n) = range(page, n);
                self.maps[s]
                    .as_mut()
                    .unwrap()
                    .inherit(VirtAddr::new(va(page)), n * PS, INHERITS[inh])
                    .unwrap();
                for p in page..page + n {
                    if let Some(m) = self.spaces[s].as_mut().unwrap().get_mut(&p) {
                        m.inh = INHERITS[inh];
                    }
                }
            }
            Op::Write { page, value, .. } => {
                let r = write(self.maps[s].as_mut().unwrap(), &mem, va(page), value);
                match self.spaces[s].as_ref().unwrap().get(&page) {
                    None => assert!(matches!(r, Err(FaultError::NotMapped { .. })), "{r:?}"),
                    Some(m) => {
                        r.unwrap();
                        self.cells[m.cell] = value;
                    }
                }
            }
            Op::Read { page, .. } => self.check_read(s, page),
            Op::Exit { .. } => {
                if self.maps.iter().filter(|m| m.is_some()).count() > 1 {
                    self.maps[s] = None;
                    self.spaces[s] = None;
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
                    Some(m) if !wire && m.wired == 0 => Some(Ok(())),
                    Some(_) => None,
                });
                match first {
                    Some(Err(h)) => assert_eq!(r, Err(MapError::NotMapped { addr: va(h) })),
                    Some(Ok(())) => assert!(matches!(r, Err(MapError::NotWired { .. })), "{r:?}"),
                    None => {
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
                }
            }
            Op::Collapse { .. } => {
                for e in self.maps[s].as_ref().unwrap().entries() {
                    if e.object().shadow().is_some() {
                        let _ = VmObject::collapse(e.object());
                    }
                }
            }
        }
    }

    fn check_read(&mut self, s: usize, page: u64) {
        let r = read(self.maps[s].as_mut().unwrap(), &self.mem, va(page));
        match self.spaces[s].as_ref().unwrap().get(&page) {
            None => assert!(matches!(r, Err(FaultError::NotMapped { .. })), "{r:?}"),
            Some(m) => assert_eq!(r.unwrap(), self.cells[m.cell], "space {s} page {page}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        ..ProptestConfig::default()
    })]

    #[test]
    fn sharing_and_copies_match_the_flat_model(
        alias in any::<bool>(),
        ops in prop::collection::vec(op(), 1..100),
    ) {
        let mut world = World::new(alias);
        for op in &ops {
            world.run(op);
        }
        // Every page of every space, at the end.
        for s in 0..SPACES {
            if world.maps[s].is_some() {
                for page in 0..PAGES {
                    world.check_read(s, page);
                }
            }
        }
        let mem = world.mem.clone();
        drop(world);
        prop_assert_eq!(mem.memory().frames_in_use(), 0, "frames leaked");
    }
}
