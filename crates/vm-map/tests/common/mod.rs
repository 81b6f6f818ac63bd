//! Host harness: simulated physical memory, `SoftPmap`, and a "CPU" that loads and stores
//! bytes at virtual addresses through the pmap, faulting into the map on a miss or a
//! protection violation and retrying.

#![allow(dead_code, clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::sync::Arc;

use machvm_addr::{PageSize, PhysAddr, SimPhysMemory, VirtAddr, VmProt};
use machvm_vm_map::{FaultError, SoftPmap, VmMap};
use machvm_vm_object::SimPageMemory;

/// The page size of the harness.
pub const PS: u64 = 4096;
/// The lowest address of harness maps.
pub const BASE: u64 = 0x10_0000;

/// A map over the software pmap.
pub type Map = VmMap<SoftPmap>;

/// Simulated page memory of `bytes` bytes.
pub fn memory(bytes: u64) -> Arc<SimPageMemory> {
    let phys = SimPhysMemory::builder()
        .size_bytes(bytes)
        .build()
        .expect("simulated memory");
    Arc::new(SimPageMemory::new(phys, PageSize::Size4KiB).expect("page memory"))
}

/// A map of `[BASE, BASE + pages * PS)` over `memory`.
pub fn map(memory: &Arc<SimPageMemory>, pages: u64) -> Map {
    VmMap::new(
        PageSize::Size4KiB,
        VirtAddr::new(BASE),
        VirtAddr::new(BASE + pages * PS),
        memory.clone(),
        SoftPmap::new(PS),
    )
    .expect("map")
}

/// A new software pmap.
pub fn pmap() -> SoftPmap {
    SoftPmap::new(PS)
}

/// Loads or stores through the pmap, faulting at most a few times.
fn access(
    map: &mut Map,
    mem: &SimPageMemory,
    va: u64,
    want: VmProt,
    mut op: impl FnMut(PhysAddr),
) -> Result<(), FaultError> {
    for _ in 0..4 {
        if let Some(m) = map.pmap().translate(VirtAddr::new(va)) {
            if m.prot.contains(want) {
                op(PhysAddr::new(m.frame.as_u64() + va % PS));
                // Every translation the CPU uses must be allowed by the entry.
                let e = map
                    .lookup(VirtAddr::new(va))
                    .expect("translation without entry");
                assert!(
                    m.prot.is_subset_of(e.protection()),
                    "pmap grants {:?} beyond entry protection {:?} at {va:#x}",
                    m.prot,
                    e.protection()
                );
                let _ = mem;
                return Ok(());
            }
        }
        map.fault(VirtAddr::new(va), want)?;
    }
    panic!("no progress faulting {want:?} at {va:#x}");
}

/// Reads the byte at `va` like a CPU would.
pub fn read(map: &mut Map, mem: &SimPageMemory, va: u64) -> Result<u8, FaultError> {
    let mut byte = [0u8];
    access(map, mem, va, VmProt::READ, |pa| {
        mem.memory().read_bytes(pa, &mut byte).expect("read frame");
    })?;
    Ok(byte[0])
}

/// Writes `value` at `va` like a CPU would.
pub fn write(map: &mut Map, mem: &SimPageMemory, va: u64, value: u8) -> Result<(), FaultError> {
    access(map, mem, va, VmProt::WRITE, |pa| {
        mem.memory().write_bytes(pa, &[value]).expect("write frame");
    })
}
