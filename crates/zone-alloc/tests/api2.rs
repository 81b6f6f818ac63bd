//! The `allocator-api2` adapter: allocator-aware `Vec` and `Box` over a kalloc heap and over a
//! zone, growth in place within a class, refused layouts, and statistics that return to zero.
#![cfg(feature = "allocator-api2")]
// Host tests: std is the natural choice.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::alloc::Layout;

use allocator_api2::alloc::Allocator;
use allocator_api2::boxed::Box;
use allocator_api2::vec::Vec;
use machvm_sync::{CpuIndex, ThreadCpuId};
use machvm_zone_alloc::{Kalloc, NoCpuCache, SystemPages, Zone, ZoneConfig, ZoneFlags};

fn live(heap: &Kalloc<'_, SystemPages, impl machvm_zone_alloc::CpuLocal, 2>) -> usize {
    heap.zone_stats().map(|s| s.in_use).sum::<usize>() + heap.large_stats().live
}

#[test]
fn vec_and_box_in_a_kalloc_heap() {
    let pages = SystemPages::new();
    let cpus = ThreadCpuId::new();
    let _bound = cpus.bind(CpuIndex::new(0)).expect("bind CPU 0");
    let heap: Kalloc<'_, _, _, 2> =
        Kalloc::with_flags("api2", &pages, &cpus, 0x5eed, ZoneFlags::HARDENED).expect("heap");
    {
        let n = if cfg!(miri) { 300 } else { 20_000 };
        let mut v: Vec<u64, _> = Vec::new_in(&heap);
        for i in 0..n {
            v.push(i);
        }
        // Past 32 KiB the vector lives in a large block from the page source.
        assert!(v.capacity() * 8 > 32 << 10 || cfg!(miri));
        assert!(v.iter().copied().eq(0..n));
        v.truncate(3);
        v.shrink_to_fit();
        assert_eq!(&v[..], &[0, 1, 2]);

        let b = Box::new_in([7_u8; 100], &heap);
        assert!(b.iter().all(|&x| x == 7));
        let s = Box::new_in(String::from("zone"), &heap);
        assert_eq!(s.as_str(), "zone");
        assert!(live(&heap) >= 3);
    }
    assert_eq!(live(&heap), 0);
}

#[test]
fn kalloc_grows_in_place_within_a_class_and_copies_across() {
    let pages = SystemPages::new();
    let heap: Kalloc<'_, _, _, 2> = Kalloc::new("api2", &pages, &NoCpuCache, 1).expect("heap");
    let small = Layout::from_size_align(100, 8).expect("layout");
    let p = heap.allocate(small).expect("allocate");
    assert_eq!(p.len(), 100);
    let base = p.cast::<u8>();
    // SAFETY: `p` is 100 writable bytes of ours.
    unsafe { base.as_ptr().write_bytes(0x5a, 100) };
    // 100 -> 120 bytes: the same 128-byte class, so the same block.
    let grown = Layout::from_size_align(120, 8).expect("layout");
    // SAFETY: `base` is live with `small`, 120 >= 100.
    let q = unsafe { heap.grow(base, small, grown) }.expect("grow");
    assert_eq!(q.cast::<u8>(), base);
    // 120 -> 5000 bytes, and a larger alignment: a new block with the contents.
    let big = Layout::from_size_align(5000, 64).expect("layout");
    // SAFETY: live with `grown`, 5000 >= 120.
    let r = unsafe { heap.grow(base, grown, big) }.expect("grow");
    assert_eq!(r.len(), 5000);
    let r = r.cast::<u8>();
    assert_eq!(r.as_ptr().addr() % 64, 0);
    // SAFETY: the first 100 bytes were copied.
    assert!((0..100).all(|i| unsafe { r.as_ptr().add(i).read() } == 0x5a));
    let tiny = Layout::from_size_align(10, 64).expect("layout");
    // SAFETY: live with `big`, 10 <= 5000.
    let t = unsafe { heap.shrink(r, big, tiny) }.expect("shrink");
    // SAFETY: live with `tiny`.
    unsafe { heap.deallocate(t.cast(), tiny) };
    assert_eq!(live(&heap), 0);
}

#[test]
fn a_zone_serves_layouts_that_fit_one_element() {
    let zone: Zone<_, _, 1> = Zone::new(
        ZoneConfig::new("api2.node", 48)
            .align(16)
            .flags(ZoneFlags::HARDENED),
        SystemPages::new(),
        NoCpuCache,
    )
    .expect("zone");
    assert!(zone.element_align() >= 16);
    #[derive(Debug, PartialEq)]
    struct Node {
        key: u64,
        next: Option<u32>,
        data: [u8; 24],
    }
    {
        let a = Box::new_in(
            Node {
                key: 1,
                next: None,
                data: [3; 24],
            },
            &zone,
        );
        let b = Box::new_in(
            Node {
                key: 2,
                next: Some(1),
                data: [4; 24],
            },
            &zone,
        );
        assert_eq!((a.key, b.next, b.data[23]), (1, Some(1), 4));
        assert_eq!(zone.stats().in_use, 2);
    }
    assert_eq!(zone.stats().in_use, 0);

    // Too large, or aligned beyond what the elements have: refused, nothing allocated.
    assert!(zone.allocate(Layout::new::<[u8; 49]>()).is_err());
    let over = Layout::from_size_align(16, 4096).expect("layout");
    assert!(zone.allocate(over).is_err());
    // A small vector fits one element (and grows in place up to it), then can grow no further.
    let mut v: Vec<u8, _> = Vec::with_capacity_in(8, &zone);
    v.extend_from_slice(&[1; 8]);
    assert!(v.try_reserve_exact(40).is_ok());
    assert!(v.try_reserve_exact(41).is_err());
    assert_eq!(&v[..], &[1; 8]);
    drop(v);
    assert_eq!(zone.stats().in_use, 0);
}

#[test]
fn a_read_only_zone_refuses() {
    let zone: Zone<_, _, 1> = Zone::new(
        ZoneConfig::new("api2.ro", 32).flags(ZoneFlags::READ_ONLY),
        SystemPages::new(),
        NoCpuCache,
    )
    .expect("zone");
    assert!(zone.allocate(Layout::new::<u64>()).is_err());
    assert_eq!(zone.stats().alloc_count, 0);
}
