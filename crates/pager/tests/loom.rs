//! Loom models of the default pager shared between CPUs.
//!
//! Run with `cargo xtask loom pager` (or
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release -p machvm-pager --test loom`).
//!
//! - `concurrent_faults_decompress_once`: two CPUs fault on the same paged-out page; one pages
//!   it in behind the object's busy placeholder (one request to the compressor pager), the
//!   other waits: both get the same frame with the page's contents, and the slot is freed
//!   exactly once.
//! - `page_out_races_a_fault`: one CPU pages a page out while another faults on it; whichever
//!   order wins, the page is afterwards either resident or in exactly one compressor slot,
//!   and it reads back intact.
#![cfg(loom)]
// Host tests: std is the natural choice.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::sync::Arc;

use loom::thread;
use machvm_addr::{PageSize, SimPhysMemory, VmProt};
use machvm_compressor::codec::{Hybrid, PageSize as CodecPageSize, VectorPolicy};
use machvm_compressor::pool::{PoolConfig, SegmentSize};
use machvm_pager::{DefaultPager, MemorySwapBacking};
use machvm_sync::model::run_model;
use machvm_vm_object::{FaultKind, ObjectRef, PageMemory, SimPageMemory, VmObject};

const PAGE: u64 = 4096;

fn memory() -> Arc<SimPageMemory> {
    let phys = SimPhysMemory::builder()
        .size_bytes(16 * PAGE)
        .build()
        .unwrap();
    Arc::new(SimPageMemory::new(phys, PageSize::Size4KiB).unwrap())
}

fn pager() -> Arc<DefaultPager<MemorySwapBacking>> {
    let config = PoolConfig::new(SegmentSize::K64)
        .max_in_core_segments(2)
        .max_segments(2)
        .max_pages(8);
    let codec = Hybrid::new(CodecPageSize::Size4K, VectorPolicy::Portable);
    DefaultPager::new(config, codec, None).unwrap()
}

/// Spawns a model thread with a stack that holds the pager, its pool (with the pool's 8.5 KB
/// compression scratch) and a page (loom's default coroutine stacks are far smaller than a
/// kernel thread's).
fn spawn_big<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> thread::JoinHandle<T> {
    thread::Builder::new().stack_size(1 << 20).spawn(f).unwrap()
}

/// Runs `f` on a thread with a large stack (the model's main thread has a small one).
fn model(name: &'static str, f: fn()) {
    run_model(name, move || spawn_big(f).join().unwrap());
}

fn contents() -> Vec<u8> {
    (0..PAGE).map(|i| (i * 7 % 251) as u8).collect()
}

fn read(m: &SimPageMemory, object: &ObjectRef) -> Vec<u8> {
    let page = VmObject::resolve(object, 0, VmProt::READ).unwrap();
    let mut buf = vec![0u8; PAGE as usize];
    m.memory().read_bytes(page.frame, &mut buf).unwrap();
    buf
}

#[test]
fn concurrent_faults_decompress_once() {
    model("concurrent_faults_decompress_once", || {
        let m = memory();
        let dm: Arc<dyn PageMemory> = m.clone();
        let pager = pager();
        let object = VmObject::anonymous(PAGE, dm).unwrap();
        let page = VmObject::resolve(&object, 0, VmProt::WRITE).unwrap();
        m.memory().write_bytes(page.frame, &contents()).unwrap();
        let cp = pager.attach(&object).unwrap();
        object.page_out(0).unwrap();

        let other = object.clone();
        let t = spawn_big(move || VmObject::resolve(&other, 0, VmProt::READ).unwrap());
        let mine = VmObject::resolve(&object, 0, VmProt::READ).unwrap();
        let theirs = t.join().unwrap();

        assert_eq!(mine.frame, theirs.frame);
        let kinds = [mine.kind, theirs.kind];
        assert!(kinds.contains(&FaultKind::PageIn) && kinds.contains(&FaultKind::Resident));
        assert_eq!(cp.requests(), 1, "one request to the pager");
        assert_eq!(cp.slots_in_use(), 0);
        assert_eq!(pager.stats().pool.pages_stored, 0);
        assert_eq!(object.page_counts().busy, 0);
        assert_eq!(read(&m, &object), contents());
    });
}

#[test]
fn page_out_races_a_fault() {
    model("page_out_races_a_fault", || {
        let m = memory();
        let dm: Arc<dyn PageMemory> = m.clone();
        let pager = pager();
        let object = VmObject::anonymous(PAGE, dm).unwrap();
        let page = VmObject::resolve(&object, 0, VmProt::WRITE).unwrap();
        m.memory().write_bytes(page.frame, &contents()).unwrap();
        let cp = pager.attach(&object).unwrap();

        let other = object.clone();
        let t = spawn_big(move || VmObject::resolve(&other, 0, VmProt::READ).map(|p| p.kind));
        let out = object.page_out(0);
        let fault = t.join().unwrap();

        assert!(
            fault.is_ok(),
            "the fault succeeds whatever the order: {fault:?}"
        );
        let resident = object.page(0).unwrap().is_some();
        match out {
            // Paged out: either the fault came first (the page is out now) or after (it paged
            // the page back in and freed the slot).
            Ok(_) => assert_eq!(cp.slots_in_use(), u64::from(!resident)),
            Err(e) => panic!("page-out failed: {e}"),
        }
        assert_eq!(pager.stats().pool.pages_stored, cp.slots_in_use());
        assert_eq!(read(&m, &object), contents());
    });
}
