//! The entropy table: every region of every supported configuration, printed (run with
//! `--nocapture` to see it) and checked against the published bars of Linux and XNU.
//!
//! Bars (whole bits; see the crate README for sources):
//! - user mmap: Linux's default `mmap_rnd_bits` — 28 on `x86_64` and arm64 48-bit 4K, 26 with
//!   16K, 24 with 64K; arm64 39-bit 18/16/14 (Linux's minimum there, as its maximum is only
//!   24/22/20);
//! - executable: 16 (XNU's `x86_64` main-binary slide, the largest of XNU's);
//! - shared cache: 8 (XNU's dyld slide on arm64 16K);
//! - kernel text: 9 (Linux `x86_64` KASLR, "at best 9 bits"; macOS `x86_64` has 8);
//! - main stack: 22 (Linux `x86_64`'s page bits, before its sub-page offset).

// A host test: std is the natural choice.
#![allow(clippy::std_instead_of_core)]

use machvm_addr::PageSize;
use machvm_aslr::layout::SUPPORTED;
use machvm_aslr::{Arch, AslrRng, EntropyBits, LayoutBuilder, LayoutConfig, Policy, RegionKind};

/// The bar a region must reach in a configuration, in whole bits.
fn bar(c: &LayoutConfig, kind: RegionKind) -> Option<u8> {
    match kind {
        RegionKind::Mmap => Some(match (c.arch(), c.va().bits(), c.page()) {
            (Arch::Aarch64, 39, PageSize::Size4KiB) => 18,
            (Arch::Aarch64, 39, PageSize::Size16KiB) => 16,
            (Arch::Aarch64, 39, _) => 14,
            (Arch::Aarch64, _, PageSize::Size16KiB) => 26,
            (Arch::Aarch64, _, PageSize::Size64KiB) => 24,
            _ => 28,
        }),
        RegionKind::Executable => Some(16),
        RegionKind::SharedCache => Some(8),
        RegionKind::KernelText => Some(9),
        RegionKind::MainStack => Some(22),
        _ => None,
    }
}

#[test]
fn entropy_table_meets_linux_and_xnu_bars() {
    let mut table = String::new();
    table.push_str("| configuration |");
    for kind in RegionKind::ALL {
        table.push_str(&format!(" {} |", kind.name()));
    }
    table.push_str("\n|---|");
    for _ in RegionKind::ALL {
        table.push_str("---|");
    }
    table.push('\n');
    let mut rng = AslrRng::from_seed([0x7a; 32]);
    for &(arch, va, page) in &SUPPORTED {
        let c = LayoutConfig::new(arch, va, page).unwrap();
        let layout = LayoutBuilder::new(c).build(&mut rng).unwrap();
        table.push_str(&format!("| {arch} {}-bit {page} |", va.bits()));
        for kind in RegionKind::ALL {
            let r = layout.region(kind);
            let floor = Policy::default_for(&c).floor(kind);
            let mark = floor.map_or(String::new(), |f| format!(" [{f}]"));
            table.push_str(&format!(" {}{mark} |", r.bits()));
            if let Some(b) = bar(&c, kind) {
                assert!(
                    r.bits() >= EntropyBits::whole(b),
                    "{arch} {}-bit {page}: {kind:?} has {} bits, bar {b}",
                    va.bits(),
                    r.bits()
                );
            }
            if let Some(f) = floor {
                assert!(r.positions() >= 1 << f);
                assert!(
                    bar(&c, kind).is_some_and(|b| f >= b),
                    "policy floor below the bar"
                );
            }
        }
        table.push('\n');
    }
    println!("Entropy in bits per region (default policy floors in brackets):\n{table}");
}

#[test]
fn reports_print_for_every_configuration() {
    let mut rng = AslrRng::from_seed([0x7b; 32]);
    for &(arch, va, page) in &SUPPORTED {
        let c = LayoutConfig::new(arch, va, page).unwrap();
        let layout = LayoutBuilder::new(c).build(&mut rng).unwrap();
        let text = layout.to_string();
        println!("{text}\n");
        assert_eq!(text.lines().count(), 2 + RegionKind::ALL.len() + 1);
    }
}
