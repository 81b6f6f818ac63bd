use super::ThreadCpuId;
use crate::atomic::{AtomicU64, Ordering};
use crate::{CpuId, CpuIndex, PerCpu, PerCpuCell, SyncError};
use std::thread;

#[test]
fn bound_thread_reports_its_index_until_unbound() {
    let cpus = ThreadCpuId::new();
    assert_eq!(cpus.try_current(), None);
    let b = cpus.bind(CpuIndex::new(3)).unwrap();
    assert_eq!(cpus.current_cpu(), CpuIndex::new(3));
    assert_eq!(b.cpu(), CpuIndex::new(3));
    drop(b);
    assert_eq!(cpus.try_current(), None);
}

#[test]
fn refuses_double_binding_of_an_index() {
    let cpus = ThreadCpuId::new();
    let _b = cpus.bind(CpuIndex::new(0)).unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            assert_eq!(
                cpus.bind(CpuIndex::new(0)).unwrap_err(),
                SyncError::CpuAlreadyBound {
                    cpu: CpuIndex::new(0)
                }
            );
            // A free index still works, and the failed attempt changed nothing.
            let other = cpus.bind(CpuIndex::new(1)).unwrap();
            assert_eq!(cpus.current_cpu(), CpuIndex::new(1));
            drop(other);
        });
    });
}

#[test]
fn refuses_binding_a_thread_twice() {
    let cpus = ThreadCpuId::new();
    let _b = cpus.bind(CpuIndex::new(0)).unwrap();
    assert_eq!(
        cpus.bind(CpuIndex::new(1)).unwrap_err(),
        SyncError::ThreadAlreadyBound {
            cpu: CpuIndex::new(0)
        }
    );
    assert_eq!(cpus.current_cpu(), CpuIndex::new(0));
}

#[test]
fn index_is_free_again_after_the_binding_drops() {
    let cpus = ThreadCpuId::new();
    thread::scope(|s| {
        s.spawn(|| drop(cpus.bind(CpuIndex::new(0)).unwrap()));
    });
    let _b = cpus.bind(CpuIndex::new(0)).unwrap();
}

#[test]
fn separate_machines_do_not_share_bindings() {
    let a = ThreadCpuId::new();
    let b = ThreadCpuId::new();
    let _in_a = a.bind(CpuIndex::new(0)).unwrap();
    assert_eq!(b.try_current(), None);
    let _in_b = b.bind(CpuIndex::new(0)).unwrap();
    assert_eq!(a.current_cpu(), CpuIndex::new(0));
    assert_eq!(b.current_cpu(), CpuIndex::new(0));
}

#[test]
#[should_panic(expected = "not bound")]
fn current_cpu_of_an_unbound_thread_panics() {
    let _ = ThreadCpuId::new().current_cpu();
}

#[test]
fn threads_bump_their_own_cells_and_totals_are_exact() {
    const CPUS: usize = if cfg!(miri) { 2 } else { 4 };
    const ITERS: u64 = if cfg!(miri) { 20 } else { 10_000 };
    let cpus = ThreadCpuId::new();
    let cells = PerCpuCell::<u64, CPUS>::from_fn(|_| 0);
    thread::scope(|s| {
        for i in 0..CPUS {
            let (cpus, cells) = (&cpus, &cells);
            s.spawn(move || {
                let _bound = cpus.bind(CpuIndex::new(u32::try_from(i).unwrap())).unwrap();
                for _ in 0..ITERS {
                    // SAFETY: this thread alone is bound to index `i` of `cpus` and the
                    // binding outlives the call; nothing else touches `cells` until the
                    // scope joins, and the closure does not re-enter.
                    let r = unsafe { cells.with_current_mut(cpus, |c| *c += 1) };
                    assert_eq!(r, Some(()));
                }
            });
        }
    });
    let per_cpu = cells.into_inner();
    assert!(per_cpu.iter().all(|&c| c == ITERS));
    assert_eq!(per_cpu.iter().sum::<u64>(), ITERS * CPUS as u64);
}

#[test]
fn shared_per_cpu_counters_sum_exactly_across_threads() {
    const CPUS: usize = if cfg!(miri) { 2 } else { 4 };
    const ITERS: u64 = if cfg!(miri) { 20 } else { 10_000 };
    let cpus = ThreadCpuId::new();
    let counters = PerCpu::<AtomicU64, CPUS>::from_fn(|_| AtomicU64::new(0));
    thread::scope(|s| {
        for i in 0..CPUS {
            let (cpus, counters) = (&cpus, &counters);
            s.spawn(move || {
                let _bound = cpus.bind(CpuIndex::new(u32::try_from(i).unwrap())).unwrap();
                for _ in 0..ITERS {
                    // Relaxed: a counter; the scope join orders it before the sum.
                    counters
                        .current(cpus)
                        .unwrap()
                        .fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let total: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    assert_eq!(total, ITERS * CPUS as u64);
}

#[test]
fn out_of_range_bound_index_gives_none() {
    let cpus = ThreadCpuId::new();
    let cells = PerCpuCell::<u8, 2>::from_fn(|_| 0);
    let _b = cpus.bind(CpuIndex::new(2)).unwrap();
    // SAFETY: single thread; index 2 is out of range, so no slot is touched.
    assert_eq!(unsafe { cells.with_current_mut(&cpus, |c| *c) }, None);
}
