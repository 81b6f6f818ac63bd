//! Shared helpers: simulated memory, reading and writing object pages through faults.

#![allow(dead_code, clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::sync::Arc;

use machvm_addr::{PageSize, SimPhysMemory, VmProt};
use machvm_vm_object::{FaultKind, ObjectRef, PageMemory, SimPageMemory, VmObject};

pub const PAGE: u64 = 4096;

/// 16 MiB of simulated physical memory with 4 KiB pages (1 MiB under miri).
pub fn memory() -> Arc<SimPageMemory> {
    memory_of(if cfg!(miri) { 1 << 20 } else { 16 << 20 })
}

pub fn memory_of(bytes: u64) -> Arc<SimPageMemory> {
    let phys = SimPhysMemory::builder()
        .size_bytes(bytes)
        .build()
        .expect("sim memory");
    Arc::new(SimPageMemory::new(phys, PageSize::Size4KiB).expect("page memory"))
}

pub fn dyn_memory(m: &Arc<SimPageMemory>) -> Arc<dyn PageMemory> {
    m.clone()
}

/// Frames in use in `m`.
pub fn frames(m: &SimPageMemory) -> u64 {
    m.memory().frames_in_use()
}

/// Writes `value` over the whole page at `offset` of `object` (a write fault first).
pub fn write(m: &SimPageMemory, object: &ObjectRef, offset: u64, value: u8) -> FaultKind {
    let page = VmObject::resolve(object, offset, VmProt::WRITE).expect("write fault");
    assert!(page.writable, "a write fault resolves to a writable page");
    assert_eq!(page.depth, 0, "a write fault resolves to the top object");
    m.memory()
        .write_bytes(page.frame, &[value; PAGE as usize])
        .expect("write frame");
    page.kind
}

/// Reads the page at `offset` of `object` (a read fault), checks it holds one repeated byte
/// and returns it.
pub fn read(m: &SimPageMemory, object: &ObjectRef, offset: u64) -> u8 {
    let page = VmObject::resolve(object, offset, VmProt::READ).expect("read fault");
    let mut buf = vec![0u8; PAGE as usize];
    m.memory()
        .read_bytes(page.frame, &mut buf)
        .expect("read frame");
    let first = buf[0];
    assert!(
        buf.iter().all(|b| *b == first),
        "page {offset:#x} of object {} is not uniform",
        object.id()
    );
    first
}
