//! Shared helpers of the pool tests (included with `mod pool_support;`).

#![allow(dead_code)] // Each test file uses a different subset.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use machvm_compressor::codec::{Hybrid, PageSize, VectorPolicy};
use machvm_compressor::pool::{HeapMemory, MemoryStore, Pool, PoolConfig, SegmentMemory};
use machvm_sync::Mutex;

/// The pool type most tests use: the real hybrid codec, counted heap memory, in-memory swap.
pub type TestPool = Pool<'static, Hybrid, CountingMemory, Arc<MemoryStore>>;

/// Pages read from the corpus file: `MACHVM_CORPUS`, else the shared corpus next to the
/// repository. `None` (with a notice) when the file is absent.
pub fn corpus() -> Option<Vec<[u32; 1024]>> {
    let path = std::env::var_os("MACHVM_CORPUS").map_or_else(
        || {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../../shared/corpus/pages-4k.bin")
        },
        std::path::PathBuf::from,
    );
    let Ok(bytes) = std::fs::read(&path) else {
        eprintln!(
            "notice: corpus {} not found; corpus pool tests skipped",
            path.display()
        );
        return None;
    };
    let chunks: Vec<&[u8]> = bytes.chunks_exact(4096).collect();
    // Miri interprets: a spread of a few pages keeps the run short.
    let step = if cfg!(miri) {
        (chunks.len() / 4).max(1)
    } else {
        1
    };
    let pages: Vec<[u32; 1024]> = chunks
        .iter()
        .step_by(step)
        .take(if cfg!(miri) { 4 } else { usize::MAX })
        .map(|chunk| {
            let mut page = [0_u32; 1024];
            for (w, b) in page.iter_mut().zip(chunk.chunks_exact(4)) {
                *w = u32::from_le_bytes(b.try_into().unwrap());
            }
            page
        })
        .collect();
    Some(pages)
}

/// A deterministic xorshift generator.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A page of random words (incompressible: stored raw).
pub fn random_page(seed: u64) -> [u32; 1024] {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut p = [0_u32; 1024];
    for w in &mut p {
        *w = rng.next() as u32;
    }
    p
}

/// A compressible page: small integers and a repeated pointer-like pattern.
pub fn structured_page(seed: u64) -> [u32; 1024] {
    let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
    let mut p = [0_u32; 1024];
    let base = 0x7f00_0000 | (rng.next() as u32 & 0xffff) << 4;
    for (i, w) in p.iter_mut().enumerate() {
        *w = match i % 4 {
            0 => base + (rng.next() as u32 & 0x3f0),
            1 => rng.next() as u32 & 0xff,
            2 => 0,
            _ => seed as u32,
        };
    }
    p
}

/// A page of one repeated 32-bit value.
pub fn single_page(value: u32) -> [u32; 1024] {
    [value; 1024]
}

/// The real hybrid codec on the portable path.
pub fn hybrid() -> Hybrid {
    Hybrid::new(PageSize::Size4K, VectorPolicy::Portable)
}

/// Heap segment buffers, counted (so tests can check every buffer comes back), with an
/// optional stray write: when armed, the next `as_mut` of any buffer flips a byte of it first,
/// as a wild write from elsewhere in a kernel would.
#[derive(Debug, Default, Clone)]
pub struct CountingMemory {
    pub outstanding: Arc<AtomicUsize>,
    pub limit: Option<usize>,
    pub stray_write: Arc<Mutex<Option<(usize, u8)>>>,
}

impl CountingMemory {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_limit(limit: usize) -> Self {
        Self {
            limit: Some(limit),
            ..Self::default()
        }
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::SeqCst)
    }

    /// Flips `xor` into byte `offset` of the next buffer written.
    pub fn arm_stray_write(&self, offset: usize, xor: u8) {
        *self.stray_write.lock() = Some((offset, xor));
    }
}

/// A segment buffer of [`CountingMemory`].
#[derive(Debug)]
pub struct CountedBuf {
    bytes: Box<[u8]>,
    stray_write: Arc<Mutex<Option<(usize, u8)>>>,
}

impl AsRef<[u8]> for CountedBuf {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsMut<[u8]> for CountedBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        if let Some((offset, xor)) = self.stray_write.lock().take() {
            self.bytes[offset] ^= xor;
        }
        &mut self.bytes
    }
}

impl SegmentMemory for CountingMemory {
    type Buffer = CountedBuf;

    fn allocate(&self, len: usize) -> Option<CountedBuf> {
        if self.limit.is_some_and(|l| self.outstanding() >= l) {
            return None;
        }
        let bytes = HeapMemory.allocate(len)?;
        self.outstanding.fetch_add(1, Ordering::SeqCst);
        Some(CountedBuf {
            bytes,
            stray_write: Arc::clone(&self.stray_write),
        })
    }

    fn release(&self, buffer: CountedBuf) {
        self.outstanding.fetch_sub(1, Ordering::SeqCst);
        drop(buffer);
    }
}

/// A pool over the hybrid codec, counted memory and an in-memory store.
pub fn pool(config: PoolConfig) -> (TestPool, CountingMemory, Arc<MemoryStore>) {
    let mem = CountingMemory::new();
    let store = Arc::new(MemoryStore::new());
    let pool = Pool::new(config, hybrid(), mem.clone(), Arc::clone(&store)).unwrap();
    (pool, mem, store)
}

/// Checks the accounting invariants that hold after every operation.
pub fn check_invariants(pool: &TestPool, mem: &CountingMemory, store: &MemoryStore) {
    let st = pool.stats();
    let (mut in_core, mut swapped, mut slot_pages, mut live_bytes, mut used, mut unused) =
        (0, 0, 0, 0, 0, 0);
    let filling = pool.filling_segment();
    pool.for_each_segment(|s| {
        assert!(s.live_slots <= s.slots, "{s:?}");
        assert!(s.live_slots > 0 || filling == Some(s.segment), "{s:?}");
        slot_pages += u64::from(s.live_slots);
        live_bytes += s.live_bytes;
        if s.state.is_in_core() {
            in_core += 1;
            used += s.bytes_used;
            unused += s.bytes_unused;
            assert!(s.bytes_used <= pool.config().segment_size.bytes() as u64);
        } else {
            swapped += 1;
        }
    });
    assert_eq!(st.segments_in_core, in_core);
    assert_eq!(st.segments_swapped, swapped);
    assert_eq!(mem.outstanding() as u64, in_core, "buffers outstanding");
    assert_eq!(store.len() as u64, swapped, "store records");
    assert_eq!(st.pages_stored, slot_pages + st.single_value_pages);
    assert_eq!(st.compressed_bytes, live_bytes);
    assert_eq!((st.bytes_used, st.bytes_unused), (used, unused));
    assert_eq!(st.input_bytes, st.pages_stored * 4096);
    assert!(st.single_values <= st.single_value_pages);
    assert!(st.fragmentation_percent() >= 0.0 && st.fragmentation_percent() <= 100.0);
}
