//! Loom models of VM objects shared between CPUs.
//!
//! Run with `cargo xtask loom vm-object` (or
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release -p machvm-vm-object --test loom`).
//!
//! - `concurrent_faults_page_in_once`: two CPUs fault on the same page of a file object; one
//!   pages it in behind a busy placeholder, the other waits for it: the pager is asked once
//!   and both get the same frame.
//! - `copy_on_write_races_with_a_read`: one CPU writes (copy on write) a shadow's page while
//!   another reads it; the reader sees the old or the new page, never a half-installed one,
//!   and exactly one copy is made.
#![cfg(loom)]
// Host tests: std is the natural choice.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::sync::Arc;

use loom::thread;
use machvm_addr::{PageSize, SimPhysMemory, VmProt};
use machvm_sync::model::run_model;
use machvm_vm_object::{FaultKind, InMemoryPager, PageMemory, SimPageMemory, VmObject};

const PAGE: u64 = 4096;

fn memory() -> Arc<SimPageMemory> {
    let phys = SimPhysMemory::builder()
        .size_bytes(64 * PAGE)
        .build()
        .unwrap();
    Arc::new(SimPageMemory::new(phys, PageSize::Size4KiB).unwrap())
}

#[test]
fn concurrent_faults_page_in_once() {
    run_model("concurrent_faults_page_in_once", || {
        let m = memory();
        let pager = Arc::new(InMemoryPager::file());
        pager.store(0, &[7; PAGE as usize]);
        let dm: Arc<dyn PageMemory> = m.clone();
        let file = VmObject::with_pager(PAGE, pager.clone(), dm).unwrap();
        let other = file.clone();
        let t = thread::spawn(move || VmObject::resolve(&other, 0, VmProt::READ).unwrap());
        let mine = VmObject::resolve(&file, 0, VmProt::READ).unwrap();
        let theirs = t.join().unwrap();
        assert_eq!(mine.frame, theirs.frame);
        assert_eq!(pager.counters().requests, 1);
        let kinds = [mine.kind, theirs.kind];
        assert!(kinds.contains(&FaultKind::PageIn) && kinds.contains(&FaultKind::Resident));
        assert_eq!(file.page_counts().resident, 1);
        assert_eq!(file.page_counts().busy, 0);
    });
}

#[test]
fn copy_on_write_races_with_a_read() {
    run_model("copy_on_write_races_with_a_read", || {
        let m = memory();
        let dm: Arc<dyn PageMemory> = m.clone();
        let base = VmObject::anonymous(PAGE, dm).unwrap();
        let original = VmObject::resolve(&base, 0, VmProt::WRITE).unwrap().frame;
        let top = VmObject::shadow_of(&base, 0, PAGE).unwrap();
        let other = top.clone();
        let t = thread::spawn(move || VmObject::resolve(&other, 0, VmProt::READ).unwrap());
        let written = VmObject::resolve(&top, 0, VmProt::WRITE).unwrap();
        let read = t.join().unwrap();
        assert_eq!(written.kind, FaultKind::CopyOnWrite);
        assert_ne!(written.frame, original);
        assert!(read.frame == original || read.frame == written.frame);
        assert_eq!(top.page_counts().resident, 1);
        assert_eq!(base.page_counts().busy, 0);
        // The copy is the only frame besides the original.
        assert_eq!(m.memory().frames_in_use(), 2);
    });
}
