//! Workloads for the machine simulator (`machvm::sim`), checked against a flat model: what
//! each byte of each address space reads as and which accesses must fault. Shared by the
//! integration tests (proptest) and the `vm_system_workload` fuzz target.

use std::collections::BTreeMap;
use std::vec::Vec;

use machvm::sim::{SIM_USER_START, SimFault, SimMachine};
use machvm::{PageoutTargets, SpaceId, VmError};
use machvm_addr::{VirtAddr, VmProt};
use machvm_page_table::X86Pml4;
use machvm_vm_map::{FaultError, Location, MapRequest};

/// Pages of the first address space (all mapped read-write at the start).
pub const PAGES: u64 = 24;
/// Most address spaces alive at once.
pub const MAX_SPACES: usize = 3;
/// Simulated CPUs.
pub const CPUS: usize = 2;
const PS: u64 = 4096;

/// One step of a workload. Space numbers pick among the live spaces (modulo their count).
#[derive(Clone, Debug)]
pub enum Op {
    /// A store of `value` to byte `off` of `page`.
    Store {
        /// Space.
        s: usize,
        /// CPU.
        cpu: usize,
        /// Page.
        page: u64,
        /// Byte offset in the page (taken modulo the page size).
        off: u64,
        /// The byte.
        value: u8,
    },
    /// A load of byte `off` of `page`.
    Load {
        /// Space.
        s: usize,
        /// CPU.
        cpu: usize,
        /// Page.
        page: u64,
        /// Byte offset in the page (taken modulo the page size).
        off: u64,
    },
    /// A fork of the space (when fewer than [`MAX_SPACES`] live).
    Fork {
        /// Space.
        s: usize,
    },
    /// The space exits (unless it is the last).
    Exit {
        /// Space.
        s: usize,
    },
    /// `munmap` of `n` pages.
    Unmap {
        /// Space.
        s: usize,
        /// First page.
        page: u64,
        /// Pages.
        n: u64,
    },
    /// `mprotect` of `n` pages to read-only or read-write.
    Protect {
        /// Space.
        s: usize,
        /// First page.
        page: u64,
        /// Pages.
        n: u64,
        /// Read-write (else read-only).
        write: bool,
    },
    /// A pageout step looking at `budget` frames.
    Pageout {
        /// Frames to look at.
        budget: u64,
    },
}

impl Op {
    /// Decodes one operation from fuzz input bytes (`None` when the input is used up).
    pub fn decode(bytes: &mut &[u8]) -> Option<Self> {
        let (&tag, rest) = bytes.split_first()?;
        let take = |n: usize| -> Option<Vec<u8>> {
            if rest.len() < n {
                return None;
            }
            Some(rest[..n].to_vec())
        };
        let (op, used) = match tag % 7 {
            0 => {
                let b = take(5)?;
                (
                    Self::Store {
                        s: usize::from(b[0]),
                        cpu: usize::from(b[1]) % CPUS,
                        page: u64::from(b[2]) % PAGES,
                        off: u64::from(b[3]) * 16,
                        value: b[4],
                    },
                    5,
                )
            }
            1 => {
                let b = take(4)?;
                (
                    Self::Load {
                        s: usize::from(b[0]),
                        cpu: usize::from(b[1]) % CPUS,
                        page: u64::from(b[2]) % PAGES,
                        off: u64::from(b[3]) * 16,
                    },
                    4,
                )
            }
            2 => (
                Self::Fork {
                    s: usize::from(take(1)?[0]),
                },
                1,
            ),
            3 => (
                Self::Exit {
                    s: usize::from(take(1)?[0]),
                },
                1,
            ),
            4 => {
                let b = take(3)?;
                (
                    Self::Unmap {
                        s: usize::from(b[0]),
                        page: u64::from(b[1]) % PAGES,
                        n: 1 + u64::from(b[2]) % 4,
                    },
                    3,
                )
            }
            5 => {
                let b = take(4)?;
                (
                    Self::Protect {
                        s: usize::from(b[0]),
                        page: u64::from(b[1]) % PAGES,
                        n: 1 + u64::from(b[2]) % 4,
                        write: b[3] & 1 == 1,
                    },
                    4,
                )
            }
            _ => (
                Self::Pageout {
                    budget: 1 + u64::from(take(1)?[0]) % 64,
                },
                1,
            ),
        };
        *bytes = &rest[used..];
        Some(op)
    }
}

/// What a workload did, for callers that want to check it exercised something.
#[derive(Clone, Copy, Debug, Default)]
pub struct WorkloadReport {
    /// Pages paged out.
    pub pageouts: u64,
    /// Pages paged in.
    pub pageins: u64,
    /// Loads and stores that completed.
    pub accesses: u64,
}

/// The model of one space: each page's bytes (sparse) and whether it is writable; a missing
/// page is unmapped.
type MSpace = BTreeMap<u64, (BTreeMap<u64, u8>, bool)>;

fn expect_fault(r: &Result<impl core::fmt::Debug, SimFault>, not_mapped: bool) {
    let ok = match r {
        Err(SimFault::Vm(VmError::Fault(FaultError::NotMapped { .. }))) => not_mapped,
        Err(SimFault::Vm(VmError::Fault(FaultError::Protection { .. }))) => !not_mapped,
        _ => false,
    };
    assert!(
        ok,
        "expected a {} fault, got {r:?}",
        if not_mapped {
            "not-mapped"
        } else {
            "protection"
        }
    );
}

/// Runs `ops` on a fresh machine with `frames` data frames and checks every access against
/// the model; panics on the first divergence, a stale translation, a lost frame or a frame
/// still in use once every space is gone.
pub fn run(frames: u32, ops: &[Op]) -> WorkloadReport {
    let m = SimMachine::<X86Pml4>::new(frames, CPUS).expect("machine");
    m.vm()
        .set_anonymous_pager(std::sync::Arc::new(crate::MemPagers::default()));
    let first = m.create_space().expect("space");
    let req =
        MapRequest::anonymous(PAGES * PS).location(Location::Fixed(VirtAddr::new(SIM_USER_START)));
    m.vm().mmap(first, req).expect("mmap");
    let mut spaces: Vec<(SpaceId, MSpace)> = vec![(
        first,
        (0..PAGES).map(|p| (p, (BTreeMap::new(), true))).collect(),
    )];
    let mut report = WorkloadReport::default();
    let va = |page: u64, off: u64| SIM_USER_START + page * PS + off % PS;
    for op in ops {
        match *op {
            Op::Store {
                s,
                cpu,
                page,
                off,
                value,
            } => {
                let i = s % spaces.len();
                let (id, model) = &mut spaces[i];
                let r = m.store(cpu, *id, va(page, off), value);
                match model.get_mut(&page) {
                    None => expect_fault(&r, true),
                    Some((_, false)) => expect_fault(&r, false),
                    Some((bytes, true)) => {
                        r.unwrap_or_else(|e| panic!("store {i}:{page}: {e}"));
                        bytes.insert(off % PS, value);
                        report.accesses += 1;
                    }
                }
            }
            Op::Load { s, cpu, page, off } => {
                let i = s % spaces.len();
                let (id, model) = &spaces[i];
                let r = m.load(cpu, *id, va(page, off));
                match model.get(&page) {
                    None => expect_fault(&r, true),
                    Some((bytes, _)) => {
                        let want = bytes.get(&(off % PS)).copied().unwrap_or(0);
                        let got = r.unwrap_or_else(|e| panic!("load {i}:{page}: {e}"));
                        assert_eq!(got, want, "space {i} page {page} offset {}", off % PS);
                        report.accesses += 1;
                    }
                }
            }
            Op::Fork { s } => {
                if spaces.len() < MAX_SPACES {
                    let i = s % spaces.len();
                    let child = m.fork(spaces[i].0).expect("fork");
                    let model = spaces[i].1.clone();
                    spaces.push((child, model));
                }
            }
            Op::Exit { s } => {
                if spaces.len() > 1 {
                    let (id, _) = spaces.remove(s % spaces.len());
                    m.destroy_space(id).expect("exit");
                }
            }
            Op::Unmap { s, page, n } => {
                let i = s % spaces.len();
                let n = n.min(PAGES - page);
                let (id, model) = &mut spaces[i];
                m.vm()
                    .munmap(*id, VirtAddr::new(va(page, 0)), n * PS)
                    .expect("munmap");
                for p in page..page + n {
                    model.remove(&p);
                }
            }
            Op::Protect { s, page, n, write } => {
                let i = s % spaces.len();
                let n = n.min(PAGES - page);
                let (id, model) = &mut spaces[i];
                let prot = if write { VmProt::DEFAULT } else { VmProt::READ };
                let r = m
                    .vm()
                    .mprotect(*id, VirtAddr::new(va(page, 0)), n * PS, prot);
                if (page..page + n).all(|p| model.contains_key(&p)) {
                    r.expect("mprotect");
                    for p in page..page + n {
                        if let Some(e) = model.get_mut(&p) {
                            e.1 = write;
                        }
                    }
                } else {
                    assert!(r.is_err(), "mprotect over a hole succeeded");
                }
            }
            Op::Pageout { budget } => {
                m.vm().pageout_step(budget);
            }
        }
        let q = m.vm().queues();
        assert_eq!(q.total(), u64::from(frames), "frames are conserved: {q:?}");
    }
    assert_eq!(
        m.tlb().stats().stale_reports,
        0,
        "a stale translation was used"
    );
    let c = m.vm().counters();
    report.pageouts = c.pageouts;
    report.pageins = c.pageins;
    for (id, _) in spaces {
        m.destroy_space(id).expect("exit");
    }
    assert_eq!(m.vm().queues().free, u64::from(frames), "every frame back");
    // Every page table is freed too: only the donated run is still allocated.
    let run_frames = u64::from(frames);
    assert_eq!(m.memory().frames_in_use(), run_frames, "page tables leaked");
    let _ = PageoutTargets::default();
    report
}
