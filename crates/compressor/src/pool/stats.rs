//! Statistics snapshots, pressure levels and reports.

use super::segment::SegmentState;

/// How close the pool is to its limits, for the facade's memory-pressure logic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum PoolPressure {
    /// Below 98 % of every limit.
    Normal,
    /// At or above 98 % of a limit (XNU's "compressor low on space"): in-core segments against
    /// the in-core limit, segment descriptors against the segment table, or stored pages
    /// against the handle table.
    NearingLimit,
    /// A limit is reached: a store that needs a new segment or handle fails with
    /// [`PoolError::Exhausted`](super::PoolError::Exhausted).
    Exhausted,
}

/// A snapshot of the pool's statistics (taken under the pool lock, so self-consistent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Pages stored now (live handles).
    pub pages_stored: u64,
    /// Of those, pages kept in the single-value table (no segment space).
    pub single_value_pages: u64,
    /// Distinct values in the single-value table.
    pub single_values: u64,
    /// Uncompressed bytes of the pages stored now (pages × page size).
    pub input_bytes: u64,
    /// Compressed bytes of the pages stored now (slot data, in core or swapped out).
    pub compressed_bytes: u64,
    /// Bytes of segment buffers in core that are occupied: data areas (holes included) plus
    /// slot directories.
    pub bytes_used: u64,
    /// Bytes inside the occupied part of in-core segments that belong to no live page (holes
    /// left by frees; minor compaction reclaims them).
    pub bytes_unused: u64,
    /// Segments in core (filling or sealed).
    pub segments_in_core: u64,
    /// Segments swapped out.
    pub segments_swapped: u64,
    /// Bytes of segment buffers in core (segments in core × segment size).
    pub in_core_capacity: u64,
    /// Bytes of the images of swapped-out segments.
    pub swapped_bytes: u64,
    /// Stores since creation.
    pub stores: u64,
    /// Stores that found their value in (or added it to) the single-value table.
    pub single_value_hits: u64,
    /// Single-value pages that found no room in the value table and went to a segment.
    pub single_value_misses: u64,
    /// Pages the codec stored raw (did not compress).
    pub incompressible_pages: u64,
    /// Loads since creation (including those of [`take`](super::Pool::take)).
    pub loads: u64,
    /// Frees since creation (including those of [`take`](super::Pool::take)).
    pub frees: u64,
    /// Segments swapped out since creation.
    pub swap_outs: u64,
    /// Segments swapped in since creation.
    pub swap_ins: u64,
    /// Segments minor-compacted since creation.
    pub minor_compactions: u64,
    /// Segments merged away by major compaction since creation.
    pub major_compactions: u64,
    /// Slots and segments found corrupt since creation.
    pub corruptions: u64,
}

impl PoolStats {
    /// Input bytes per compressed byte (`vm.compressor_input_bytes` ÷
    /// `vm.compressor_compressed_bytes`); single-value pages count as input with no compressed
    /// bytes. 0.0 for an empty pool.
    #[must_use]
    pub fn compression_ratio(&self) -> f64 {
        if self.compressed_bytes == 0 {
            return if self.input_bytes == 0 {
                0.0
            } else {
                f64::INFINITY
            };
        }
        self.input_bytes as f64 / self.compressed_bytes as f64
    }

    /// The "compressor efficiency": uncompressed bytes held per byte of in-core segment memory
    /// (memory the pool saves, as `memory_pressure` reports it: pages stored ÷ pages occupied).
    /// Pages of swapped-out segments count, since they are held without in-core memory.
    /// 0.0 for an empty pool.
    #[must_use]
    pub fn efficiency(&self) -> f64 {
        if self.in_core_capacity == 0 {
            return if self.input_bytes == 0 {
                0.0
            } else {
                f64::INFINITY
            };
        }
        self.input_bytes as f64 / self.in_core_capacity as f64
    }

    /// Fragmentation of in-core segments in percent: the share of their capacity that holds no
    /// live page (XNU's `vm.compressor_fragmentation_level`, in bytes rather than pages).
    #[must_use]
    pub fn fragmentation_percent(&self) -> f64 {
        if self.in_core_capacity == 0 {
            return 0.0;
        }
        let live = self.bytes_used - self.bytes_unused;
        100.0 - live as f64 * 100.0 / self.in_core_capacity as f64
    }
}

/// A description of one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentInfo {
    /// The segment number.
    pub segment: u32,
    /// Its state.
    pub state: SegmentState,
    /// Live slots (pages stored in it).
    pub live_slots: u32,
    /// Directory entries, live or empty.
    pub slots: u32,
    /// Compressed bytes of its live pages.
    pub live_bytes: u64,
    /// Bytes occupied: data area plus directory.
    pub bytes_used: u64,
    /// Occupied bytes that belong to no live page.
    pub bytes_unused: u64,
    /// Age: the pool-wide sequence number at which it was sealed (0 while filling).
    pub sealed_seq: u64,
}

/// What a compaction pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactionReport {
    /// Segments compacted in place (minor) or merged away and freed (major).
    pub segments: u32,
    /// Slots moved to another segment (major compaction only).
    pub slots_moved: u32,
    /// Bytes reclaimed: holes closed (minor) or segment buffers released (major).
    pub bytes_reclaimed: u64,
    /// Segments left alone because their directory failed a consistency check.
    pub skipped_corrupt: u32,
}
