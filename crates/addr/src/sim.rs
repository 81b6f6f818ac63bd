//! Simulated physical memory for host tests (needs `std`).

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use core::alloc::Layout;
use core::fmt;
use core::ptr::NonNull;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::error::AddrError;
use crate::frame_alloc::{FrameAllocator, FrameRequest};
use crate::mapper::PhysMapper;
use crate::phys::PhysAddr;
use crate::size::PageSize;

/// The granule of the simulated allocator's bitmap.
const FRAME: u64 = PageSize::Size4KiB.bytes();
/// The largest alignment of the host buffer.
const MAX_HOST_ALIGN: u64 = PageSize::Size1GiB.bytes();

/// Simulated physical memory: one zeroed, aligned host buffer whose bytes stand for the physical
/// addresses `base..base + size`, with a built-in frame allocator and a [`PhysMapper`].
///
/// # Design
///
/// - **Buffer.** One `alloc_zeroed` allocation of `size` bytes aligned to
///   `min(size.next_power_of_two(), 1 GiB)` ([`host_align`](Self::host_align)); `base` must be a
///   multiple of that alignment, so a physical address and its host pointer agree modulo it
///   (a 2 MiB frame of a 4 MiB simulation is 2 MiB-aligned on the host too). The buffer is held
///   as a raw pointer and never as a Rust reference, so pointers handed out by
///   [`phys_to_ptr`](PhysMapper::phys_to_ptr) stay valid while others are used.
/// - **Allocator.** A bitmap over 4 KiB frames plus a map of live allocations, behind one
///   `Mutex`. It serves every [`FrameRequest`]: contiguous runs, any alignment (measured on
///   physical addresses), first fit. Freed frames are reused. A free must match a live
///   allocation (start and size) exactly; anything else is a typed error and changes nothing.
/// - **Zeroing.** By default frames are zeroed when allocated, so reused frames never leak
///   old contents; turn it off with [`SimPhysMemoryBuilder::zero_on_alloc`] to find code that
///   assumes zeroed memory.
/// - **Fault injection.** [`fail_after`](Self::fail_after).
/// - **Threads.** `SimPhysMemory` is `Send + Sync`; allocator methods take `&self`.
///
/// # Examples (needs `std`)
///
/// ```
/// # #[cfg(feature = "std")] {
/// use machvm_addr::{FrameAllocator, FrameRequest, PageSize, PhysAddr, SimPhysMemory, Size4KiB};
///
/// let sim = SimPhysMemory::builder()
///     .size_bytes(4 << 20)
///     .base(PhysAddr::new(0x4000_0000))
///     .build()?;
/// let mut alloc = sim.frame_allocator();
/// let frame = alloc.allocate_frame::<Size4KiB>()?;
/// sim.write_u64(frame.start_address(), 0xdead_beef)?;
/// assert_eq!(sim.read_u64(frame.start_address())?, 0xdead_beef);
///
/// let big = alloc.allocate(FrameRequest::single(PageSize::Size2MiB))?;
/// assert!(big.is_aligned(2 << 20));
/// assert_eq!(sim.frames_in_use(), 1 + 512);
/// // SAFETY: nothing uses the frames any more.
/// unsafe { alloc.deallocate_frame(frame)? };
/// assert_eq!(sim.frames_in_use(), 512);
/// # }
/// # Ok::<(), machvm_addr::AddrError>(())
/// ```
pub struct SimPhysMemory {
    /// Start of the host buffer; owned, and only ever accessed through raw pointers.
    buf: NonNull<u8>,
    layout: Layout,
    base: PhysAddr,
    size: u64,
    zero_on_alloc: bool,
    state: Mutex<State>,
}

/// The allocator state guarded by the mutex.
#[derive(Debug)]
struct State {
    /// Bit `i` is set when frame `i` (4 KiB, counted from `base`) is allocated.
    bitmap: Vec<u64>,
    /// Live allocations: start physical address -> number of 4 KiB frames.
    live: BTreeMap<u64, u64>,
    in_use: u64,
    peak: u64,
    allocations: u64,
    deallocations: u64,
    /// Successful allocations left before injected failures start.
    fail_after: Option<u64>,
}

impl State {
    fn is_used(&self, frame: u64) -> bool {
        self.bitmap[(frame / 64) as usize] & (1 << (frame % 64)) != 0
    }

    /// Returns the highest used frame in `start..start + n`, if any.
    fn last_used_in(&self, start: u64, n: u64) -> Option<u64> {
        (start..start + n).rev().find(|&f| self.is_used(f))
    }

    fn set_range(&mut self, start: u64, n: u64, used: bool) {
        for f in start..start + n {
            let word = &mut self.bitmap[(f / 64) as usize];
            if used {
                *word |= 1 << (f % 64);
            } else {
                *word &= !(1 << (f % 64));
            }
        }
    }
}

/// Configures and builds a [`SimPhysMemory`].
///
/// Defaults: 4 MiB at physical address 0, frames zeroed on allocation.
///
/// # Examples (needs `std`)
///
/// See [`SimPhysMemory`].
#[derive(Clone, Debug)]
pub struct SimPhysMemoryBuilder {
    size: u64,
    base: PhysAddr,
    zero_on_alloc: bool,
}

impl SimPhysMemoryBuilder {
    /// Sets the size of the simulated memory in bytes (a non-zero multiple of 4 KiB).
    #[must_use]
    pub fn size_bytes(mut self, size: u64) -> Self {
        self.size = size;
        self
    }

    /// Sets the physical address of the first byte (a multiple of the host alignment,
    /// `min(size.next_power_of_two(), 1 GiB)`).
    #[must_use]
    pub fn base(mut self, base: PhysAddr) -> Self {
        self.base = base;
        self
    }

    /// Sets whether frames are zeroed when allocated (default `true`).
    #[must_use]
    pub fn zero_on_alloc(mut self, zero: bool) -> Self {
        self.zero_on_alloc = zero;
        self
    }

    /// Allocates the host buffer and returns the simulated memory.
    ///
    /// # Errors
    ///
    /// - [`AddrError::BadSize`] if the size is zero or not a multiple of 4 KiB.
    /// - [`AddrError::Overflow`] if `base + size` is above `2^52`.
    /// - [`AddrError::Misaligned`] if `base` is not a multiple of the host alignment.
    /// - [`AddrError::OutOfFrames`] if the host allocation fails.
    pub fn build(self) -> Result<SimPhysMemory, AddrError> {
        let size = self.size;
        if size == 0 || size % FRAME != 0 {
            return Err(AddrError::BadSize { size });
        }
        if u128::from(self.base.as_u64()) + u128::from(size) > 1 << PhysAddr::MAX_BITS {
            return Err(AddrError::Overflow);
        }
        let align = size.next_power_of_two().min(MAX_HOST_ALIGN);
        if !self.base.is_aligned(align) {
            return Err(AddrError::Misaligned {
                addr: self.base.as_u64(),
                align,
            });
        }
        let layout = Layout::from_size_align(size as usize, align as usize)
            .map_err(|_| AddrError::BadSize { size })?;
        // SAFETY: `layout` has a non-zero size (checked above).
        let raw = unsafe { alloc::alloc::alloc_zeroed(layout) };
        let buf = NonNull::new(raw).ok_or(AddrError::OutOfFrames)?;
        let frames = size / FRAME;
        Ok(SimPhysMemory {
            buf,
            layout,
            base: self.base,
            size,
            zero_on_alloc: self.zero_on_alloc,
            state: Mutex::new(State {
                bitmap: vec![0; frames.div_ceil(64) as usize],
                live: BTreeMap::new(),
                in_use: 0,
                peak: 0,
                allocations: 0,
                deallocations: 0,
                fail_after: None,
            }),
        })
    }
}

impl SimPhysMemory {
    /// Returns a builder with the defaults (4 MiB at physical address 0, zeroing on).
    pub fn builder() -> SimPhysMemoryBuilder {
        SimPhysMemoryBuilder {
            size: 4 << 20,
            base: PhysAddr::zero(),
            zero_on_alloc: true,
        }
    }

    /// Returns the physical address of the first byte.
    pub fn base(&self) -> PhysAddr {
        self.base
    }

    /// Returns the size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size
    }

    /// Returns the alignment of the host buffer in bytes.
    pub fn host_align(&self) -> u64 {
        self.layout.align() as u64
    }

    /// Returns whether `[pa, pa + len)` lies inside the simulated memory.
    pub fn contains(&self, pa: PhysAddr, len: u64) -> bool {
        self.offset_of(pa, len).is_some()
    }

    /// Returns the buffer offset of `pa` if `[pa, pa + len)` is inside.
    fn offset_of(&self, pa: PhysAddr, len: u64) -> Option<u64> {
        let off = pa.checked_offset_from(self.base)?;
        (off.checked_add(len)? <= self.size).then_some(off)
    }

    /// Returns a pointer to buffer offset `off`.
    ///
    /// `off <= self.size` must hold (checked by `offset_of`).
    fn ptr_at(&self, off: u64) -> NonNull<u8> {
        // SAFETY: `off <= size` by the caller's check, so the result is inside the allocation or
        // one past its end; `size` fits in `isize` because `Layout` accepted it.
        unsafe { self.buf.add(off as usize) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is updated only after every check passes, so it is consistent even if a
        // thread panicked while holding the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns the number of 4 KiB frames.
    pub fn total_frames(&self) -> u64 {
        self.size / FRAME
    }

    /// Returns the number of allocated 4 KiB frames.
    pub fn frames_in_use(&self) -> u64 {
        self.lock().in_use
    }

    /// Returns the highest [`frames_in_use`](Self::frames_in_use) seen so far.
    pub fn peak_frames_in_use(&self) -> u64 {
        self.lock().peak
    }

    /// Returns the number of successful allocations so far.
    pub fn allocations(&self) -> u64 {
        self.lock().allocations
    }

    /// Returns the number of successful deallocations so far.
    pub fn deallocations(&self) -> u64 {
        self.lock().deallocations
    }

    /// Returns the number of live allocations.
    pub fn live_allocations(&self) -> usize {
        self.lock().live.len()
    }

    /// Arms or disarms fault injection: with `Some(n)` the next `n` successful allocations go
    /// through, then every allocation fails with [`AddrError::InjectedFailure`] until
    /// `fail_after(None)`. Allocations that fail for other reasons do not use up `n`.
    pub fn fail_after(&self, n: Option<u64>) {
        self.lock().fail_after = n;
    }

    /// Returns a cheap, copyable [`FrameAllocator`] handle that allocates from this memory.
    pub fn frame_allocator(&self) -> SimFrameAllocator<'_> {
        SimFrameAllocator { sim: self }
    }

    /// Allocates frames (first fit, alignment measured on physical addresses); see
    /// [`FrameAllocator::allocate`].
    ///
    /// # Errors
    ///
    /// - [`AddrError::InjectedFailure`] if fault injection is armed and used up.
    /// - [`AddrError::OutOfFrames`] if no free run satisfies the request.
    pub fn allocate(&self, request: FrameRequest) -> Result<PhysAddr, AddrError> {
        let mut st = self.lock();
        if st.fail_after == Some(0) {
            return Err(AddrError::InjectedFailure);
        }
        let frames = request.bytes() / FRAME;
        let align = request.align().bytes();
        let base = self.base.as_u64();
        let total = self.total_frames();
        let step = align / FRAME;
        // First frame index whose physical address is `align`-aligned.
        let first_aligned = base
            .div_ceil(align)
            .checked_mul(align)
            .ok_or(AddrError::OutOfFrames)?;
        let mut idx = (first_aligned - base) / FRAME;
        let found = loop {
            if idx.checked_add(frames).is_none_or(|end| end > total) {
                return Err(AddrError::OutOfFrames);
            }
            match st.last_used_in(idx, frames) {
                None => break idx,
                Some(used) => idx += (used + 1 - idx).div_ceil(step) * step,
            }
        };
        st.set_range(found, frames, true);
        st.in_use += frames;
        st.peak = st.peak.max(st.in_use);
        st.allocations += 1;
        st.fail_after = st.fail_after.map(|n| n - 1);
        let pa = base + found * FRAME;
        st.live.insert(pa, frames);
        if self.zero_on_alloc {
            // SAFETY: the run `found..found + frames` is inside the buffer (checked against
            // `total`), was free, so by `deallocate`'s contract nobody accesses it, and the safe
            // accessors are excluded by the lock we hold.
            unsafe {
                self.ptr_at(found * FRAME)
                    .write_bytes(0, request.bytes() as usize)
            };
        }
        Ok(PhysAddr::from_raw_unchecked(pa))
    }

    /// Frees frames from [`allocate`](Self::allocate); see [`FrameAllocator::deallocate`].
    ///
    /// # Errors
    ///
    /// - [`AddrError::Misaligned`] if `start` is not a multiple of the request's frame size.
    /// - [`AddrError::OutOfRange`] if the range is not inside the simulated memory.
    /// - [`AddrError::NotAllocated`] if no live allocation of `request.bytes()` starts at
    ///   `start` (double free, unknown frames, or a size mismatch).
    ///
    /// # Safety
    ///
    /// - Nothing uses the frames after this call.
    pub unsafe fn deallocate(
        &self,
        start: PhysAddr,
        request: FrameRequest,
    ) -> Result<(), AddrError> {
        let align = request.size().bytes();
        if !start.is_aligned(align) {
            return Err(AddrError::Misaligned {
                addr: start.as_u64(),
                align,
            });
        }
        if !self.contains(start, request.bytes()) {
            return Err(AddrError::OutOfRange {
                addr: start.as_u64(),
                len: request.bytes(),
            });
        }
        let frames = request.bytes() / FRAME;
        let mut st = self.lock();
        if st.live.get(&start.as_u64()) != Some(&frames) {
            return Err(AddrError::NotAllocated {
                addr: start.as_u64(),
            });
        }
        st.live.remove(&start.as_u64());
        st.set_range((start.as_u64() - self.base.as_u64()) / FRAME, frames, false);
        st.in_use -= frames;
        st.deallocations += 1;
        Ok(())
    }

    /// Copies the bytes at `pa` into `out`.
    ///
    /// Safe accesses are serialised with each other and with zeroing on allocation; they are
    /// not synchronised with accesses through [`phys_to_ptr`](PhysMapper::phys_to_ptr)
    /// pointers, whose users must avoid races.
    ///
    /// # Errors
    ///
    /// - [`AddrError::OutOfRange`] if `[pa, pa + out.len())` is not inside the memory.
    pub fn read_bytes(&self, pa: PhysAddr, out: &mut [u8]) -> Result<(), AddrError> {
        let len = out.len() as u64;
        let off = self.offset_of(pa, len).ok_or(AddrError::OutOfRange {
            addr: pa.as_u64(),
            len,
        })?;
        let _guard = self.lock();
        // SAFETY: the source is inside the buffer (checked), the destination is a live `&mut`
        // slice of the same length; `copy` tolerates overlap; the lock excludes racing safe
        // accessors.
        unsafe { core::ptr::copy(self.ptr_at(off).as_ptr(), out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Copies `data` to the bytes at `pa` (see [`read_bytes`](Self::read_bytes) on races).
    ///
    /// # Errors
    ///
    /// - [`AddrError::OutOfRange`] if `[pa, pa + data.len())` is not inside the memory.
    pub fn write_bytes(&self, pa: PhysAddr, data: &[u8]) -> Result<(), AddrError> {
        let len = data.len() as u64;
        let off = self.offset_of(pa, len).ok_or(AddrError::OutOfRange {
            addr: pa.as_u64(),
            len,
        })?;
        let _guard = self.lock();
        // SAFETY: the destination is inside the buffer (checked) and the buffer is only
        // reached through raw pointers; `copy` tolerates overlap; the lock excludes racing safe
        // accessors.
        unsafe { core::ptr::copy(data.as_ptr(), self.ptr_at(off).as_ptr(), data.len()) };
        Ok(())
    }

    /// Reads the host-endian `u64` at `pa` (any alignment).
    ///
    /// # Errors
    ///
    /// - [`AddrError::OutOfRange`] if the 8 bytes are not inside the memory.
    pub fn read_u64(&self, pa: PhysAddr) -> Result<u64, AddrError> {
        let mut bytes = [0; 8];
        self.read_bytes(pa, &mut bytes)?;
        Ok(u64::from_ne_bytes(bytes))
    }

    /// Writes the host-endian `u64` at `pa` (any alignment).
    ///
    /// # Errors
    ///
    /// - [`AddrError::OutOfRange`] if the 8 bytes are not inside the memory.
    pub fn write_u64(&self, pa: PhysAddr, value: u64) -> Result<(), AddrError> {
        self.write_bytes(pa, &value.to_ne_bytes())
    }
}

impl Drop for SimPhysMemory {
    fn drop(&mut self) {
        // SAFETY: `buf` came from `alloc_zeroed(self.layout)` and is freed only here.
        unsafe { alloc::alloc::dealloc(self.buf.as_ptr(), self.layout) };
    }
}

// SAFETY: the buffer is owned by this value alone (like a `Box<[u8]>`), so moving it to
// another thread is fine.
unsafe impl Send for SimPhysMemory {}

// SAFETY: shared access touches the buffer only through the safe accessors and zeroing, which
// hold the mutex, or through `phys_to_ptr` pointers, whose users take on the no-data-race
// obligation by dereferencing raw pointers (an `unsafe` operation). The allocator state is in
// the mutex.
unsafe impl Sync for SimPhysMemory {}

impl fmt::Debug for SimPhysMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimPhysMemory")
            .field("base", &self.base)
            .field("size", &format_args!("{:#x}", self.size))
            .field("frames_in_use", &self.frames_in_use())
            .finish_non_exhaustive()
    }
}

// SAFETY: the pointer is `buf + (pa - base)` for a range checked to lie inside the buffer,
// which lives until `self` is dropped (it cannot be while borrowed); distinct offsets give
// distinct bytes; `buf` is aligned to `host_align >= 4 KiB` and `base` is a multiple of it, so
// the pointer and `pa` agree modulo 4 KiB.
unsafe impl PhysMapper for SimPhysMemory {
    #[inline]
    fn phys_to_ptr(&self, pa: PhysAddr, len: usize) -> Result<NonNull<u8>, AddrError> {
        let off = self
            .offset_of(pa, len as u64)
            .ok_or(AddrError::OutOfRange {
                addr: pa.as_u64(),
                len: len as u64,
            })?;
        Ok(self.ptr_at(off))
    }

    #[inline]
    unsafe fn phys_to_ptr_unchecked(&self, pa: PhysAddr, _len: usize) -> NonNull<u8> {
        // An earlier `phys_to_ptr` accepted the range (the caller's promise), so the offset is
        // inside the buffer.
        self.ptr_at(pa.as_u64().wrapping_sub(self.base.as_u64()))
    }
}

/// A copyable [`FrameAllocator`] handle onto a shared [`SimPhysMemory`].
///
/// # Examples (needs `std`)
///
/// See [`SimPhysMemory`].
#[derive(Clone, Copy, Debug)]
pub struct SimFrameAllocator<'a> {
    sim: &'a SimPhysMemory,
}

impl<'a> SimFrameAllocator<'a> {
    /// Returns the memory this handle allocates from.
    pub fn memory(self) -> &'a SimPhysMemory {
        self.sim
    }
}

// SAFETY: `SimPhysMemory::allocate` returns aligned runs inside its buffer that the bitmap marks
// as used until `deallocate` clears them, so no frame is handed out twice.
unsafe impl FrameAllocator for SimFrameAllocator<'_> {
    fn allocate(&mut self, request: FrameRequest) -> Result<PhysAddr, AddrError> {
        self.sim.allocate(request)
    }

    unsafe fn deallocate(
        &mut self,
        start: PhysAddr,
        request: FrameRequest,
    ) -> Result<(), AddrError> {
        // SAFETY: forwarded; our caller upholds the contract.
        unsafe { self.sim.deallocate(start, request) }
    }

    fn zeroes_frames(&self) -> bool {
        self.sim.zero_on_alloc
    }
}

// SAFETY: as for `SimFrameAllocator`.
unsafe impl FrameAllocator for &SimPhysMemory {
    fn allocate(&mut self, request: FrameRequest) -> Result<PhysAddr, AddrError> {
        SimPhysMemory::allocate(self, request)
    }

    unsafe fn deallocate(
        &mut self,
        start: PhysAddr,
        request: FrameRequest,
    ) -> Result<(), AddrError> {
        // SAFETY: forwarded; our caller upholds the contract.
        unsafe { SimPhysMemory::deallocate(self, start, request) }
    }

    fn zeroes_frames(&self) -> bool {
        self.zero_on_alloc
    }
}

#[cfg(test)]
mod tests;
