//! Loom models of `machvm-sync`'s public API.
//!
//! Run with
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=2 cargo test --release -p machvm-sync --test loom`.
//!
//! Each model has 2-3 threads and a handful of operations. Together they show that the crate's
//! types really are loom's under `--cfg loom`: the locks order accesses to the crate's
//! `UnsafeCell`, per-CPU cells are exclusive per bound thread, and a publication with `Relaxed`
//! instead of `Release` is caught (`message_passing_with_relaxed_store_is_caught`).
#![cfg(loom)]

extern crate alloc;

use loom::sync::Arc;
use loom::thread;
use machvm_sync::atomic::{AtomicBool, Ordering};
use machvm_sync::model::run_model;
use machvm_sync::{
    Backoff, CpuIndex, Mutex, PerCpu, PerCpuCell, RwLock, ThreadCpuId, UnsafeCell, spin_loop,
};

/// A counter that is *not* atomic: only the lock orders the accesses to `value`.
struct LockedCounter {
    lock: Mutex<()>,
    value: UnsafeCell<usize>,
}

// SAFETY: `value` is only accessed while `lock` is held (or after all threads are joined).
unsafe impl Sync for LockedCounter {}

#[test]
fn mutex_gives_mutual_exclusion() {
    run_model("mutex_gives_mutual_exclusion", || {
        let counter = Arc::new(LockedCounter {
            lock: Mutex::new(()),
            value: UnsafeCell::new(0),
        });
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let counter = Arc::clone(&counter);
                thread::spawn(move || {
                    let _held = counter.lock.lock();
                    // A read-modify-write split in two accesses: loom fails the model if the
                    // lock does not order them against the other thread's.
                    // SAFETY: the lock is held, so no other access to `value` is live.
                    let v = counter.value.with(|p| unsafe { *p });
                    // SAFETY: as above.
                    counter.value.with_mut(|p| unsafe { *p = v + 1 });
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        // SAFETY: both writers are joined, which orders their writes before this read.
        assert_eq!(counter.value.with(|p| unsafe { *p }), 2);
    });
}

#[test]
fn mutex_try_lock_fails_only_while_held() {
    run_model("mutex_try_lock_fails_only_while_held", || {
        let m = Arc::new(Mutex::new(0_u32));
        let m2 = Arc::clone(&m);
        let t = thread::spawn(move || {
            *m2.lock() += 1;
        });
        if let Some(mut g) = m.try_lock() {
            *g += 10;
        }
        t.join().unwrap();
        let v = *m.lock();
        assert!(v == 1 || v == 11, "unexpected {v}");
    });
}

#[test]
fn rwlock_reader_never_sees_a_torn_pair() {
    run_model("rwlock_reader_never_sees_a_torn_pair", || {
        let lock = Arc::new(RwLock::new((0_u32, 0_u32)));
        let writer = {
            let lock = Arc::clone(&lock);
            thread::spawn(move || {
                let mut w = lock.write();
                w.0 = 1;
                w.1 = 1;
            })
        };
        let reader = {
            let lock = Arc::clone(&lock);
            thread::spawn(move || {
                let r = lock.read();
                assert!(*r == (0, 0) || *r == (1, 1), "torn pair {:?}", *r);
            })
        };
        writer.join().unwrap();
        reader.join().unwrap();
        assert_eq!(*lock.read(), (1, 1));
    });
}

#[test]
fn per_cpu_cells_are_exclusive_per_bound_thread() {
    run_model("per_cpu_cells_are_exclusive_per_bound_thread", || {
        let shared = Arc::new((ThreadCpuId::new(), PerCpuCell::<u32, 2>::from_fn(|_| 0)));
        let handles: Vec<_> = (0..2_u32)
            .map(|i| {
                let shared = Arc::clone(&shared);
                thread::spawn(move || {
                    let (cpus, cells) = &*shared;
                    let _bound = cpus.bind(CpuIndex::new(i)).unwrap();
                    for _ in 0..2 {
                        // SAFETY: this thread alone is bound to index `i` and stays bound for
                        // the call; nothing else touches slot `i` until the join; no re-entry.
                        unsafe { cells.with_current_mut(cpus, |c| *c += 1) }.unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let (_, cells) = &*shared;
        let total: u32 = (0..2)
            // SAFETY: the writers are joined, ordering their writes before these reads.
            .map(|i| unsafe { cells.with(CpuIndex::new(i), |c| *c) }.unwrap())
            .sum();
        assert_eq!(total, 4);
    });
}

#[test]
#[should_panic(expected = "Concurrent write accesses")]
fn per_cpu_cell_writers_racing_on_one_slot_are_caught() {
    // Misuse: two threads use slot 0 "exclusively" at once. Loom must report the race; this
    // proves `PerCpuCell` slots are loom cells.
    run_model("per_cpu_cell_writers_racing_on_one_slot_are_caught", || {
        let cells = Arc::new(PerCpuCell::<u32, 1>::from_fn(|_| 0));
        let other = Arc::clone(&cells);
        let t = thread::spawn(move || {
            // SAFETY: deliberately violated; loom reports the overlap (the test expects it).
            unsafe { other.with_mut(CpuIndex::new(0), |c| *c += 1) };
        });
        // SAFETY: deliberately violated, as above.
        unsafe { cells.with_mut(CpuIndex::new(0), |c| *c += 1) };
        t.join().unwrap();
    });
}

#[test]
fn per_cpu_shared_counters_sum_after_join() {
    run_model("per_cpu_shared_counters_sum_after_join", || {
        let counters = Arc::new(PerCpu::<machvm_sync::atomic::AtomicU32, 2>::from_fn(|_| {
            machvm_sync::atomic::AtomicU32::new(0)
        }));
        let handles: Vec<_> = (0..2_u32)
            .map(|i| {
                let counters = Arc::clone(&counters);
                thread::spawn(move || {
                    // Relaxed: a statistic; the join orders it before the sum.
                    counters
                        .get(CpuIndex::new(i))
                        .unwrap()
                        .fetch_add(1, Ordering::Relaxed);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let total: u32 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        assert_eq!(total, 2);
    });
}

/// Data published through a flag: the payload is a plain value in the crate's `UnsafeCell`.
struct Mailbox {
    ready: AtomicBool,
    payload: UnsafeCell<u64>,
}

// SAFETY: `payload` is written once before `ready` is set and read only after `ready` is seen
// set; the flag's ordering (the thing under test) orders the two accesses.
unsafe impl Sync for Mailbox {}

/// One producer publishes 42 through `ready` with `store_order`; the consumer reads the payload
/// if it sees the flag.
fn message_passing(store_order: Ordering, load_order: Ordering) {
    let mailbox = Arc::new(Mailbox {
        ready: AtomicBool::new(false),
        payload: UnsafeCell::new(0),
    });
    let producer = {
        let mailbox = Arc::clone(&mailbox);
        thread::spawn(move || {
            // SAFETY: the consumer does not read `payload` before it sees `ready` set, which
            // happens after this write (given a Release store).
            mailbox.payload.with_mut(|p| unsafe { *p = 42 });
            mailbox.ready.store(true, store_order);
        })
    };
    if mailbox.ready.load(load_order) {
        // SAFETY: `ready` was seen set; with Release/Acquire the payload write happens-before
        // this read.
        let v = mailbox.payload.with(|p| unsafe { *p });
        assert_eq!(v, 42);
    }
    producer.join().unwrap();
}

#[test]
fn message_passing_with_release_acquire_is_race_free() {
    run_model("message_passing_with_release_acquire_is_race_free", || {
        message_passing(Ordering::Release, Ordering::Acquire);
    });
}

#[test]
#[should_panic(expected = "Causality violation")]
fn message_passing_with_relaxed_store_is_caught() {
    run_model("message_passing_with_relaxed_store_is_caught", || {
        message_passing(Ordering::Relaxed, Ordering::Acquire);
    });
}

#[test]
fn spin_wait_with_spin_loop_terminates() {
    run_model("spin_wait_with_spin_loop_terminates", || {
        let flag = Arc::new(AtomicBool::new(false));
        let setter = {
            let flag = Arc::clone(&flag);
            thread::spawn(move || flag.store(true, Ordering::Release))
        };
        // Without `spin_loop` yielding to the model this loop could spin forever.
        let mut backoff = Backoff::new();
        while !flag.load(Ordering::Acquire) {
            if backoff.is_saturated() {
                spin_loop();
            } else {
                backoff.spin();
            }
        }
        setter.join().unwrap();
    });
}
