//! The compressor (and swap) as the [`AnonymousPager`] of a [`VmSystem`](crate::VmSystem):
//! `machvm-pager`'s [`DefaultPager`] gives each anonymous object its compressor pager on the
//! object's first page-out, and its pool and swap counters feed `vm_stat`,
//! `memory_pressure` and `vm.swapusage`.

use alloc::sync::Arc;

use machvm_compressor::codec::PageCodec;
use machvm_compressor::pool::PoolPressure;
use machvm_pager::{DefaultPager, PagingError, SwapBacking, SwapUsage};
use machvm_vm_object::{ObjectError, ObjectRef, PagerError};

use crate::system::{AnonymousPager, PagerStats};

/// Maps a paging error to the object error a page-out reports.
fn object_error(e: PagingError) -> ObjectError {
    match e {
        PagingError::Object(e) => e,
        PagingError::OutOfMemory => ObjectError::NoMemory,
        PagingError::NoSpace => ObjectError::Pager(PagerError::NoSpace),
        _ => ObjectError::Pager(PagerError::Unsupported),
    }
}

/// `machvm-pager`'s [`DefaultPager`] (compressor pool, optional encrypted swap) as the
/// anonymous pager of a [`VmSystem`](crate::VmSystem).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use machvm::compressed::CompressedMemory;
/// use machvm::sim::SimMachine;
/// use machvm_compressor::codec::{Hybrid, PageSize, VectorPolicy};
/// use machvm_compressor::pool::{PoolConfig, SegmentSize};
/// use machvm_pager::{DefaultPager, MemorySwapBacking};
/// use machvm_page_table::X86Pml4;
/// use machvm_vm_map::MapRequest;
///
/// let codec = Hybrid::new(PageSize::Size4K, VectorPolicy::Portable);
/// let pager = DefaultPager::<MemorySwapBacking>::new(PoolConfig::new(SegmentSize::K64), codec, None)?;
/// let machine = SimMachine::<X86Pml4>::new(16, 1)?;
/// machine.vm().set_anonymous_pager(Arc::new(CompressedMemory(pager.clone())));
/// let space = machine.create_space()?;
/// let addr = machine.vm().mmap(space, MapRequest::anonymous(64 * 4096))?.as_u64();
/// for page in 0..64 {
///     machine.store(0, space, addr + page * 4096, page as u8)?; // 64 pages in 16 frames
/// }
/// assert!(machine.vm().pager_stats().compressions > 0);
/// assert_eq!(machine.load(0, space, addr + 4096)?, 1); // decompressed
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct CompressedMemory<B: SwapBacking, C: PageCodec>(pub Arc<DefaultPager<B, C>>);

impl<B, C> AnonymousPager for CompressedMemory<B, C>
where
    B: SwapBacking + Send + Sync + 'static,
    C: PageCodec + Send + Sync + 'static,
{
    fn attach(&self, object: &ObjectRef) -> Result<(), ObjectError> {
        match self.0.attach(object) {
            Ok(_) | Err(PagingError::Object(ObjectError::HasPager)) => Ok(()),
            Err(e) => Err(object_error(e)),
        }
    }

    fn swap_usage(&self) -> Option<SwapUsage> {
        self.0.swap_usage()
    }

    fn stats(&self) -> PagerStats {
        let pager = &self.0;
        let s = pager.stats();
        let pool = s.pool;
        let page = pager.page_size().max(1);
        let config = pager.pool().config();
        let limit = u64::try_from(config.max_in_core_segments)
            .unwrap_or(u64::MAX)
            .saturating_mul(u64::try_from(config.segment_size.bytes()).unwrap_or(u64::MAX));
        let fullness = match pager.pool().pressure() {
            PoolPressure::Normal => pool
                .in_core_capacity
                .saturating_mul(100)
                .checked_div(limit)
                .map_or(0, |p| u8::try_from(p.min(97)).unwrap_or(97)),
            PoolPressure::NearingLimit => 98,
            _ => 100,
        };
        let swap = s.swap.unwrap_or_default();
        PagerStats::new(
            pool.pages_stored,
            pool.bytes_used.div_ceil(page),
            s.page_outs,
            s.page_ins,
            swap.reads,
            swap.writes,
            fullness,
        )
    }
}
