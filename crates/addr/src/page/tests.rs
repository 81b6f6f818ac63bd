use alloc::format;
use alloc::vec::Vec;

use super::*;
use crate::size::{Size1GiB, Size2MiB};

fn page(raw: u64) -> Page {
    Page::from_start_address(VirtAddr::new(raw)).unwrap()
}

#[test]
fn from_start_address_rejects_misaligned() {
    assert_eq!(
        Page::<Size2MiB>::from_start_address(VirtAddr::new(0x1000)),
        Err(AddrError::Misaligned {
            addr: 0x1000,
            align: 0x20_0000
        })
    );
    assert_eq!(
        Page::<Size4KiB>::containing_address(VirtAddr::new(0x1fff)),
        page(0x1000)
    );
    assert_eq!(page(0x1000).size(), PageSize::Size4KiB);
}

#[test]
fn page_arithmetic_respects_canonical_space() {
    assert_eq!(page(0x1000).checked_add(1), Some(page(0x2000)));
    assert_eq!(page(0x1000).checked_sub(2), None);
    let top = page(0xffff_ffff_ffff_f000);
    assert_eq!(top.checked_add(1), None);
    assert_eq!(page(0x00ff_ffff_ffff_f000).checked_add(1), None);
    assert_eq!(page(0).checked_add(u64::MAX), None);
}

#[test]
fn range_new_rejects_backwards_and_hole_crossing() {
    assert_eq!(
        PageRange::new(page(0x3000), page(0x1000)),
        Err(AddrError::BackwardsRange {
            start: 0x3000,
            end: 0x1000
        })
    );
    assert_eq!(
        PageRange::new(page(0), page(0xff00_0000_0000_1000)),
        Err(AddrError::Overflow)
    );
    // Ending exactly at the top of the lower half is fine.
    let r = PageRange::new(page(0x00ff_ffff_ffff_e000), page(0xff00_0000_0000_0000));
    assert_eq!(r, Err(AddrError::Overflow));
    let r =
        PageRange::new_inclusive(page(0x00ff_ffff_ffff_e000), page(0x00ff_ffff_ffff_f000)).unwrap();
    assert_eq!(r.len_pages(), 2);
    assert_eq!(r.end(), None);
}

#[test]
fn range_at_top_of_address_space_iterates() {
    let start = page(0xffff_ffff_ffff_c000);
    let r = PageRange::from_start_and_count(start, 4).unwrap();
    assert_eq!(r.len_bytes(), 0x4000);
    assert_eq!(r.last(), Some(page(0xffff_ffff_ffff_f000)));
    assert_eq!(r.end(), None);
    let fwd: Vec<u64> = r.iter().map(|p| p.start_address().as_u64()).collect();
    assert_eq!(
        fwd,
        [
            0xffff_ffff_ffff_c000,
            0xffff_ffff_ffff_d000,
            0xffff_ffff_ffff_e000,
            0xffff_ffff_ffff_f000
        ]
    );
    let back: Vec<Page> = r.iter().rev().collect();
    assert_eq!(back.first(), Some(&page(0xffff_ffff_ffff_f000)));
    assert_eq!(
        PageRange::from_start_and_count(start, 5),
        Err(AddrError::Overflow)
    );
    assert_eq!(
        format!("{r:?}"),
        "PageRange[4KiB](0xffffffffffffc000..0x10000000000000000)"
    );
}

#[test]
fn whole_upper_half_in_1gib_pages() {
    let start = Page::<Size1GiB>::containing_address(VirtAddr::new(0xff00_0000_0000_0000));
    let r = PageRange::from_start_and_count(start, 1 << 26).unwrap();
    assert_eq!(r.len_bytes(), 1 << 56);
    assert_eq!(r.iter().len(), 1 << 26);
    assert_eq!(
        r.iter().last().map(Page::start_address),
        Some(VirtAddr::new(0xffff_ffff_c000_0000))
    );
    assert_eq!(
        PageRange::from_start_and_count(start, (1 << 26) + 1),
        Err(AddrError::Overflow)
    );
}

#[test]
fn covering_includes_partial_pages() {
    let r: PageRange = PageRange::covering(VirtAddr::new(0x1fff), 2).unwrap();
    assert_eq!((r.start(), r.len_pages()), (page(0x1000), 2));
    let r: PageRange = PageRange::covering(VirtAddr::new(0x1000), 0x1000).unwrap();
    assert_eq!(r.len_pages(), 1);
    let r: PageRange = PageRange::covering(VirtAddr::new(0x1234), 0).unwrap();
    assert!(r.is_empty());
    assert_eq!(r.start(), page(0x1000));
    assert_eq!(r.last(), None);
    let top: PageRange = PageRange::covering(VirtAddr::new(0xffff_ffff_ffff_fff0), 0x10).unwrap();
    assert_eq!(top.len_pages(), 1);
    assert_eq!(
        PageRange::<Size4KiB>::covering(VirtAddr::new(0xffff_ffff_ffff_fff0), 0x11),
        Err(AddrError::Overflow)
    );
    assert_eq!(
        PageRange::<Size4KiB>::covering(VirtAddr::new(0x00ff_ffff_ffff_fff0), 0x11),
        Err(AddrError::Overflow)
    );
}

#[test]
fn iterator_is_exact_double_ended_and_fused() {
    let r = PageRange::from_start_and_count(page(0x1000), 5).unwrap();
    let mut it = r.iter();
    assert_eq!(it.size_hint(), (5, Some(5)));
    assert_eq!(it.next(), Some(page(0x1000)));
    assert_eq!(it.next_back(), Some(page(0x5000)));
    assert_eq!(it.len(), 3);
    assert_eq!(it.nth(1), Some(page(0x3000)));
    assert_eq!(it.nth_back(0), Some(page(0x4000)));
    assert_eq!(it.next(), None);
    assert_eq!(it.next_back(), None);
    assert_eq!(it.next(), None);
    let mut it = r.iter();
    assert_eq!(it.nth(10), None);
    assert_eq!(it.len(), 0);
    let mut it = r.iter();
    assert_eq!(it.nth_back(4), Some(page(0x1000)));
    assert_eq!(it.next(), None);
}

#[test]
fn contains_checks_bounds() {
    let r = PageRange::from_start_and_count(page(0x10_0000), 3).unwrap();
    assert!(r.contains(page(0x10_0000)));
    assert!(r.contains(page(0x10_2000)));
    assert!(!r.contains(page(0x10_3000)));
    assert!(!r.contains(page(0xf_f000)));
    assert!(!PageRange::empty(page(0x1000)).contains(page(0x1000)));
}

#[test]
fn frame_ranges_stop_below_2_pow_52() {
    let last: Frame = Frame::containing_address(PhysAddr::MAX);
    let r = FrameRange::from_start_and_count(last, 1).unwrap();
    assert_eq!(r.end(), None);
    assert_eq!(
        FrameRange::from_start_and_count(last, 2),
        Err(AddrError::Overflow)
    );
    assert_eq!(
        FrameRange::<Size4KiB>::covering(PhysAddr::MAX, 2),
        Err(AddrError::Overflow)
    );
    let r = FrameRange::new(
        Frame::<Size4KiB>::containing_address(PhysAddr::new(0)),
        last,
    )
    .unwrap();
    assert_eq!(r.len_pages(), (1 << 40) - 1);
    assert_eq!(
        r.iter().next_back(),
        Frame::containing_address(PhysAddr::new(0xf_ffff_ffff_e000)).into()
    );
}

#[test]
fn dyn_units_convert_to_and_from_fixed() {
    let p = DynPage::new(VirtAddr::new(0x4000_0000), PageSize::Size1GiB).unwrap();
    assert_eq!(
        p.try_into_fixed::<Size1GiB>().map(Page::start_address),
        Some(VirtAddr::new(0x4000_0000))
    );
    assert_eq!(p.try_into_fixed::<Size2MiB>(), None);
    assert_eq!(
        DynPage::new(VirtAddr::new(0x1000), PageSize::Size2MiB),
        Err(AddrError::Misaligned {
            addr: 0x1000,
            align: 0x20_0000
        })
    );
    let f = DynFrame::from(Frame::<Size2MiB>::containing_address(PhysAddr::new(
        0x20_1000,
    )));
    assert_eq!(f.size(), PageSize::Size2MiB);
    assert_eq!(f.start_address(), PhysAddr::new(0x20_0000));
    assert_eq!(format!("{p:?}"), "DynPage[1GiB](0x40000000)");
}
