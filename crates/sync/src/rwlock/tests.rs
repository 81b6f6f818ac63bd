use super::RwLock;
use std::format;
use std::thread;

#[test]
fn readers_share_the_lock() {
    let lock = RwLock::new(1);
    let a = lock.read();
    let b = lock.try_read().expect("a second reader must get in");
    assert_eq!(*a + *b, 2);
}

#[test]
fn writer_excludes_readers_and_writers() {
    let lock = RwLock::new(0);
    let w = lock.write();
    assert!(lock.try_read().is_none());
    assert!(lock.try_write().is_none());
    drop(w);
    assert!(lock.try_write().is_some());
}

#[test]
fn reader_excludes_writer() {
    let lock = RwLock::new(0);
    let r = lock.read();
    assert!(lock.try_write().is_none());
    drop(r);
    assert!(lock.try_write().is_some());
}

#[test]
fn new_is_const_outside_loom() {
    static L: RwLock<u32> = RwLock::new(8);
    assert_eq!(*L.read(), 8);
}

#[test]
fn get_mut_and_into_inner_bypass_the_lock() {
    let mut lock = RwLock::new(1);
    *lock.get_mut() = 2;
    assert_eq!(lock.into_inner(), 2);
}

#[test]
fn debug_shows_value_or_locked() {
    let lock = RwLock::new(5);
    assert_eq!(format!("{lock:?}"), "RwLock { data: 5 }");
    let w = lock.write();
    assert_eq!(format!("{lock:?}"), "RwLock { data: <locked> }");
    assert_eq!(format!("{w:?}"), "5");
}

#[test]
fn readers_never_see_a_torn_pair() {
    const OPS: usize = if cfg!(miri) { 10 } else { 2_000 };
    // The writer keeps both halves equal; a reader seeing them differ saw a torn update.
    // Bounded loops on both sides: spin's lock prefers readers, so "read until the writer is
    // done" could starve the writer.
    let lock = RwLock::new((0_usize, 0_usize));
    thread::scope(|s| {
        s.spawn(|| {
            for i in 1..=OPS {
                let mut w = lock.write();
                w.0 = i;
                w.1 = i;
            }
        });
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..OPS {
                    let r = lock.read();
                    assert_eq!(r.0, r.1);
                }
            });
        }
    });
    assert_eq!(lock.into_inner(), (OPS, OPS));
}
