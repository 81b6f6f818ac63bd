//! Shared helpers: simulated memory, page patterns, faults that read and write whole pages,
//! default pagers with and without swap, unique temporary directories.

#![allow(
    dead_code,
    clippy::std_instead_of_core,
    clippy::std_instead_of_alloc,
    clippy::alloc_instead_of_core
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use machvm_addr::{PageSize, SimPhysMemory, VmProt};
use machvm_compressor::codec::{Hybrid, PageSize as CodecPageSize, VectorPolicy};
use machvm_compressor::pool::{PoolConfig, SegmentSize};
use machvm_pager::{DefaultPager, FixedKey, MemorySwapBacking, Swap, SwapBacking, SwapConfig};
use machvm_vm_object::{FaultKind, ObjectError, ObjectRef, PageMemory, SimPageMemory, VmObject};

pub const PAGE: u64 = 4096;

pub fn memory_of(bytes: u64) -> Arc<SimPageMemory> {
    memory_with(bytes, PageSize::Size4KiB)
}

pub fn memory_with(bytes: u64, size: PageSize) -> Arc<SimPageMemory> {
    let phys = SimPhysMemory::builder()
        .size_bytes(bytes)
        .build()
        .expect("sim memory");
    Arc::new(SimPageMemory::new(phys, size).expect("page memory"))
}

pub fn dyn_memory(m: &Arc<SimPageMemory>) -> Arc<dyn PageMemory> {
    m.clone()
}

pub fn codec() -> Hybrid {
    Hybrid::new(CodecPageSize::Size4K, VectorPolicy::Portable)
}

/// A test key (two different halves).
pub fn key() -> FixedKey {
    FixedKey::new(core::array::from_fn(|i| {
        (i as u8).wrapping_mul(31).wrapping_add(7)
    }))
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// A page that compresses to about half its size: random bytes, then a run of one byte. Each
/// seed gives another page.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|i| {
            if i < len / 2 {
                xorshift(&mut x) as u8
            } else {
                seed as u8
            }
        })
        .collect()
}

/// Random bytes (does not compress).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len).map(|_| xorshift(&mut x) as u8).collect()
}

/// Writes `bytes` over the page at `offset` of `object` (a write fault first).
pub fn write_page(
    m: &SimPageMemory,
    object: &ObjectRef,
    offset: u64,
    bytes: &[u8],
) -> Result<FaultKind, ObjectError> {
    let page = VmObject::resolve(object, offset, VmProt::WRITE)?;
    m.memory()
        .write_bytes(page.frame, bytes)
        .expect("write frame");
    Ok(page.kind)
}

/// Reads the page at `offset` of `object` (a read fault).
pub fn read_page(
    m: &SimPageMemory,
    object: &ObjectRef,
    offset: u64,
) -> Result<(Vec<u8>, FaultKind), ObjectError> {
    let page = VmObject::resolve(object, offset, VmProt::READ)?;
    let mut buf = vec![0u8; object.page_size() as usize];
    m.memory()
        .read_bytes(page.frame, &mut buf)
        .expect("read frame");
    Ok((buf, page.kind))
}

/// A pool of 64 KiB segments with `in_core` segments in memory.
pub fn pool(in_core: usize) -> PoolConfig {
    PoolConfig::new(SegmentSize::K64)
        .max_in_core_segments(in_core)
        .max_segments(256)
        .max_pages(8192)
}

/// A default pager without swap.
pub fn pager_without_swap(in_core: usize) -> Arc<DefaultPager> {
    DefaultPager::new(pool(in_core), codec(), None).expect("default pager")
}

/// Swap over `backing` with small files: 2 to 4 slots, at most `files` files.
pub fn small_swap<B: SwapBacking>(backing: B, files: u32) -> Arc<Swap<B>> {
    let config = SwapConfig::new(SegmentSize::K64)
        .file_slots(2, 4)
        .max_files(files)
        .reclaim_slack_slots(1);
    Arc::new(Swap::new(backing, config, &mut key()).expect("swap"))
}

/// A default pager with `in_core` segments in memory and swap into memory.
pub fn pager_with_swap(
    in_core: usize,
    files: u32,
) -> (
    Arc<DefaultPager<Arc<MemorySwapBacking>>>,
    Arc<MemorySwapBacking>,
) {
    let backing = Arc::new(MemorySwapBacking::new());
    let swap = small_swap(backing.clone(), files);
    let pager = DefaultPager::new(pool(in_core), codec(), Some(swap)).expect("default pager");
    (pager, backing)
}

/// A fresh, empty directory under the system's temporary directory.
pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("machvm-pager-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
