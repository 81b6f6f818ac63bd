//! Parameter validation (XNU's `vm_parameter_validation` as the checklist): every public
//! call with zero sizes, wrap-around, unaligned values, ranges outside the map, bad
//! protections and inheritance, bad alignment masks and object windows. Each must return the
//! expected typed error and leave the map exactly as it was (entries and translations).

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

mod common;

use std::sync::Arc;

use common::{BASE, Map, PS, map, memory};
use machvm_addr::{PageSize, SimPhysMemory, VirtAddr, VmProt};
use machvm_vm_map::{
    FaultError, Gap, Inheritance, Location, MapError, MapRequest, Placement, SoftPmap, VmMap,
};
use machvm_vm_object::{SimPageMemory, VmObject};

const PAGES: u64 = 64;
const END: u64 = BASE + PAGES * PS;

/// Everything observable about a map.
fn snapshot(m: &Map) -> Vec<String> {
    let mut out: Vec<String> = m
        .entries()
        .map(|e| {
            format!(
                "{:#x}-{:#x} obj={} off={:#x} {}/{} {:?} nc={} w={}",
                e.start().as_u64(),
                e.end().as_u64(),
                e.object().id(),
                e.offset(),
                e.protection(),
                e.max_protection(),
                e.inheritance(),
                e.needs_copy(),
                e.wired_count()
            )
        })
        .collect();
    out.extend(m.pmap().iter().map(|(va, t)| format!("{va:?} {t:?}")));
    out
}

/// A map with a few entries, some pages faulted in, one wired page, a read-only entry.
fn fixture() -> (Arc<SimPageMemory>, Map) {
    let mem = memory(1 << 22);
    let mut m = map(&mem, PAGES);
    let a = m
        .enter(MapRequest::anonymous(4 * PS).fixed(VirtAddr::new(BASE + 4 * PS)))
        .unwrap();
    m.fault(a, VmProt::WRITE).unwrap();
    m.wire(VirtAddr::new(a.as_u64() + PS), PS).unwrap();
    let b = m
        .enter(
            MapRequest::anonymous(2 * PS)
                .fixed(VirtAddr::new(BASE + 16 * PS))
                .protection(VmProt::READ, VmProt::READ),
        )
        .unwrap();
    m.fault(b, VmProt::READ).unwrap();
    (mem, m)
}

fn bad_prot() -> VmProt {
    VmProt::from_bits_retain(0x10)
}

type Call = fn(&mut Map) -> Result<(), MapError>;

fn va(a: u64) -> VirtAddr {
    VirtAddr::new(a)
}

/// A placement hook that answers outside every gap.
struct Liar;
impl Placement for Liar {
    fn place(&mut self, _: &[Gap], _: u64, _: u64) -> Option<VirtAddr> {
        Some(VirtAddr::new(BASE + 4 * PS))
    }
}

#[test]
fn bad_parameters_fail_without_changing_the_map() {
    let mapped = BASE + 4 * PS;
    let cases: Vec<(&str, Call, MapError)> = vec![
        // remove
        ("remove zero", |m| m.remove(va(BASE), 0), MapError::ZeroSize),
        (
            "remove wrap",
            |m| m.remove(va(BASE), u64::MAX - PS + 1),
            MapError::Overflow {
                start: BASE,
                size: u64::MAX - PS + 1,
            },
        ),
        (
            "remove unaligned start",
            |m| m.remove(va(BASE + 1), PS),
            MapError::Unaligned {
                value: BASE + 1,
                align: PS,
            },
        ),
        (
            "remove unaligned size",
            |m| m.remove(va(BASE), PS + 1),
            MapError::Unaligned {
                value: PS + 1,
                align: PS,
            },
        ),
        (
            "remove below",
            |m| m.remove(va(BASE - PS), 2 * PS),
            MapError::OutOfBounds {
                start: BASE - PS,
                end: BASE + PS,
            },
        ),
        (
            "remove above",
            |m| m.remove(va(END - PS), 2 * PS),
            MapError::OutOfBounds {
                start: END - PS,
                end: END + PS,
            },
        ),
        // protect / set_max
        (
            "protect zero",
            |m| m.protect(va(BASE + 4 * PS), 0, VmProt::READ),
            MapError::ZeroSize,
        ),
        (
            "protect wrap",
            |m| m.protect(va(BASE + 4 * PS), u64::MAX, VmProt::READ),
            MapError::Overflow {
                start: BASE + 4 * PS,
                size: u64::MAX,
            },
        ),
        (
            "protect unaligned",
            |m| m.protect(va(BASE + 4 * PS + 8), PS, VmProt::READ),
            MapError::Unaligned {
                value: BASE + 4 * PS + 8,
                align: PS,
            },
        ),
        (
            "protect bad bits",
            |m| m.protect(va(BASE + 4 * PS), PS, bad_prot()),
            MapError::InvalidProtection { bits: 0x10 },
        ),
        (
            "protect hole",
            |m| m.protect(va(BASE + 4 * PS), 5 * PS, VmProt::READ),
            MapError::NotMapped {
                addr: BASE + 8 * PS,
            },
        ),
        (
            "protect above max",
            |m| m.protect(va(BASE + 16 * PS), PS, VmProt::DEFAULT),
            MapError::ProtectionExceedsMax {
                current: VmProt::DEFAULT,
                maximum: VmProt::READ,
            },
        ),
        (
            "set max raise",
            |m| m.set_max_protection(va(BASE + 16 * PS), 2 * PS, VmProt::ALL),
            MapError::MaxRaised {
                requested: VmProt::ALL,
                maximum: VmProt::READ,
            },
        ),
        (
            "set max bad bits",
            |m| m.set_max_protection(va(BASE + 16 * PS), PS, bad_prot()),
            MapError::InvalidProtection { bits: 0x10 },
        ),
        (
            "set max outside",
            |m| m.set_max_protection(va(END), PS, VmProt::READ),
            MapError::OutOfBounds {
                start: END,
                end: END + PS,
            },
        ),
        // inherit
        (
            "inherit zero",
            |m| m.inherit(va(BASE + 4 * PS), 0, Inheritance::Share),
            MapError::ZeroSize,
        ),
        (
            "inherit wrap",
            |m| m.inherit(va(END - PS), u64::MAX - END + 2 * PS, Inheritance::Share),
            MapError::Overflow {
                start: END - PS,
                size: u64::MAX - END + 2 * PS,
            },
        ),
        (
            "inherit unaligned",
            |m| m.inherit(va(BASE + 4 * PS), PS - 1, Inheritance::Share),
            MapError::Unaligned {
                value: PS - 1,
                align: PS,
            },
        ),
        (
            "inherit raw value",
            |_| Inheritance::try_from(7).map(|_| ()),
            MapError::InvalidInheritance { raw: 7 },
        ),
        // wire / unwire
        (
            "wire zero",
            |m| m.wire(va(BASE + 4 * PS), 0),
            MapError::ZeroSize,
        ),
        (
            "wire hole",
            |m| m.wire(va(BASE + 6 * PS), 4 * PS),
            MapError::NotMapped {
                addr: BASE + 8 * PS,
            },
        ),
        (
            "wire outside",
            |m| m.wire(va(0), PS),
            MapError::OutOfBounds { start: 0, end: PS },
        ),
        (
            "unwire unwired",
            |m| m.unwire(va(BASE + 4 * PS), 2 * PS),
            MapError::NotWired {
                addr: BASE + 4 * PS,
            },
        ),
        (
            "unwire hole",
            |m| m.unwire(va(BASE + 3 * PS), 2 * PS),
            MapError::NotMapped {
                addr: BASE + 3 * PS,
            },
        ),
        // enter
        (
            "enter zero",
            |m| m.enter(MapRequest::anonymous(0)).map(|_| ()),
            MapError::ZeroSize,
        ),
        (
            "enter unaligned size",
            |m| m.enter(MapRequest::anonymous(PS + 1)).map(|_| ()),
            MapError::Unaligned {
                value: PS + 1,
                align: PS,
            },
        ),
        (
            "enter unaligned guard",
            |m| m.enter(MapRequest::anonymous(PS).guard(7)).map(|_| ()),
            MapError::Unaligned {
                value: 7,
                align: PS,
            },
        ),
        (
            "enter fixed unaligned",
            |m| {
                m.enter(MapRequest::anonymous(PS).fixed(va(BASE + 3)))
                    .map(|_| ())
            },
            MapError::Unaligned {
                value: BASE + 3,
                align: PS,
            },
        ),
        (
            "enter fixed mask unaligned",
            |m| {
                m.enter(
                    MapRequest::anonymous(PS)
                        .fixed(va(BASE + PS))
                        .align_mask(0x1fff),
                )
                .map(|_| ())
            },
            MapError::Unaligned {
                value: BASE + PS,
                align: 0x2000,
            },
        ),
        (
            "enter fixed wrap",
            |m| {
                m.enter(MapRequest::anonymous(0x2000).fixed(va(0xffff_ffff_ffff_f000)))
                    .map(|_| ())
            },
            MapError::Overflow {
                start: 0xffff_ffff_ffff_f000,
                size: 0x2000,
            },
        ),
        (
            "enter fixed outside",
            |m| {
                m.enter(MapRequest::anonymous(2 * PS).fixed(va(END - PS)))
                    .map(|_| ())
            },
            MapError::OutOfBounds {
                start: END - PS,
                end: END + PS,
            },
        ),
        (
            "enter fixed occupied",
            |m| {
                m.enter(MapRequest::anonymous(2 * PS).fixed(va(BASE + 3 * PS)))
                    .map(|_| ())
            },
            MapError::Occupied {
                addr: BASE + 4 * PS,
            },
        ),
        (
            "enter cur above max",
            |m| {
                m.enter(MapRequest::anonymous(PS).protection(VmProt::ALL, VmProt::READ))
                    .map(|_| ())
            },
            MapError::ProtectionExceedsMax {
                current: VmProt::ALL,
                maximum: VmProt::READ,
            },
        ),
        (
            "enter bad prot",
            |m| {
                m.enter(MapRequest::anonymous(PS).protection(bad_prot(), VmProt::ALL))
                    .map(|_| ())
            },
            MapError::InvalidProtection { bits: 0x10 },
        ),
        (
            "enter bad max",
            |m| {
                m.enter(
                    MapRequest::anonymous(PS)
                        .protection(VmProt::READ, VmProt::from_bits_retain(0x107)),
                )
                .map(|_| ())
            },
            MapError::InvalidProtection { bits: 0x107 },
        ),
        (
            "enter bad mask",
            |m| {
                m.enter(MapRequest::anonymous(PS).align_mask(0x1001))
                    .map(|_| ())
            },
            MapError::InvalidAlignMask { mask: 0x1001 },
        ),
        (
            "enter all-ones mask",
            |m| {
                m.enter(MapRequest::anonymous(PS).align_mask(u64::MAX))
                    .map(|_| ())
            },
            MapError::InvalidAlignMask { mask: u64::MAX },
        ),
        (
            "enter too big",
            |m| m.enter(MapRequest::anonymous(PAGES * PS)).map(|_| ()),
            MapError::NoSpace { size: PAGES * PS },
        ),
        (
            "enter lying placement",
            |m| {
                m.enter_with(MapRequest::anonymous(PS), &mut Liar)
                    .map(|_| ())
            },
            MapError::BadPlacement {
                addr: BASE + 4 * PS,
            },
        ),
        (
            "enter object window",
            |m| {
                let o = VmObject::anonymous(2 * PS, m.memory().clone()).unwrap();
                m.enter(MapRequest::shared(o, PS, 2 * PS)).map(|_| ())
            },
            MapError::ObjectRange {
                offset: PS,
                size: 2 * PS,
            },
        ),
        (
            "enter object offset wrap",
            |m| {
                let o = VmObject::anonymous(2 * PS, m.memory().clone()).unwrap();
                m.enter(MapRequest::private(o, u64::MAX - PS + 1, PS))
                    .map(|_| ())
            },
            MapError::ObjectRange {
                offset: u64::MAX - PS + 1,
                size: PS,
            },
        ),
        (
            "enter object unaligned offset",
            |m| {
                let o = VmObject::anonymous(2 * PS, m.memory().clone()).unwrap();
                m.enter(MapRequest::shared(o, 12, PS)).map(|_| ())
            },
            MapError::ObjectRange {
                offset: 12,
                size: PS,
            },
        ),
        (
            "enter object page size",
            |m| {
                let phys = SimPhysMemory::builder()
                    .size_bytes(1 << 20)
                    .build()
                    .unwrap();
                let big = Arc::new(SimPageMemory::new(phys, PageSize::Size16KiB).unwrap());
                let o = VmObject::anonymous(16384, big).unwrap();
                m.enter(MapRequest::shared(o, 0, 16384)).map(|_| ())
            },
            MapError::PageSizeMismatch {
                map: PS,
                object: 16384,
            },
        ),
        (
            "enter overwrite outside",
            |m| {
                m.enter(MapRequest::anonymous(PS).location(Location::Overwrite(va(END))))
                    .map(|_| ())
            },
            MapError::OutOfBounds {
                start: END,
                end: END + PS,
            },
        ),
    ];
    for (name, call, expected) in cases {
        let (_mem, mut m) = fixture();
        let before = snapshot(&m);
        let got = call(&mut m);
        assert_eq!(got, Err(expected), "{name}");
        assert_eq!(snapshot(&m), before, "{name}: map changed");
    }
    let _ = mapped;
}

#[test]
fn bad_faults_change_nothing() {
    let (_mem, mut m) = fixture();
    let before = snapshot(&m);
    let cases: Vec<(u64, VmProt, FaultError)> = vec![
        (BASE, VmProt::READ, FaultError::NotMapped { addr: BASE }),
        (
            END + 5,
            VmProt::READ,
            FaultError::NotMapped { addr: END + 5 },
        ),
        (
            0x00ff_ffff_ffff_ffff,
            VmProt::WRITE,
            FaultError::NotMapped {
                addr: 0x00ff_ffff_ffff_ffff,
            },
        ),
        (
            BASE + 4 * PS,
            VmProt::NONE,
            FaultError::InvalidAccess { bits: 0 },
        ),
        (
            BASE + 4 * PS,
            bad_prot(),
            FaultError::InvalidAccess { bits: 0x10 },
        ),
        (
            BASE + 16 * PS + 3,
            VmProt::WRITE,
            FaultError::Protection {
                addr: BASE + 16 * PS + 3,
                access: VmProt::WRITE,
                protection: VmProt::READ,
            },
        ),
        (
            BASE + 17 * PS,
            VmProt::EXECUTE,
            FaultError::Protection {
                addr: BASE + 17 * PS,
                access: VmProt::EXECUTE,
                protection: VmProt::READ,
            },
        ),
    ];
    for (addr, access, expected) in cases {
        assert_eq!(
            m.fault(VirtAddr::new(addr), access),
            Err(expected.clone()),
            "{addr:#x}"
        );
        assert_eq!(snapshot(&m), before);
    }
    assert_eq!(m.stats().protection_faults, 2);
    assert_eq!(m.stats().invalid_faults, 3);
}

#[test]
fn bad_map_bounds_are_refused() {
    let mem = memory(1 << 20);
    let new = |lo: u64, hi: u64, size: PageSize| {
        VmMap::new(
            size,
            VirtAddr::new(lo),
            VirtAddr::new(hi),
            mem.clone(),
            SoftPmap::new(PS),
        )
        .map(|_| ())
    };
    assert_eq!(
        new(0x2000, 0x2000, PageSize::Size4KiB),
        Err(MapError::InvalidBounds)
    );
    assert_eq!(
        new(0x3000, 0x2000, PageSize::Size4KiB),
        Err(MapError::InvalidBounds)
    );
    assert_eq!(
        new(0x1001, 0x4000, PageSize::Size4KiB),
        Err(MapError::InvalidBounds)
    );
    assert_eq!(
        new(0x1000, 0x8000, PageSize::Size16KiB),
        Err(MapError::InvalidBounds)
    );
    assert_eq!(
        new(0x1000, 0x8000, PageSize::Size2MiB),
        Err(MapError::InvalidBounds)
    );
    assert!(new(0x1000, 0x8000, PageSize::Size4KiB).is_ok());
}

#[test]
fn errors_render_lowercase_with_values() {
    let e = MapError::Unaligned {
        value: 0x1001,
        align: 0x1000,
    };
    assert_eq!(e.to_string(), "0x1001 is not a multiple of 0x1000");
    let f = FaultError::Protection {
        addr: 0x5000,
        access: VmProt::WRITE,
        protection: VmProt::READ,
    };
    assert_eq!(
        f.to_string(),
        "-w- access at 0x5000 denied by protection r--"
    );
}

#[test]
fn bounds_across_the_non_canonical_hole_are_refused() {
    let mem = memory(1 << 20);
    let r = VmMap::new(
        PageSize::Size4KiB,
        VirtAddr::new(0x1000),
        VirtAddr::new(0xffff_ffff_ffff_f000),
        mem,
        SoftPmap::new(PS),
    );
    assert_eq!(r.map(|_| ()), Err(MapError::InvalidBounds));
}
