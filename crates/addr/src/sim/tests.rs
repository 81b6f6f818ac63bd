use alloc::sync::Arc;
use alloc::vec::Vec;
use std::thread;

use super::*;
use crate::page::Frame;
use crate::size::{Size2MiB, Size4KiB};

fn sim(size: u64) -> SimPhysMemory {
    SimPhysMemory::builder().size_bytes(size).build().unwrap()
}

#[test]
fn builder_validates_size_and_base() {
    let b = || SimPhysMemory::builder();
    assert_eq!(
        b().size_bytes(0).build().err(),
        Some(AddrError::BadSize { size: 0 })
    );
    assert_eq!(
        b().size_bytes(0x1800).build().err(),
        Some(AddrError::BadSize { size: 0x1800 })
    );
    assert_eq!(
        b().size_bytes(1 << 20)
            .base(PhysAddr::new(0x8_0000))
            .build()
            .err(),
        Some(AddrError::Misaligned {
            addr: 0x8_0000,
            align: 1 << 20
        })
    );
    assert_eq!(
        b().size_bytes(1 << 20)
            .base(PhysAddr::new(0xf_ffff_fff0_0000))
            .build()
            .map(|s| s.base()),
        Ok(PhysAddr::new(0xf_ffff_fff0_0000))
    );
    assert_eq!(
        b().size_bytes(2 << 20)
            .base(PhysAddr::new(0xf_ffff_ffe0_0000 + (1 << 20)))
            .build()
            .err(),
        Some(AddrError::Overflow)
    );
    let s = b()
        .size_bytes(3 << 20)
        .base(PhysAddr::new(0x4000_0000))
        .build()
        .unwrap();
    assert_eq!(
        (s.size_bytes(), s.total_frames(), s.host_align()),
        (3 << 20, 768, 4 << 20)
    );
    assert_eq!(
        s.phys_to_ptr(s.base(), 1).unwrap().as_ptr().addr() % (4 << 20),
        0
    );
}

#[test]
fn allocations_are_aligned_disjoint_and_counted() {
    let s = sim(4 << 20);
    let a = s
        .allocate(FrameRequest::single(PageSize::Size4KiB))
        .unwrap();
    let b = s
        .allocate(FrameRequest::single(PageSize::Size2MiB))
        .unwrap();
    let c = s
        .allocate(
            FrameRequest::new(PageSize::Size4KiB, 3)
                .unwrap()
                .with_align(PageSize::Size64KiB)
                .unwrap(),
        )
        .unwrap();
    assert_eq!(a, PhysAddr::new(0));
    assert_eq!(b, PhysAddr::new(0x20_0000));
    assert_eq!(c, PhysAddr::new(0x1_0000));
    assert_eq!(s.frames_in_use(), 1 + 512 + 3);
    assert_eq!(s.allocations(), 3);
    // Only 2 MiB - 68 KiB remain below b: another 2 MiB frame does not fit.
    assert_eq!(
        s.allocate(FrameRequest::single(PageSize::Size2MiB)),
        Err(AddrError::OutOfFrames)
    );
    assert_eq!(s.allocations(), 3);
}

#[test]
fn alignment_is_measured_on_physical_addresses() {
    // 1 MiB of memory at 1 MiB: the only 2 MiB-aligned address would be 0 or 2 MiB.
    let s = SimPhysMemory::builder()
        .size_bytes(1 << 20)
        .base(PhysAddr::new(1 << 20))
        .build()
        .unwrap();
    let r = FrameRequest::single(PageSize::Size4KiB)
        .with_align(PageSize::Size2MiB)
        .unwrap();
    assert_eq!(s.allocate(r), Err(AddrError::OutOfFrames));
    let r = FrameRequest::single(PageSize::Size4KiB)
        .with_align(PageSize::Size1GiB)
        .unwrap();
    assert_eq!(s.allocate(r), Err(AddrError::OutOfFrames));
    let s = SimPhysMemory::builder()
        .size_bytes(1 << 20)
        .base(PhysAddr::new(3 << 20))
        .build()
        .unwrap();
    let r = FrameRequest::single(PageSize::Size4KiB)
        .with_align(PageSize::Size2MiB)
        .unwrap();
    assert_eq!(s.allocate(r), Err(AddrError::OutOfFrames));
    let s = SimPhysMemory::builder()
        .size_bytes(1 << 20)
        .base(PhysAddr::new(4 << 20))
        .build()
        .unwrap();
    assert_eq!(s.allocate(r), Ok(PhysAddr::new(4 << 20)));
}

#[test]
fn freed_frames_are_reused_and_zeroed() {
    let s = sim(1 << 20);
    let mut alloc = s.frame_allocator();
    let f: Frame<Size4KiB> = alloc.allocate_frame().unwrap();
    s.write_u64(f.start_address(), 0x1122_3344_5566_7788)
        .unwrap();
    // SAFETY: nothing uses the frame after this.
    unsafe { alloc.deallocate_frame(f).unwrap() };
    let g: Frame<Size4KiB> = alloc.allocate_frame().unwrap();
    assert_eq!(g, f);
    assert_eq!(s.read_u64(g.start_address()), Ok(0));
    assert_eq!(
        (s.allocations(), s.deallocations(), s.peak_frames_in_use()),
        (2, 1, 1)
    );
}

#[test]
fn zeroing_can_be_turned_off() {
    let s = SimPhysMemory::builder()
        .size_bytes(1 << 20)
        .zero_on_alloc(false)
        .build()
        .unwrap();
    let r = FrameRequest::single(PageSize::Size4KiB);
    let a = s.allocate(r).unwrap();
    s.write_u64(a, 42).unwrap();
    // SAFETY: nothing uses the frame after this.
    unsafe { s.deallocate(a, r).unwrap() };
    assert_eq!(s.allocate(r), Ok(a));
    assert_eq!(s.read_u64(a), Ok(42));
}

#[test]
fn bad_frees_are_typed_and_change_nothing() {
    let s = sim(1 << 20);
    let r = FrameRequest::new(PageSize::Size4KiB, 2).unwrap();
    let a = s.allocate(r).unwrap();
    let one = FrameRequest::single(PageSize::Size4KiB);
    // SAFETY: the frames freed below are not used by the test afterwards.
    unsafe {
        assert_eq!(
            s.deallocate(a, one),
            Err(AddrError::NotAllocated { addr: a.as_u64() })
        );
        assert_eq!(
            s.deallocate(PhysAddr::new(0x1001), one),
            Err(AddrError::Misaligned {
                addr: 0x1001,
                align: 0x1000
            })
        );
        assert_eq!(
            s.deallocate(PhysAddr::new(1 << 20), one),
            Err(AddrError::OutOfRange {
                addr: 1 << 20,
                len: 0x1000
            })
        );
        assert_eq!(
            s.deallocate(PhysAddr::new(0x8000), one),
            Err(AddrError::NotAllocated { addr: 0x8000 })
        );
        assert_eq!((s.frames_in_use(), s.deallocations()), (2, 0));
        assert_eq!(s.deallocate(a, r), Ok(()));
        assert_eq!(
            s.deallocate(a, r),
            Err(AddrError::NotAllocated { addr: a.as_u64() })
        );
    }
    assert_eq!(
        (s.frames_in_use(), s.deallocations(), s.live_allocations()),
        (0, 1, 0)
    );
}

#[test]
fn fail_after_injects_failures_until_reset() {
    let s = sim(1 << 20);
    let r = FrameRequest::single(PageSize::Size4KiB);
    s.fail_after(Some(2));
    assert!(s.allocate(r).is_ok());
    assert!(s.allocate(r).is_ok());
    assert_eq!(s.allocate(r), Err(AddrError::InjectedFailure));
    assert_eq!(s.allocate(r), Err(AddrError::InjectedFailure));
    assert_eq!((s.allocations(), s.frames_in_use()), (2, 2));
    s.fail_after(None);
    assert!(s.allocate(r).is_ok());
    s.fail_after(Some(0));
    assert_eq!(s.allocate(r), Err(AddrError::InjectedFailure));
}

#[test]
fn exhausts_and_recovers() {
    let s = sim(64 << 10);
    let r = FrameRequest::single(PageSize::Size4KiB);
    let all: Vec<PhysAddr> = (0..16).map(|_| s.allocate(r).unwrap()).collect();
    assert_eq!(s.allocate(r), Err(AddrError::OutOfFrames));
    // SAFETY: the frame is not used afterwards.
    unsafe { s.deallocate(all[7], r).unwrap() };
    assert_eq!(s.allocate(r), Ok(all[7]));
}

#[test]
fn accessors_are_bounds_checked() {
    let s = sim(64 << 10);
    let end = PhysAddr::new(64 << 10);
    assert!(s.contains(PhysAddr::new(0), 64 << 10));
    assert!(s.contains(end, 0));
    assert!(!s.contains(end, 1));
    assert_eq!(
        s.read_u64(PhysAddr::new((64 << 10) - 4)),
        Err(AddrError::OutOfRange {
            addr: (64 << 10) - 4,
            len: 8
        })
    );
    assert!(
        s.write_bytes(PhysAddr::new((64 << 10) - 2), &[1, 2])
            .is_ok()
    );
    let mut buf = [0; 3];
    assert!(
        s.read_bytes(PhysAddr::new((64 << 10) - 2), &mut buf)
            .is_err()
    );
    s.read_bytes(PhysAddr::new((64 << 10) - 3), &mut buf)
        .unwrap();
    assert_eq!(buf, [0, 1, 2]);
    s.write_u64(PhysAddr::new(0x13), 7).unwrap();
    assert_eq!(s.read_u64(PhysAddr::new(0x13)), Ok(7));
    assert!(s.phys_to_ptr(end, 1).is_err());
}

#[test]
fn pointers_stay_valid_across_other_accesses() {
    let s = sim(64 << 10);
    let a = s
        .phys_to_ptr(PhysAddr::new(0x1000), 8)
        .unwrap()
        .cast::<u64>();
    let b = s
        .phys_to_ptr(PhysAddr::new(0x2000), 8)
        .unwrap()
        .cast::<u64>();
    // SAFETY: both pointers are inside the buffer, 8-byte aligned, and not used concurrently.
    unsafe { a.write(1) };
    s.write_u64(PhysAddr::new(0x3000), 3).unwrap();
    // SAFETY: as above.
    unsafe { b.write(2) };
    // SAFETY: as above.
    assert_eq!(unsafe { a.read() }, 1);
    assert_eq!(s.read_u64(PhysAddr::new(0x2000)), Ok(2));
}

#[test]
fn shared_between_threads_without_overlap() {
    let s = Arc::new(sim(1 << 20));
    let handles: Vec<_> = (0..3u64)
        .map(|t| {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                let r = FrameRequest::single(PageSize::Size4KiB);
                let mut mine = Vec::new();
                for i in 0..8u64 {
                    let pa = s.allocate(r).unwrap();
                    s.write_u64(pa, t * 100 + i).unwrap();
                    mine.push((pa, t * 100 + i));
                }
                for &(pa, v) in &mine {
                    assert_eq!(s.read_u64(pa), Ok(v));
                    // SAFETY: this thread owns the frame and stops using it.
                    unsafe { s.deallocate(pa, r).unwrap() };
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(
        (s.frames_in_use(), s.allocations(), s.deallocations()),
        (0, 24, 24)
    );
    assert!(s.peak_frames_in_use() >= 8);
}

#[test]
fn typed_2mib_frames_through_reference_impl() {
    let s = sim(8 << 20);
    let mut alloc = &s;
    let f: Frame<Size2MiB> = alloc.allocate_frame().unwrap();
    assert!(f.start_address().is_aligned(2 << 20));
    assert_eq!(s.frames_in_use(), 512);
    // SAFETY: the frame is not used afterwards.
    unsafe { alloc.deallocate_frame(f).unwrap() };
    assert_eq!(s.frames_in_use(), 0);
    assert!(alloc::format!("{s:?}").contains("frames_in_use: 0"));
}
