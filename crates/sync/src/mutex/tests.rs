use super::Mutex;
use std::format;
use std::thread;

#[test]
fn lock_then_unlock_allows_relock() {
    let m = Mutex::new(1);
    {
        let mut g = m.lock();
        *g += 1;
    }
    assert_eq!(*m.lock(), 2);
}

#[test]
fn try_lock_fails_while_held() {
    let m = Mutex::new(0);
    let g = m.lock();
    assert!(m.try_lock().is_none());
    drop(g);
    assert!(m.try_lock().is_some());
}

#[test]
fn new_is_const_outside_loom() {
    static M: Mutex<[u8; 2]> = Mutex::new([0; 2]);
    M.lock()[1] = 7;
    assert_eq!(*M.lock(), [0, 7]);
}

#[test]
fn get_mut_and_into_inner_bypass_the_lock() {
    let mut m = Mutex::new(3);
    *m.get_mut() += 1;
    assert_eq!(m.into_inner(), 4);
}

#[test]
fn debug_shows_value_or_locked() {
    let m = Mutex::new(5);
    assert_eq!(format!("{m:?}"), "Mutex { data: 5 }");
    let g = m.lock();
    assert_eq!(format!("{m:?}"), "Mutex { data: <locked> }");
    assert_eq!(format!("{g:?}"), "5");
}

#[test]
fn threads_incrementing_under_the_lock_reach_the_exact_total() {
    const THREADS: usize = if cfg!(miri) { 3 } else { 4 };
    const ITERS: usize = if cfg!(miri) { 20 } else { 10_000 };
    // A non-atomic read-modify-write under the lock: lost updates would show in the total.
    let m = Mutex::new(0_usize);
    thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..ITERS {
                    let mut g = m.lock();
                    let v = *g;
                    *g = v + 1;
                }
            });
        }
    });
    assert_eq!(m.into_inner(), THREADS * ITERS);
}
