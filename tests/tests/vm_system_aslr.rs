//! Randomised `mmap` placement (`VmSystem::set_mmap_randomisation`, `machvm::placement`):
//! uniform over the free positions, reproducible from a seed, inside the window, clear of
//! guard gaps, and the pages behave like any other mapping (fault, fork).

#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc)]

use machvm::sim::{SIM_USER_END, SIM_USER_START, SimMachine};
use machvm_addr::VirtAddr;
use machvm_aslr::AslrRng;
use machvm_page_table::X86Pml4;
use machvm_vm_map::MapRequest;

const PS: u64 = 4096;

fn machine() -> SimMachine<X86Pml4> {
    SimMachine::<X86Pml4>::new(64, 2).expect("machine")
}

/// Pearson's chi-square statistic of `counts` against a uniform expectation.
fn chi_square(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    let expected = total as f64 / counts.len() as f64;
    counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum()
}

/// The start of `draws` placements of `size` bytes in an empty space (each unmapped again),
/// bucketed into 16 equal parts of the window the start can take.
fn bucketed_starts(m: &SimMachine<X86Pml4>, draws: u32, size: u64) -> [u64; 16] {
    let s = m.create_space().unwrap();
    let span = SIM_USER_END - SIM_USER_START - size + PS; // positions * PS
    let mut counts = [0u64; 16];
    for _ in 0..draws {
        let mut vm = m.vm();
        let a = vm.mmap(s, MapRequest::anonymous(size)).unwrap();
        let off = a.as_u64() - SIM_USER_START;
        assert!(off + size <= SIM_USER_END - SIM_USER_START);
        assert_eq!(off % PS, 0);
        counts[(off * 16 / span) as usize] += 1;
        vm.munmap(s, a, size).unwrap();
    }
    m.destroy_space(s).unwrap();
    counts
}

#[test]
fn placements_are_uniform_over_the_window() {
    let m = machine();
    m.vm()
        .set_mmap_randomisation(Some(AslrRng::from_seed([0x41; 32])));
    let counts = bucketed_starts(&m, 8000, 64 * 1024);
    // 15 degrees of freedom: 37.70 is the 0.1 % critical value.
    let chi = chi_square(&counts);
    assert!(chi < 37.70, "not uniform: chi-square {chi:.1}, {counts:?}");

    // The same statistic rejects the unrandomised placement (every draw in bucket 0).
    m.vm().set_mmap_randomisation(None);
    let first_fit = bucketed_starts(&m, 8000, 64 * 1024);
    assert_eq!(first_fit[0], 8000);
    assert!(chi_square(&first_fit) > 37.70);
}

#[test]
fn a_seed_reproduces_its_layout_and_another_seed_does_not() {
    let layout = |seed: u8| {
        let m = machine();
        m.vm()
            .set_mmap_randomisation(Some(AslrRng::from_seed([seed; 32])));
        let s = m.create_space().unwrap();
        (0..32)
            .map(|i| {
                m.vm()
                    .mmap(s, MapRequest::anonymous((1 + i % 4) * PS))
                    .unwrap()
                    .as_u64()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(layout(1), layout(1));
    assert_ne!(layout(1), layout(2));
}

#[test]
fn random_mappings_keep_their_guard_gaps_and_never_overlap() {
    let m = machine();
    m.vm()
        .set_mmap_randomisation(Some(AslrRng::from_seed([0x5a; 32])));
    let s = m.create_space().unwrap();
    let guard = 4 * PS;
    let mut placed: Vec<(u64, u64)> = Vec::new();
    for i in 0..300u64 {
        let size = (1 + i % 7) * PS;
        let a = m
            .vm()
            .mmap(s, MapRequest::anonymous(size).guard(guard))
            .unwrap()
            .as_u64();
        assert!(a >= SIM_USER_START + guard && a + size <= SIM_USER_END);
        for &(b, len) in &placed {
            // No overlap, and the gap below the new mapping is at least `guard`.
            assert!(
                a + size <= b || b + len + guard <= a,
                "{a:#x} vs {b:#x}+{len:#x}"
            );
        }
        placed.push((a, size));
    }
    // Random placement spreads the mappings: not packed at the bottom of the window.
    let highest = placed.iter().map(|&(a, _)| a).max().unwrap();
    assert!(highest - SIM_USER_START > (SIM_USER_END - SIM_USER_START) / 2);
}

#[test]
fn randomly_placed_pages_fault_fork_and_unmap_like_any_other() {
    let m = machine();
    m.vm()
        .set_mmap_randomisation(Some(AslrRng::from_seed([0x77; 32])));
    let s = m.create_space().unwrap();
    let a = m
        .vm()
        .mmap(s, MapRequest::anonymous(8 * PS))
        .unwrap()
        .as_u64();
    for p in 0..8 {
        m.store((p % 2) as usize, s, a + p * PS, p as u8 + 1)
            .unwrap();
    }
    // The child keeps the parent's addresses (fork does not re-place anything).
    let child = m.fork(s).unwrap();
    for p in 0..8 {
        assert_eq!(m.load(0, child, a + p * PS).unwrap(), p as u8 + 1);
    }
    m.store(1, child, a, 0xee).unwrap();
    assert_eq!(m.load(0, s, a).unwrap(), 1);
    // A fixed mapping is placed where it is asked, randomisation or not (any page clear of
    // the random mapping).
    let fixed = (0..64)
        .map(|i| VirtAddr::new(SIM_USER_START + i * PS))
        .find(|v| v.as_u64() + PS <= a || v.as_u64() >= a + 8 * PS)
        .unwrap();
    assert_eq!(
        m.vm()
            .mmap(s, MapRequest::anonymous(PS).fixed(fixed))
            .unwrap(),
        fixed
    );
    assert_eq!(m.load(0, s, fixed.as_u64()).unwrap(), 0);
    m.vm().munmap(s, VirtAddr::new(a), 8 * PS).unwrap();
    assert!(m.load(0, s, a).is_err());
    m.destroy_space(child).unwrap();
    m.destroy_space(s).unwrap();
}
