use super::{CpuId, CpuIndex, PerCpu, PerCpuCell};
use crate::CACHE_LINE;
use crate::atomic::{AtomicUsize, Ordering};
use alloc::string::String;
use alloc::vec::Vec;
use std::format;

/// A single-threaded test's only CPU.
struct Fixed(u32);

// SAFETY: each test using `Fixed` runs on one thread and treats it as that thread's CPU.
unsafe impl CpuId for Fixed {
    fn current_cpu(&self) -> CpuIndex {
        CpuIndex::new(self.0)
    }
}

#[test]
fn per_cpu_out_of_range_index_is_none() {
    let mut p = PerCpu::new([1_u8, 2]);
    assert_eq!(p.get(CpuIndex::new(2)), None);
    assert_eq!(p.get(CpuIndex::new(u32::MAX)), None);
    assert_eq!(p.get_mut(CpuIndex::new(2)), None);
    assert_eq!(p.current(&Fixed(7)), None);
}

#[test]
fn per_cpu_cell_out_of_range_index_is_none_and_f_is_not_called() {
    let mut cells = PerCpuCell::<u8, 2>::from_fn(|_| 0);
    let mut called = false;
    // SAFETY: single thread, no other access to any slot.
    let r = unsafe { cells.with_current_mut(&Fixed(2), |_| called = true) };
    assert_eq!(r, None);
    assert!(!called);
    // SAFETY: as above.
    assert_eq!(unsafe { cells.with(CpuIndex::new(5), |v| *v) }, None);
    assert!(cells.get_mut(CpuIndex::new(2)).is_none());
}

#[test]
fn slots_are_padded_to_the_documented_cache_line() {
    assert_eq!(size_of::<PerCpu<u8, 4>>(), 4 * CACHE_LINE);
    assert_eq!(align_of::<PerCpu<u8, 4>>(), CACHE_LINE);
    assert_eq!(size_of::<PerCpuCell<u64, 3>>(), 3 * CACHE_LINE);
    assert_eq!(align_of::<PerCpuCell<u64, 3>>(), CACHE_LINE);

    let p = PerCpu::new([0_u8; 3]);
    let addrs: Vec<usize> = p.iter().map(|slot| (&raw const *slot).addr()).collect();
    for pair in addrs.windows(2) {
        assert_eq!(pair[1] - pair[0], CACHE_LINE);
    }
    assert!(addrs.iter().all(|a| a % CACHE_LINE == 0));
}

#[test]
fn const_new_moves_every_value_into_its_slot() {
    // `String`s make miri check that each value is moved once and dropped once.
    let p = PerCpu::new([String::from("a"), String::from("b"), String::from("c")]);
    assert_eq!(p.get(CpuIndex::new(1)).map(String::as_str), Some("b"));
    let joined: String = p.iter().map(String::as_str).collect();
    assert_eq!(joined, "abc");
    drop(p);

    let cells = PerCpuCell::new([String::from("x"), String::from("y")]);
    assert_eq!(cells.into_inner(), ["x", "y"]);
}

#[test]
fn new_is_const_for_static_per_cpu_data() {
    static COUNTS: PerCpu<AtomicUsize, 2> = PerCpu::new([const { AtomicUsize::new(0) }; 2]);
    static CELLS: PerCpuCell<u32, 2> = PerCpuCell::new([5, 6]);
    COUNTS
        .get(CpuIndex::new(1))
        .unwrap()
        .fetch_add(1, Ordering::Relaxed);
    assert!(
        COUNTS
            .get(CpuIndex::new(1))
            .unwrap()
            .load(Ordering::Relaxed)
            >= 1
    );
    // SAFETY: only this test touches `CELLS`, and only through `with`.
    assert_eq!(unsafe { CELLS.with(CpuIndex::new(1), |v| *v) }, Some(6));
}

#[test]
fn from_fn_passes_each_slot_its_index() {
    let p = PerCpu::<u32, 5>::from_fn(CpuIndex::as_u32);
    assert_eq!(p.into_inner(), [0, 1, 2, 3, 4]);
    let cells = PerCpuCell::<u32, 3>::from_fn(|cpu| cpu.as_u32() * 2);
    assert_eq!(cells.into_inner(), [0, 2, 4]);
}

#[test]
fn with_current_mut_touches_only_the_current_slot() {
    let cells = PerCpuCell::<u32, 3>::from_fn(|_| 0);
    for cpu in [0, 2, 2] {
        // SAFETY: single thread, no re-entrancy, no other access during the call.
        let r = unsafe { cells.with_current_mut(&Fixed(cpu), |v| *v += 1) };
        assert_eq!(r, Some(()));
    }
    assert_eq!(cells.into_inner(), [1, 0, 2]);
}

#[test]
fn mutable_access_through_exclusive_borrow() {
    let mut p = PerCpu::new([1, 2]);
    *p.get_mut(CpuIndex::new(0)).unwrap() += 10;
    p.iter_mut().for_each(|v| *v *= 2);
    assert_eq!(p.into_inner(), [22, 4]);

    let mut cells = PerCpuCell::new([1, 2]);
    *cells.get_mut(CpuIndex::new(1)).unwrap() += 10;
    cells.iter_mut().for_each(|v| *v *= 2);
    assert_eq!(cells.into_inner(), [2, 24]);
}

#[test]
fn len_and_is_empty_report_n() {
    assert_eq!(PerCpu::new([0; 3]).len(), 3);
    assert!(PerCpu::<u8, 0>::new([]).is_empty());
    assert_eq!(PerCpuCell::<u8, 4>::default().len(), 4);
    assert!(PerCpuCell::<u8, 0>::default().is_empty());
}

#[test]
fn debug_prints_shared_slots_but_not_exclusive_ones() {
    assert_eq!(format!("{:?}", PerCpu::new([1, 2])), "[1, 2]");
    assert_eq!(
        format!("{:?}", PerCpuCell::new([1, 2])),
        "PerCpuCell { cpus: 2, .. }"
    );
}

#[test]
fn cpu_index_converts_and_displays() {
    let cpu = CpuIndex::new(7);
    assert_eq!(cpu.as_u32(), 7);
    assert_eq!(cpu.as_usize(), 7);
    assert_eq!(format!("{cpu}"), "7");
    assert!(CpuIndex::new(1) < CpuIndex::new(2));
}

#[test]
fn cpu_id_through_a_reference_forwards() {
    let fixed = Fixed(4);
    let by_ref: &dyn CpuId = &fixed;
    assert_eq!((&by_ref).current_cpu(), CpuIndex::new(4));
}
