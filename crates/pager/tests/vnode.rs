//! The vnode pager: faults read the file (clustered), page-outs and msync write it back, the end
//! of the file is respected, private mappings never reach it, mappings share its pages, clean
//! pages go first under pressure, I/O errors leave pages where they were; a real file through
//! vm-map's fault path.
// Host tests: std is the natural choice.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::sync::Arc;

use common::{PAGE, dyn_memory, memory_of, pattern, read_page, temp_dir, write_page};
use machvm_addr::{PageSize, PhysAddr, VirtAddr, VmProt};
use machvm_pager::{FileBacking, FileFaults, MemoryFile, PagingError, StdFile, VnodePager, evict};
use machvm_vm_map::{FaultError, MapRequest, SoftPmap, VmMap};
use machvm_vm_object::{
    CopyResult, FaultKind, MemoryObject, ObjectError, PageFlags, PageIn, PageOutKind,
    PageOutOutcome, PagerError, SimPageMemory, VmObject,
};

/// A file of `pages` pages, page `i` holding `pattern(i)`, plus `tail` more bytes.
fn contents(pages: u64, tail: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..pages).flat_map(|i| pattern(i, PAGE as usize)).collect();
    v.extend((0..tail).map(|i| (i % 200) as u8 + 1));
    v
}

fn file_page(data: &[u8], i: u64) -> Vec<u8> {
    let start = (i * PAGE) as usize;
    let mut page = vec![0u8; PAGE as usize];
    if start < data.len() {
        let end = (start + PAGE as usize).min(data.len());
        page[..end - start].copy_from_slice(&data[start..end]);
    }
    page
}

#[test]
fn faults_read_the_file_and_pages_past_its_end_are_zero() {
    let m = memory_of(1 << 20);
    let data = contents(2, 1808); // 10000 bytes: 3 pages, the last one partly past the end
    let vnode = VnodePager::with_cluster(MemoryFile::new(data.clone()), dyn_memory(&m), 1).unwrap();
    let object = vnode.object().unwrap();
    assert_eq!(object.size(), 3 * PAGE);
    for i in 0..3 {
        let (bytes, kind) = read_page(&m, &object, i * PAGE).unwrap();
        assert_eq!(kind, FaultKind::PageIn);
        assert_eq!(bytes, file_page(&data, i), "page {i}");
    }
    assert_eq!(
        VmObject::resolve(&object, 3 * PAGE, VmProt::READ).unwrap_err(),
        ObjectError::OutOfRange { offset: 3 * PAGE }
    );
    // Past the end of the file but inside an object made bigger: a hole of zeros.
    let big = VmObject::with_pager(5 * PAGE, vnode.clone(), dyn_memory(&m)).unwrap();
    let (bytes, kind) = read_page(&m, &big, 4 * PAGE).unwrap();
    assert_eq!((kind, bytes), (FaultKind::ZeroFill, vec![0; PAGE as usize]));
    let st = vnode.stats();
    assert_eq!(
        (st.page_ins, st.read_ahead),
        (3, 0),
        "the hole needed no read"
    );
}

#[test]
fn a_fault_reads_its_cluster_ahead_as_speculative_pages() {
    let m = memory_of(1 << 20);
    let data = contents(12, 0);
    let file = Arc::new(MemoryFile::new(data.clone()));
    let vnode = VnodePager::with_cluster(file.clone(), dyn_memory(&m), 4).unwrap();
    let object = vnode.object().unwrap();
    // Fault page 5: its cluster is pages 4..8.
    read_page(&m, &object, 5 * PAGE).unwrap();
    assert_eq!(file.io_counts().0, 1, "one read for the whole cluster");
    for i in [4, 6, 7] {
        assert_eq!(
            object.page(i * PAGE).unwrap().unwrap().flags,
            PageFlags::SPECULATIVE
        );
    }
    assert_eq!(object.page(8 * PAGE).unwrap(), None);
    assert_eq!(object.page_counts().speculative, 3);
    // A read-ahead page is found resident, its contents right, and stops being speculative.
    let (bytes, kind) = read_page(&m, &object, 6 * PAGE).unwrap();
    assert_eq!((kind, bytes), (FaultKind::Resident, file_page(&data, 6)));
    assert!(
        !object
            .page(6 * PAGE)
            .unwrap()
            .unwrap()
            .flags
            .contains(PageFlags::SPECULATIVE)
    );
    // A fault inside a half-resident cluster reads only the missing pages' span.
    object.free_page(7 * PAGE).unwrap();
    read_page(&m, &object, 7 * PAGE).unwrap();
    assert_eq!(file.io_counts().0, 2);
    let st = vnode.stats();
    assert_eq!((st.cluster_reads, st.read_ahead, st.page_ins), (2, 3, 2));
}

#[test]
fn page_out_writes_dirty_pages_back_and_drops_clean_ones() {
    let m = memory_of(1 << 20);
    let data = contents(4, 0);
    let file = Arc::new(MemoryFile::new(data.clone()));
    let vnode = VnodePager::with_cluster(file.clone(), dyn_memory(&m), 1).unwrap();
    let object = vnode.object().unwrap();
    write_page(&m, &object, 0, &[7; PAGE as usize]).unwrap();
    read_page(&m, &object, PAGE).unwrap();
    assert_eq!(object.page_out(PAGE), Ok(PageOutOutcome::Dropped));
    assert_eq!(object.page_out(0), Ok(PageOutOutcome::PagedOut));
    let now = file.contents();
    assert_eq!(&now[..PAGE as usize], &[7; PAGE as usize][..]);
    assert_eq!(&now[PAGE as usize..], &data[PAGE as usize..]);
    assert_eq!(vnode.stats().pages_written, 1);
    // Paged back in: the written data.
    assert_eq!(read_page(&m, &object, 0).unwrap().0, vec![7; PAGE as usize]);
}

#[test]
fn msync_writes_dirty_pages_and_makes_them_durable() {
    let m = memory_of(1 << 20);
    let file = Arc::new(MemoryFile::new(contents(4, 0)));
    let vnode = VnodePager::with_cluster(file.clone(), dyn_memory(&m), 1).unwrap();
    let object = vnode.object().unwrap();
    write_page(&m, &object, 2 * PAGE, &[9; PAGE as usize]).unwrap();
    assert_eq!(object.synchronize(0, 4 * PAGE), Ok(1));
    assert_eq!(file.io_counts().2, 1, "synced");
    assert_eq!(
        &file.contents()[2 * PAGE as usize..3 * PAGE as usize],
        &[9; PAGE as usize][..]
    );
    let page = object.page(2 * PAGE).unwrap().unwrap();
    assert!(
        !page.flags.contains(PageFlags::DIRTY),
        "clean and still resident"
    );
    assert_eq!(object.synchronize(0, 4 * PAGE), Ok(0), "nothing dirty left");
}

#[test]
fn mapped_writes_never_extend_the_file() {
    let m = memory_of(1 << 20);
    let data = contents(1, 100);
    let file = Arc::new(MemoryFile::new(data.clone()));
    let vnode = VnodePager::with_cluster(file.clone(), dyn_memory(&m), 1).unwrap();
    // An object larger than the file (a mapping past the end).
    let object = VmObject::with_pager(3 * PAGE, vnode.clone(), dyn_memory(&m)).unwrap();
    write_page(&m, &object, PAGE, &[5; PAGE as usize]).unwrap();
    write_page(&m, &object, 2 * PAGE, &[6; PAGE as usize]).unwrap();
    assert_eq!(object.synchronize(0, 3 * PAGE), Ok(2));
    let now = file.contents();
    assert_eq!(now.len(), data.len(), "the file did not grow");
    assert_eq!(
        &now[PAGE as usize..],
        &[5; 100][..],
        "only the bytes inside were written"
    );
    assert_eq!(vnode.stats().past_eof_dropped, 1);
    // Evicting the page past the end drops its data (the pager holds nothing there).
    assert_eq!(object.page_out(2 * PAGE), Ok(PageOutOutcome::PagedOut));
    assert_eq!(vnode.stats().past_eof_dropped, 2);
    assert_eq!(file.contents().len(), data.len());
}

#[test]
fn private_copies_never_reach_the_file() {
    let m = memory_of(1 << 20);
    let data = contents(4, 0);
    let file = Arc::new(MemoryFile::new(data.clone()));
    let vnode = VnodePager::new(file.clone(), dyn_memory(&m)).unwrap();
    let object = vnode.object().unwrap();
    // MAP_PRIVATE: a delayed copy of the file object, written through a shadow of it.
    let CopyResult::Delayed { object: copy, .. } = VmObject::copy(&object, 0, 4 * PAGE).unwrap()
    else {
        panic!("file objects copy delayed");
    };
    let private = VmObject::shadow_of(&copy, 0, 4 * PAGE).unwrap();
    assert_eq!(
        read_page(&m, &private, PAGE).unwrap().0,
        file_page(&data, 1)
    );
    assert_eq!(
        write_page(&m, &private, PAGE, &[0xee; PAGE as usize]).unwrap(),
        FaultKind::CopyOnWrite
    );
    assert_eq!(
        read_page(&m, &private, PAGE).unwrap().0,
        vec![0xee; PAGE as usize]
    );
    assert_eq!(read_page(&m, &object, PAGE).unwrap().0, file_page(&data, 1));
    assert_eq!(object.synchronize(0, 4 * PAGE), Ok(0));
    drop(private);
    drop(copy);
    for i in 0..4 {
        object.page_out(i * PAGE).ok();
    }
    assert_eq!(
        file.contents(),
        data,
        "the private write never reached the file"
    );
    // A shared write after the copy is pushed into the copy first: a private view taken
    // before it keeps the old contents.
    let CopyResult::Delayed { object: copy, .. } = VmObject::copy(&object, 0, 4 * PAGE).unwrap()
    else {
        panic!("file objects copy delayed");
    };
    write_page(&m, &object, 0, &[1; PAGE as usize]).unwrap();
    assert_eq!(read_page(&m, &copy, 0).unwrap().0, file_page(&data, 0));
}

/// Loads or stores `len` bytes at `va` like a CPU: through the pmap, faulting on a miss or a
/// missing right.
fn access(
    map: &mut VmMap<SoftPmap>,
    mem: &SimPageMemory,
    va: u64,
    write: Option<&[u8]>,
    out: &mut [u8],
) -> Result<(), FaultError> {
    let want = if write.is_some() {
        VmProt::WRITE
    } else {
        VmProt::READ
    };
    for _ in 0..4 {
        if let Some(t) = map.pmap().translate(VirtAddr::new(va)) {
            if t.prot.contains(want) {
                let pa = PhysAddr::new(t.frame.as_u64() + va % PAGE);
                match write {
                    Some(bytes) => mem.memory().write_bytes(pa, bytes).unwrap(),
                    None => mem.memory().read_bytes(pa, out).unwrap(),
                }
                return Ok(());
            }
        }
        map.fault(VirtAddr::new(va), want)?;
    }
    panic!("no progress at {va:#x}");
}

fn new_map(m: &Arc<SimPageMemory>) -> VmMap<SoftPmap> {
    VmMap::new(
        PageSize::Size4KiB,
        VirtAddr::new(0x10_0000),
        VirtAddr::new(0x10_0000 + 256 * PAGE),
        m.clone(),
        SoftPmap::new(PAGE),
    )
    .unwrap()
}

#[test]
fn two_mappings_share_the_file_cache() {
    let m = memory_of(1 << 20);
    let file = Arc::new(MemoryFile::new(contents(8, 0)));
    let vnode = VnodePager::new(file.clone(), dyn_memory(&m)).unwrap();
    let (mut a, mut b) = (new_map(&m), new_map(&m));
    let at_a = a
        .enter(MapRequest::shared(vnode.object().unwrap(), 0, 8 * PAGE))
        .unwrap();
    let at_b = b
        .enter(MapRequest::shared(vnode.object().unwrap(), 0, 8 * PAGE))
        .unwrap();
    let mut buf = [0u8; 8];
    access(
        &mut a,
        &m,
        at_a.as_u64() + 3 * PAGE + 16,
        Some(b"written!"),
        &mut [],
    )
    .unwrap();
    access(&mut b, &m, at_b.as_u64() + 3 * PAGE + 16, None, &mut buf).unwrap();
    assert_eq!(&buf, b"written!");
    let ta = a
        .pmap()
        .translate(VirtAddr::new(at_a.as_u64() + 3 * PAGE))
        .unwrap();
    let tb = b
        .pmap()
        .translate(VirtAddr::new(at_b.as_u64() + 3 * PAGE))
        .unwrap();
    assert_eq!(ta.frame, tb.frame, "one page in the cache");
    assert_eq!(file.io_counts().0, 1, "read once for both mappings");
    let object = vnode.object().unwrap();
    assert_eq!(
        Arc::strong_count(&object),
        3,
        "both entries hold the one object"
    );
}

#[test]
fn pressure_evicts_speculative_and_clean_pages_before_dirty_ones() {
    let m = memory_of(1 << 20);
    let file = Arc::new(MemoryFile::new(contents(8, 0)));
    let vnode = VnodePager::with_cluster(file.clone(), dyn_memory(&m), 4).unwrap();
    let object = vnode.object().unwrap();
    read_page(&m, &object, 0).unwrap(); // pages 1..4 come in speculatively
    read_page(&m, &object, 4 * PAGE).unwrap(); // and 5..8
    write_page(&m, &object, 0, &[1; PAGE as usize]).unwrap();
    write_page(&m, &object, 4 * PAGE, &[2; PAGE as usize]).unwrap();
    read_page(&m, &object, 5 * PAGE).unwrap(); // clean, referenced
    assert_eq!(object.page_counts().resident, 8);
    let stats = evict(&object, 5).unwrap();
    assert_eq!((stats.speculative, stats.clean, stats.dirty), (5, 0, 0));
    assert_eq!(file.io_counts().1, 0, "no write yet");
    let stats = evict(&object, 2).unwrap();
    assert_eq!((stats.speculative, stats.clean, stats.dirty), (0, 1, 1));
    assert_eq!(file.io_counts().1, 1);
    let stats = evict(&object, 10).unwrap();
    assert_eq!((stats.dirty, stats.freed()), (1, 1));
    assert_eq!(object.page_counts().resident, 0);
    assert_eq!(&file.contents()[..PAGE as usize], &[1; PAGE as usize][..]);
    assert_eq!(
        &file.contents()[4 * PAGE as usize..5 * PAGE as usize],
        &[2; PAGE as usize][..]
    );
}

#[test]
fn a_read_error_fails_the_fault_and_leaves_nothing_behind() {
    let m = memory_of(1 << 20);
    let file = Arc::new(MemoryFile::new(contents(8, 0)));
    let vnode = VnodePager::with_cluster(file.clone(), dyn_memory(&m), 4).unwrap();
    let object = vnode.object().unwrap();
    let frames = m.memory().frames_in_use();
    file.set_faults(FileFaults {
        reads: true,
        ..FileFaults::default()
    });
    assert_eq!(
        VmObject::resolve(&object, PAGE, VmProt::READ).unwrap_err(),
        ObjectError::Pager(PagerError::Io)
    );
    assert_eq!(object.page_counts().resident, 0, "no page, no read-ahead");
    assert_eq!(m.memory().frames_in_use(), frames);
    assert_eq!(vnode.stats().read_errors, 1);
    file.set_faults(FileFaults::default());
    assert_eq!(
        read_page(&m, &object, PAGE).unwrap().0,
        pattern(1, PAGE as usize)
    );
}

#[test]
fn a_write_error_keeps_the_page_resident_and_dirty() {
    let m = memory_of(1 << 20);
    let data = contents(2, 0);
    let file = Arc::new(MemoryFile::new(data.clone()));
    let vnode = VnodePager::with_cluster(file.clone(), dyn_memory(&m), 1).unwrap();
    let object = vnode.object().unwrap();
    write_page(&m, &object, 0, &[4; PAGE as usize]).unwrap();
    file.set_faults(FileFaults {
        writes: true,
        ..FileFaults::default()
    });
    assert_eq!(object.page_out(0), Err(ObjectError::Pager(PagerError::Io)));
    assert_eq!(
        object.synchronize(0, PAGE),
        Err(ObjectError::Pager(PagerError::Io))
    );
    let page = object.page(0).unwrap().unwrap();
    assert!(page.flags.contains(PageFlags::DIRTY) && !page.is_busy());
    assert_eq!(file.contents(), data);
    assert_eq!(read_page(&m, &object, 0).unwrap().0, vec![4; PAGE as usize]);
    file.set_faults(FileFaults {
        syncs: true,
        ..FileFaults::default()
    });
    assert_eq!(
        object.synchronize(0, PAGE),
        Err(ObjectError::Pager(PagerError::Io))
    );
    file.set_faults(FileFaults::default());
    assert_eq!(
        object.synchronize(0, PAGE),
        Ok(0),
        "written before the sync failed"
    );
    assert_eq!(&file.contents()[..PAGE as usize], &[4; PAGE as usize][..]);
    assert_eq!(vnode.stats().write_errors, 2);
}

#[test]
fn the_cache_object_lives_as_long_as_a_mapping_holds_it() {
    let m = memory_of(1 << 20);
    let vnode = VnodePager::new(MemoryFile::new(contents(2, 0)), dyn_memory(&m)).unwrap();
    let first = vnode.object().unwrap();
    let id = first.id();
    assert_eq!(vnode.object().unwrap().id(), id);
    drop(first);
    let second = vnode.object().unwrap();
    assert_ne!(second.id(), id, "a new object once the old one is gone");
    // The pager protocol checks its arguments.
    let mut page = vec![0u8; PAGE as usize];
    assert_eq!(
        vnode.data_request(1, &mut page, VmProt::READ),
        Err(PagerError::OutOfRange)
    );
    assert_eq!(
        vnode.data_request(9 * PAGE, &mut page, VmProt::READ),
        Ok(PageIn::Absent)
    );
    assert_eq!(
        vnode.data_return(0, &page[..10], PageOutKind::Evict),
        Err(PagerError::OutOfRange)
    );
    assert!(vnode.has_page(PAGE) && !vnode.has_page(2 * PAGE));
    assert_eq!(
        VnodePager::with_cluster(MemoryFile::new(vec![]), dyn_memory(&m), 0).unwrap_err(),
        PagingError::BadConfig {
            what: "cluster_pages"
        }
    );
    // A file that grew through the file system.
    let file = Arc::new(MemoryFile::new(vec![1; 100]));
    let v = VnodePager::new(file.clone(), dyn_memory(&m)).unwrap();
    file.write_at(5000, &[2; 10]).unwrap();
    assert_eq!(v.file_size(), 100);
    assert_eq!(v.refresh_size().unwrap(), 5010);
    assert_eq!(v.object().unwrap().size(), 2 * PAGE);
}

#[test]
#[cfg_attr(miri, ignore = "real files")]
fn a_real_file_through_the_fault_path() {
    let dir = temp_dir("vnode");
    let path = dir.join("mapped.bin");
    let original = contents(6, 1234);
    std::fs::write(&path, &original).unwrap();
    let m = memory_of(1 << 21);
    let vnode = VnodePager::new(StdFile::open(&path).unwrap(), dyn_memory(&m)).unwrap();
    let mut map = new_map(&m);
    let len = vnode.object().unwrap().size();
    assert_eq!(len, 7 * PAGE);
    let shared = map
        .enter(MapRequest::shared(vnode.object().unwrap(), 0, len))
        .unwrap()
        .as_u64();
    let private = map
        .enter(MapRequest::private(vnode.object().unwrap(), 0, len))
        .unwrap()
        .as_u64();

    // Reads through both mappings see the file.
    let mut buf = vec![0u8; 64];
    access(&mut map, &m, shared + 2 * PAGE + 100, None, &mut buf).unwrap();
    assert_eq!(
        &buf[..],
        &original[2 * PAGE as usize + 100..2 * PAGE as usize + 164]
    );
    access(&mut map, &m, private + 6 * PAGE, None, &mut buf).unwrap();
    assert_eq!(
        &buf[..],
        &original[6 * PAGE as usize..6 * PAGE as usize + 64]
    );

    // Writes: shared ones reach the file on msync, private ones never do.
    access(
        &mut map,
        &m,
        shared + PAGE + 10,
        Some(b"through the shared mapping"),
        &mut [],
    )
    .unwrap();
    access(&mut map, &m, private + 3 * PAGE, Some(b"private!"), &mut []).unwrap();
    // A write into the last page, past the end of the file: inside it is kept, past it cut.
    let tail_at = 6 * PAGE + 1230;
    access(&mut map, &m, shared + tail_at, Some(b"ABCDEFGH"), &mut []).unwrap();
    let object = vnode.object().unwrap();
    assert_eq!(object.synchronize(0, len), Ok(2));

    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(
        on_disk.len(),
        original.len(),
        "mapping never grows the file"
    );
    let mut expect = original.clone();
    expect[PAGE as usize + 10..PAGE as usize + 36].copy_from_slice(b"through the shared mapping");
    expect[tail_at as usize..].copy_from_slice(b"ABCD");
    assert_eq!(on_disk, expect);

    // The private mapping still sees its own write, the shared one the file.
    access(&mut map, &m, private + 3 * PAGE, None, &mut buf[..8]).unwrap();
    assert_eq!(&buf[..8], b"private!");
    access(&mut map, &m, shared + 3 * PAGE, None, &mut buf[..8]).unwrap();
    assert_eq!(
        &buf[..8],
        &original[3 * PAGE as usize..3 * PAGE as usize + 8]
    );

    // Evicted and faulted again: the data comes back from the file.
    map.remove(VirtAddr::new(shared), len).unwrap();
    map.remove(VirtAddr::new(private), len).unwrap();
    let stats = evict(&object, u64::MAX).unwrap();
    assert_eq!(object.page_counts().resident, 0, "{stats:?}");
    let again = map
        .enter(MapRequest::shared(object.clone(), 0, len))
        .unwrap()
        .as_u64();
    access(&mut map, &m, again + PAGE + 10, None, &mut buf[..26]).unwrap();
    assert_eq!(&buf[..26], b"through the shared mapping");
    drop(map);
    drop(object);
    drop(vnode);
    std::fs::remove_dir_all(&dir).unwrap();
}
