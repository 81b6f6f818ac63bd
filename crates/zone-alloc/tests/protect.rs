//! Guard pages and read-only zones, over a page source that records the protections it is
//! asked for (host memory cannot be protected without the OS, so the records stand in for the
//! page table; the QEMU smoke kernels check the real faults).

// Host tests: std is the natural choice.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::Mutex;

use machvm_zone_alloc::{
    NoCpuCache, PageAccess, PageSource, PageSourceError, SystemPages, Violation, ViolationKind,
    Zone, ZoneConfig, ZoneError, ZoneFlags,
};

/// Host pages whose protections are recorded per page.
#[derive(Default)]
struct RecordingPages {
    inner: SystemPages,
    access: Mutex<BTreeMap<usize, PageAccess>>,
}

impl RecordingPages {
    fn access_of(&self, addr: usize) -> PageAccess {
        let page = addr & !4095;
        self.access
            .lock()
            .unwrap()
            .get(&page)
            .copied()
            .unwrap_or(PageAccess::ReadWrite)
    }

    fn protected_pages(&self) -> usize {
        self.access
            .lock()
            .unwrap()
            .values()
            .filter(|a| **a != PageAccess::ReadWrite)
            .count()
    }
}

// SAFETY: forwards allocation to `SystemPages`, which makes the promises; `protect` only
// records.
unsafe impl PageSource for RecordingPages {
    fn page_size(&self) -> usize {
        4096
    }
    fn allocate(&self, bytes: usize, align: usize) -> Result<NonNull<u8>, PageSourceError> {
        self.inner.allocate(bytes, align)
    }
    unsafe fn deallocate(&self, ptr: NonNull<u8>, bytes: usize, align: usize) {
        let start = ptr.as_ptr() as usize;
        assert!(
            (start..start + bytes)
                .step_by(4096)
                .all(|p| self.access_of(p) == PageAccess::ReadWrite),
            "memory given back while still protected"
        );
        // SAFETY: the caller's contract.
        unsafe { self.inner.deallocate(ptr, bytes, align) };
    }
    fn can_protect(&self) -> bool {
        true
    }
    fn protect(
        &self,
        ptr: NonNull<u8>,
        bytes: usize,
        access: PageAccess,
    ) -> Result<(), PageSourceError> {
        let start = ptr.as_ptr() as usize;
        if start % 4096 != 0 || bytes % 4096 != 0 || bytes == 0 {
            return Err(PageSourceError::BadRequest { bytes, align: 4096 });
        }
        let mut map = self.access.lock().unwrap();
        for p in (start..start + bytes).step_by(4096) {
            map.insert(p, access);
        }
        Ok(())
    }
}

static SEEN: Mutex<Vec<(ViolationKind, usize)>> = Mutex::new(Vec::new());

fn record(v: &Violation<'_>) {
    SEEN.lock().unwrap().push((v.kind, v.addr));
}

#[test]
fn guard_pages_need_a_protecting_source() {
    let z = Zone::<_, _, 1>::new(
        ZoneConfig::new("guarded", 64).flags(ZoneFlags::GUARD_PAGES),
        SystemPages::new(),
        NoCpuCache,
    );
    assert_eq!(z.err(), Some(ZoneError::BadConfig));
}

#[test]
fn every_chunk_ends_in_a_guard_page_no_element_touches() {
    let pages = RecordingPages::default();
    let zone: Zone<_, _, 1> = Zone::new(
        ZoneConfig::new("guarded", 256).flags(ZoneFlags::HARDENED.with(ZoneFlags::GUARD_PAGES)),
        &pages,
        NoCpuCache,
    )
    .unwrap();
    let chunk = zone.chunk_size();
    let mut live = vec![zone.alloc().unwrap()];
    let per_chunk = zone.stats().cur_elements;
    while live.len() < 2 * per_chunk + 1 {
        live.push(zone.alloc().unwrap());
    }
    let chunks = zone.stats().cur_size / chunk;
    assert_eq!(chunks, 3);
    assert_eq!(pages.protected_pages(), chunks, "one guard page per chunk");
    for p in &live {
        let a = p.as_ptr() as usize;
        let guard = (a & !(chunk - 1)) + chunk - 4096;
        assert_eq!(pages.access_of(guard), PageAccess::None);
        assert!(a + 256 <= guard, "an element reaches into the guard page");
        assert_eq!(pages.access_of(a), PageAccess::ReadWrite);
    }
    for p in live {
        // SAFETY: allocated above, freed once.
        unsafe { zone.free(p).unwrap() };
    }
    zone.trim(0);
    assert_eq!(
        pages.protected_pages(),
        0,
        "trimmed chunks lose their guard"
    );
}

fn read_only_zone<S: PageSource>(pages: S) -> Zone<S, NoCpuCache, 1> {
    Zone::new(
        ZoneConfig::new("creds", 40)
            .flags(ZoneFlags::READ_ONLY)
            .on_violation(record),
        pages,
        NoCpuCache,
    )
    .unwrap()
}

#[test]
fn read_only_elements_change_only_through_mutate() {
    let pages = RecordingPages::default();
    let zone = read_only_zone(&pages);
    assert!(
        zone.flags()
            .contains(ZoneFlags::ZERO_ON_FREE.with(ZoneFlags::CHECK_FREE))
    );
    let cred = zone.alloc().unwrap();
    let a = cred.as_ptr() as usize;
    assert_eq!(pages.access_of(a), PageAccess::ReadOnly, "mapped read-only");
    // SAFETY: 40 readable bytes.
    let bytes = unsafe { std::slice::from_raw_parts(cred.as_ptr(), 40) };
    assert!(bytes.iter().all(|&b| b == 0));

    // SAFETY: a live element of this zone.
    unsafe { zone.mutate(cred, 8, &1000u32.to_le_bytes()).unwrap() };
    assert_eq!(
        pages.access_of(a),
        PageAccess::ReadOnly,
        "read-only again after mutate"
    );
    // SAFETY: as above.
    let uid = unsafe { cred.as_ptr().add(8).cast::<u32>().read_unaligned() };
    assert_eq!(uid, 1000);
    // SAFETY: as above.
    assert_eq!(unsafe { zone.verify(cred) }, Ok(()));
    // SAFETY: as above; out of range, nothing written.
    let refused = unsafe { zone.mutate(cred, 38, &[1, 2, 3]) };
    assert_eq!(refused, Err(ZoneError::BadConfig));

    let other = zone.alloc().unwrap();
    // A write that bypasses the zone (the recording source cannot really stop it).
    // SAFETY: deliberately writes a read-only element; the zone must notice.
    unsafe { other.as_ptr().add(4).write(9) };
    // SAFETY: a live element of this zone.
    let verified = unsafe { zone.verify(other) };
    assert_eq!(verified, Err(ViolationKind::ReadOnlyWrite));
    // SAFETY: as above; refused, nothing written.
    let refused = unsafe { zone.mutate(other, 0, &[0]) };
    assert_eq!(
        refused,
        Err(ZoneError::Violation(ViolationKind::ReadOnlyWrite))
    );
    // SAFETY: as above; the corrupted element is not freed.
    let refused = unsafe { zone.free(other) };
    assert_eq!(
        refused,
        Err(ZoneError::Violation(ViolationKind::ReadOnlyWrite))
    );
    let seen = SEEN.lock().unwrap().clone();
    assert_eq!(
        seen.iter()
            .filter(|(_, addr)| *addr == other.as_ptr() as usize)
            .count(),
        3
    );

    // SAFETY: intact, freed once.
    unsafe { zone.free(cred).unwrap() };
    let again = zone.alloc().unwrap();
    assert_eq!(again, cred, "freed element reused");
    // SAFETY: 40 readable bytes.
    let bytes = unsafe { std::slice::from_raw_parts(again.as_ptr(), 40) };
    assert!(bytes.iter().all(|&b| b == 0));
    drop(zone);
    assert_eq!(
        pages.protected_pages(),
        0,
        "every page writable again after the zone"
    );
}

#[test]
fn read_only_detection_works_without_page_protection() {
    let zone = read_only_zone(SystemPages::new());
    let e = zone.alloc().unwrap();
    // SAFETY: a live element of this zone.
    unsafe { zone.mutate(e, 0, b"root").unwrap() };
    // SAFETY: deliberately writes a read-only element behind the zone's back.
    unsafe { e.as_ptr().write(b'R') };
    // SAFETY: a live element of this zone.
    assert_eq!(unsafe { zone.verify(e) }, Err(ViolationKind::ReadOnlyWrite));
    let plain: Zone<_, _, 1> =
        Zone::new(ZoneConfig::new("plain", 40), SystemPages::new(), NoCpuCache).unwrap();
    let p = plain.alloc().unwrap();
    // SAFETY: a live element; `mutate` is for read-only zones only.
    let refused = unsafe { plain.mutate(p, 0, &[1]) };
    assert_eq!(refused, Err(ZoneError::BadConfig));
}
