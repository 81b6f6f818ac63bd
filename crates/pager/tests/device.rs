//! The device pager: device frames mapped as they are, never paged out, never copied.
// Host tests: std is the natural choice.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use common::{PAGE, memory_of};
use machvm_addr::{PageSize, PhysAddr, VirtAddr, VmProt};
use machvm_pager::{DevicePager, DeviceRange, MemAttr, PagingError};
use machvm_vm_map::{FaultError, MapRequest, SoftPmap, VmMap};
use machvm_vm_object::{
    CopyStrategy, MemoryObject, ObjectError, PageIn, PageOutKind, PagerError, VmObject,
};

fn range(start: u64, len: u64) -> DeviceRange {
    DeviceRange {
        start: PhysAddr::new(start),
        len_bytes: len,
    }
}

#[test]
fn device_objects_hold_the_device_frames_wired() {
    let ranges = [range(0xfe00_0000, 2 * PAGE), range(0x0900_0000, PAGE)];
    let pager = DevicePager::new(&ranges, MemAttr::WriteCombining, PageSize::Size4KiB).unwrap();
    assert_eq!(
        (pager.size(), pager.attributes()),
        (3 * PAGE, MemAttr::WriteCombining)
    );
    assert_eq!(pager.frame_at(PAGE), Some(PhysAddr::new(0xfe00_1000)));
    assert_eq!(pager.frame_at(2 * PAGE), Some(PhysAddr::new(0x0900_0000)));
    assert_eq!(pager.frame_at(3 * PAGE), None);
    assert_eq!(pager.frame_at(5), None);
    let object = pager.object().unwrap();
    assert_eq!(object.copy_strategy(), CopyStrategy::None);
    let counts = object.page_counts();
    assert_eq!((counts.resident, counts.wired), (3, 3));
    for (off, frame) in [
        (0, 0xfe00_0000),
        (PAGE, 0xfe00_1000),
        (2 * PAGE, 0x0900_0000),
    ] {
        let page = VmObject::resolve(&object, off, VmProt::READ | VmProt::WRITE).unwrap();
        assert_eq!(page.frame, PhysAddr::new(frame));
        assert!(page.writable);
    }
    // Never paged out, and cleaning is a no-op.
    assert_eq!(
        object.page_out(0),
        Err(ObjectError::PageWired { offset: 0 })
    );
    assert_eq!(object.synchronize(0, 3 * PAGE), Ok(3));
    object.unwire_page(0).unwrap();
    assert_eq!(
        object.page_out(0),
        Err(ObjectError::Pager(PagerError::Unsupported))
    );
    assert!(object.page(0).unwrap().is_some());
    assert_eq!(pager.data_return(0, &[0; 4096], PageOutKind::Clean), Ok(()));
    assert_eq!(
        pager.data_request(0, &mut [0; 4096], VmProt::READ),
        Err(PagerError::Unsupported)
    );
    assert!(!pager.has_page(2 * PAGE), "no copy besides the device page");
    let _ = PageIn::Filled;
}

#[test]
fn device_memory_is_never_copied() {
    let pager = DevicePager::new(
        &[range(0x1000_0000, 2 * PAGE)],
        MemAttr::Device,
        PageSize::Size4KiB,
    )
    .unwrap();
    let object = pager.object().unwrap();
    assert_eq!(
        VmObject::copy(&object, 0, 2 * PAGE).unwrap_err(),
        ObjectError::NoMemory
    );
    // A copy-on-write shadow cannot copy a device page up.
    let shadow = VmObject::shadow_of(&object, 0, 2 * PAGE).unwrap();
    let read = VmObject::resolve(&shadow, 0, VmProt::READ).unwrap();
    assert_eq!(
        (read.frame, read.writable),
        (PhysAddr::new(0x1000_0000), false)
    );
    assert_eq!(
        VmObject::resolve(&shadow, 0, VmProt::WRITE).unwrap_err(),
        ObjectError::NoMemory
    );
    // Through a map: a shared mapping maps the device frame; a private one cannot copy it.
    let m = memory_of(1 << 20);
    let mut map = VmMap::new(
        PageSize::Size4KiB,
        VirtAddr::new(0x10_0000),
        VirtAddr::new(0x20_0000),
        m.clone(),
        SoftPmap::new(PAGE),
    )
    .unwrap();
    let shared = map
        .enter(MapRequest::shared(object.clone(), 0, 2 * PAGE))
        .unwrap();
    let f = map
        .fault(VirtAddr::new(shared.as_u64() + PAGE), VmProt::WRITE)
        .unwrap();
    assert_eq!(f.frame, PhysAddr::new(0x1000_1000));
    let private = map
        .enter(MapRequest::private(object.clone(), 0, 2 * PAGE))
        .unwrap();
    assert!(matches!(
        map.fault(private, VmProt::WRITE),
        Err(FaultError::Object(ObjectError::NoMemory))
    ));
    drop(map);
    drop(shadow);
    // Dropping the object gives no device frame to the page allocator.
    let frames = m.memory().frames_in_use();
    drop(object);
    assert_eq!(m.memory().frames_in_use(), frames);
}

#[test]
fn device_ranges_are_validated() {
    let ps = PageSize::Size4KiB;
    assert_eq!(
        DevicePager::new(&[], MemAttr::Device, ps).unwrap_err(),
        PagingError::BadRange { start: 0, len: 0 }
    );
    assert_eq!(
        DevicePager::new(&[range(0x1000, 0)], MemAttr::Device, ps).unwrap_err(),
        PagingError::BadRange {
            start: 0x1000,
            len: 0
        }
    );
    assert_eq!(
        DevicePager::new(&[range(0x1800, PAGE)], MemAttr::Device, ps).unwrap_err(),
        PagingError::Unaligned { value: 0x1800 }
    );
    assert_eq!(
        DevicePager::new(&[range(0x1000, 100)], MemAttr::Device, ps).unwrap_err(),
        PagingError::Unaligned { value: 100 }
    );
    assert_eq!(
        DevicePager::new(
            &[range(0x1000, 2 * PAGE), range(0x2000, PAGE)],
            MemAttr::Device,
            ps
        )
        .unwrap_err(),
        PagingError::BadRange {
            start: 0x2000,
            len: PAGE
        }
    );
    let top = (1u64 << 52) - PAGE;
    assert!(matches!(
        DevicePager::new(&[range(top, 2 * PAGE)], MemAttr::Device, ps),
        Err(PagingError::BadRange { .. })
    ));
    assert!(matches!(
        DevicePager::new(&[range(0, PAGE)], MemAttr::Device, PageSize::Size2MiB),
        Err(PagingError::PageSizeMismatch { .. })
    ));
    let p16 = DevicePager::new(
        &[range(0x4000, 0x8000)],
        MemAttr::WriteBack,
        PageSize::Size16KiB,
    )
    .unwrap();
    assert_eq!(p16.object().unwrap().page_counts().wired, 2);
}
