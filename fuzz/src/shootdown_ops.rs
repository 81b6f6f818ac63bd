//! Shootdown sequences, single-threaded: CPUs switch between two address spaces
//! (`machvm_tlb::SpaceCpus`), use translations through the software TLB, page tables change
//! and are shot down (`machvm_tlb::Shootdown::shootdown_space`), and CPUs serve their
//! mailboxes whenever the input says so.
//!
//! Checked against a reference model after every step:
//! - the IPIs of a shootdown go exactly to the other CPUs running the space;
//! - `handle` serves exactly the requests posted since the CPU last served;
//! - `SpaceCpus::is_behind` and the catch-up decision at each switch-in match the model's
//!   clean generations;
//! - no CPU ever uses a stale translation outside an update window, where a window stays open
//!   from the page-table change until every CPU the shootdown targeted has served it.

use std::cell::RefCell;

use arbitrary::Arbitrary;
use machvm_addr::{PageSize, PhysAddr, VirtAddr};
use machvm_sync::CpuIndex;
use machvm_tlb::shootdown::{CpuMask, IpiSender, Shootdown, ShootdownError};
use machvm_tlb::soft::{Access, SoftTlb, SoftTlbError, Source, UpdateWindow, Walked};
use machvm_tlb::{Asid, FlushRecord, SpaceCpus};

const CPUS: usize = 4;
const SPACES: usize = 2;
const PAGES: u64 = 6;
const BASE: u64 = 0x40_0000;

/// One step.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    /// CPU `cpu % 4` switches to space `space % 2` (away from its current one first).
    SwitchIn {
        /// The CPU.
        cpu: u8,
        /// The space.
        space: u8,
    },
    /// CPU `cpu % 4` switches away from its space, if any.
    SwitchOut {
        /// The CPU.
        cpu: u8,
    },
    /// CPU `cpu % 4` reads page `page % 6` of the space it runs.
    Access {
        /// The CPU.
        cpu: u8,
        /// The page.
        page: u8,
    },
    /// CPU `initiator % 4` maps page `page % 6` of space `space % 2` to frame
    /// `frame % 8` (frame 0: unmaps it) and shoots the space down.
    Change {
        /// The CPU making the change.
        initiator: u8,
        /// The space.
        space: u8,
        /// The page.
        page: u8,
        /// The new frame (0: none).
        frame: u8,
    },
    /// CPU `cpu % 4` serves its mailbox.
    Serve {
        /// The CPU.
        cpu: u8,
    },
}

/// Records the IPIs of one shootdown.
#[derive(Default)]
struct Ipis(RefCell<CpuMask>);

impl IpiSender for Ipis {
    fn send(&self, target: CpuIndex) {
        let mut sent = self.0.borrow_mut();
        assert!(
            !sent.contains(target),
            "two IPIs to {target:?} in one shootdown"
        );
        *sent = sent.with(target);
    }
}

/// The reference model.
struct Model<'t> {
    /// Per space, per page: the mapped frame (0: none).
    tables: [[u64; PAGES as usize]; SPACES],
    /// Per CPU: the space it runs.
    running: [Option<usize>; CPUS],
    /// Per space: the flush generation.
    generation: [u64; SPACES],
    /// Per space, per CPU: the generation its TLB is clean up to (0: never ran the space).
    clean: [[u64; CPUS]; SPACES],
    /// Per CPU: requests posted and not yet served.
    pending: [u64; CPUS],
    /// Open update windows, the CPUs that still have to serve them, and their space and page.
    windows: Vec<(UpdateWindow<'t>, CpuMask, usize, u64)>,
}

fn cpu(i: u8) -> usize {
    usize::from(i) % CPUS
}

fn index(i: usize) -> CpuIndex {
    CpuIndex::new(i as u32)
}

fn asid(space: usize) -> Asid {
    Asid::new(space as u16 + 1)
}

fn va(page: u64) -> VirtAddr {
    VirtAddr::new(BASE + page * 0x1000)
}

/// Runs `ops`, panicking on the first disagreement with the model or stale use.
pub fn run(ops: &[Op]) {
    let tlb = SoftTlb::new(CPUS, 4, 2).expect("valid geometry");
    let engine = Shootdown::<CPUS>::new(0);
    let spaces: [SpaceCpus<CPUS>; SPACES] = core::array::from_fn(|_| SpaceCpus::new());
    let mut m = Model {
        tables: [[0; PAGES as usize]; SPACES],
        running: [None; CPUS],
        generation: [1; SPACES],
        clean: [[0; CPUS]; SPACES],
        pending: [0; CPUS],
        windows: Vec::new(),
    };
    for (s, table) in m.tables.iter_mut().enumerate() {
        for (p, frame) in table.iter_mut().enumerate() {
            *frame = 1 + ((s * 3 + p) % 7) as u64;
        }
    }
    for op in ops {
        step(&tlb, &engine, &spaces, &mut m, *op);
        for (s, space) in spaces.iter().enumerate() {
            for c in 0..CPUS {
                let clean = m.clean[s][c];
                assert_eq!(
                    space.is_behind(index(c)),
                    clean != 0 && clean < m.generation[s],
                    "is_behind of CPU {c} in space {s}"
                );
            }
            assert_eq!(space.generation(), m.generation[s]);
            let running = (0..CPUS)
                .filter(|&c| m.running[c] == Some(s))
                .fold(CpuMask::EMPTY, |acc, c| acc.with(index(c)));
            assert_eq!(space.running(), running);
        }
    }
}

fn step<'t>(
    tlb: &'t SoftTlb,
    engine: &Shootdown<CPUS>,
    spaces: &[SpaceCpus<CPUS>; SPACES],
    m: &mut Model<'t>,
    op: Op,
) {
    match op {
        Op::SwitchIn { cpu: c, space } => {
            let (c, s) = (cpu(c), usize::from(space) % SPACES);
            switch_out(spaces, m, c);
            let catch_up = spaces[s].switch_in(index(c)).expect("CPU in range");
            let clean = m.clean[s][c];
            let needed = clean != 0 && clean < m.generation[s];
            assert_eq!(
                catch_up.is_needed(),
                needed,
                "catch-up of CPU {c} in space {s}"
            );
            let local = tlb.cpu(index(c)).expect("CPU in range");
            catch_up.apply(asid(s), &local);
            m.clean[s][c] = m.clean[s][c].max(m.generation[s]);
            m.running[c] = Some(s);
        }
        Op::SwitchOut { cpu: c } => switch_out(spaces, m, cpu(c)),
        Op::Access { cpu: c, page } => {
            let c = cpu(c);
            let Some(s) = m.running[c] else { return };
            let page = u64::from(page) % PAGES;
            let frame = m.tables[s][page as usize];
            let walk = (frame != 0).then(|| {
                Walked::new(PhysAddr::new(frame << 12), PageSize::Size4KiB).with_writable(true)
            });
            match tlb.translate(index(c), asid(s), va(page), Access::Read, |_| walk) {
                Ok(t) if t.source == Source::StaleTolerated => {
                    let open = m.windows.iter().any(|(_, waiting, ws, wp)| {
                        (*ws, *wp) == (s, page) && waiting.contains(index(c))
                    });
                    assert!(open, "old translation served outside a window on CPU {c}");
                }
                Ok(t) => assert_eq!(t.pa.as_u64() >> 12, frame, "served a wrong frame"),
                Err(SoftTlbError::Fault { .. }) => assert_eq!(frame, 0, "fault on a mapped page"),
                Err(e) => panic!("stale or bad use: {e}"),
            }
        }
        Op::Change {
            initiator,
            space,
            page,
            frame,
        } => {
            let (me, s) = (cpu(initiator), usize::from(space) % SPACES);
            let page = u64::from(page) % PAGES;
            let window = tlb.begin_update(asid(s), va(page), 0x1000);
            m.tables[s][page as usize] = u64::from(frame % 8);
            let ipis = Ipis::default();
            let local = tlb.cpu(index(me)).expect("CPU in range");
            let record = FlushRecord::new(va(page), 0x1000, PageSize::Size4KiB);
            let result =
                engine.shootdown_space(index(me), &spaces[s], asid(s), record, &local, &ipis);
            m.generation[s] += 1;
            let g = m.generation[s];
            let targets: Vec<usize> = (0..CPUS).filter(|&c| m.running[c] == Some(s)).collect();
            let others = targets
                .iter()
                .filter(|&&c| c != me)
                .fold(CpuMask::EMPTY, |acc, &c| acc.with(index(c)));
            assert_eq!(
                *ipis.0.borrow(),
                others,
                "IPIs go to the other running CPUs"
            );
            // A spin budget of 0: every other target is late; the initiator acknowledges itself.
            if others.is_empty() {
                assert_eq!(result, Ok(()));
            } else {
                assert_eq!(result, Err(ShootdownError::Timeout { cpus: others }));
            }
            if targets.contains(&me) && m.clean[s][me] == g - 1 {
                m.clean[s][me] = g;
            }
            for c in others.iter() {
                m.pending[c.as_usize()] += 1;
            }
            if others.is_empty() {
                drop(window);
            } else {
                m.windows.push((window, others, s, page));
            }
        }
        Op::Serve { cpu: c } => {
            let c = cpu(c);
            let local = tlb.cpu(index(c)).expect("CPU in range");
            let served = engine.handle(index(c), &local).expect("CPU in range");
            assert_eq!(served, m.pending[c], "served requests of CPU {c}");
            m.pending[c] = 0;
            for (_, waiting, _, _) in &mut m.windows {
                *waiting = waiting.without(index(c));
            }
            m.windows.retain(|(_, waiting, _, _)| !waiting.is_empty());
        }
    }
}

fn switch_out(spaces: &[SpaceCpus<CPUS>; SPACES], m: &mut Model<'_>, c: usize) {
    if let Some(s) = m.running[c].take() {
        spaces[s].switch_out(index(c)).expect("CPU in range");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lazy_cpu_catches_up_and_a_late_one_is_served() {
        run(&[
            Op::SwitchIn { cpu: 1, space: 0 },
            Op::SwitchIn { cpu: 2, space: 0 },
            Op::Access { cpu: 1, page: 0 },
            Op::Access { cpu: 2, page: 0 },
            Op::SwitchIn { cpu: 2, space: 1 },
            Op::Change {
                initiator: 0,
                space: 0,
                page: 0,
                frame: 5,
            },
            Op::Access { cpu: 1, page: 0 },
            Op::Serve { cpu: 1 },
            Op::Access { cpu: 1, page: 0 },
            Op::SwitchIn { cpu: 2, space: 0 },
            Op::Access { cpu: 2, page: 0 },
        ]);
    }

    #[test]
    fn mailbox_overflow_serves_every_request() {
        let mut ops = vec![Op::SwitchIn { cpu: 3, space: 1 }];
        for i in 0..12 {
            ops.push(Op::Access { cpu: 3, page: i });
            ops.push(Op::Change {
                initiator: 0,
                space: 1,
                page: i,
                frame: i,
            });
        }
        ops.push(Op::Serve { cpu: 3 });
        for i in 0..12 {
            ops.push(Op::Access { cpu: 3, page: i });
        }
        run(&ops);
    }

    #[test]
    fn decodes_from_bytes() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(2048).collect();
        let mut u = arbitrary::Unstructured::new(&bytes);
        let ops: Vec<Op> = u.arbitrary().expect("decodes");
        run(&ops);
    }
}
