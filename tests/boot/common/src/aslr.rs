//! The ASLR check: seed `machvm-aslr` from the CPU's random-number instruction (`RDSEED` /
//! `RDRAND` on x86_64, `RNDRRS` / `RNDR` on aarch64), build this machine's address-space
//! layout with it and print the vmmap-style report.

use machvm_aslr::arch::HwRng;
use machvm_aslr::{AslrRng, HwEntropy, LayoutBuilder, LayoutConfig, RegionKind};

use crate::report::{info, pass};
use crate::{ensure, kprintln, must};

/// Seeds from `hw` and builds a layout of `config`; when the CPU has no random instruction the check
/// reports it (an explicit "no entropy", not a weak fallback) and skips the rest.
pub fn check<H: HwRng>(hw: H, config: LayoutConfig) {
    let features = hw.features();
    let mut source = HwEntropy::new(hw);
    let mut rng = match AslrRng::from_source(&mut source) {
        Ok(rng) => rng,
        Err(e) => {
            info(
                "aslr",
                format_args!("no hardware entropy ({features:?}): {e}; layout not randomised"),
            );
            return;
        }
    };
    let used = source.last_used();
    let layout = must!(
        LayoutBuilder::new(config).build(&mut rng),
        "building the layout"
    );
    kprintln!("{layout}");
    let again = must!(
        LayoutBuilder::new(config).build(&mut rng),
        "a second layout"
    );
    let mmap = layout.region(RegionKind::Mmap);
    ensure!(
        again.region(RegionKind::Mmap).range() != mmap.range()
            || again.region(RegionKind::Executable).range()
                != layout.region(RegionKind::Executable).range(),
        "two layouts from the same generator are identical"
    );
    pass(
        "aslr",
        format_args!(
            "seeded by {used:?} ({features:?}); mmap base {} bits, executable {} bits, \
             kernel text {} bits; a second layout differs",
            mmap.bits(),
            layout.region(RegionKind::Executable).bits(),
            layout.region(RegionKind::KernelText).bits(),
        ),
    );
}
