//! Page-table operation sequences on every format, checked against the reference model of
//! `machvm_page_table::testing`.
//!
//! Input: one byte choosing the format (`% 8`, in the order of [`FORMATS`]) and the window
//! (`/ 8 % 4`: bottom or top of the lower
//! half, bottom or top of the upper half; aarch64 tables translate the half the window is
//! in), then operations decoded by [`Op::decode`], at most [`MAX_OPS`].

use machvm_addr::SimPhysMemory;
use machvm_page_table::testing::{Op, SIM_BYTES, WINDOW, run_ops_on};
use machvm_page_table::{
    A64Granule4K39, A64Granule4K48, A64Granule16K47, A64Granule16K48, A64Granule64K42,
    A64Granule64K48, Format, Region, X86Pml4, X86Pml5,
};

/// Operations run per input (each is followed by a full check of the window).
pub const MAX_OPS: usize = 64;

/// The formats the first byte chooses from, in order.
pub const FORMATS: [&str; 8] = [
    X86Pml4::NAME,
    X86Pml5::NAME,
    A64Granule4K48::NAME,
    A64Granule16K47::NAME,
    A64Granule64K48::NAME,
    A64Granule4K39::NAME,
    A64Granule16K48::NAME,
    A64Granule64K42::NAME,
];

/// Returns the region and window base for format `F` and window choice `w % 4`.
fn window<F: Format>(w: u8) -> (Region, u64) {
    let half = F::VA_WIDTH.half_size();
    let upper = w & 2 != 0;
    let base = match w % 4 {
        0 => 0x40_0000_0000,
        1 => half - WINDOW,
        2 => half.wrapping_neg(),
        _ => WINDOW.wrapping_neg(),
    };
    let region = if F::BOTH_HALVES {
        Region::Both
    } else if upper {
        Region::Upper
    } else {
        Region::Lower
    };
    (region, base)
}

thread_local! {
    /// One simulation for every input: building (zeroing) it costs more than most runs, and
    /// each run hands every frame back.
    static SIM: SimPhysMemory = SimPhysMemory::builder()
        .size_bytes(SIM_BYTES)
        .build()
        .expect("building the simulation");
}

fn run_on<F: Format>(w: u8, ops: &[Op]) {
    let (region, base) = window::<F>(w);
    SIM.with(|sim| run_ops_on::<F>(sim, region, base, ops));
}

/// Decodes `data` and runs it; panics on the first divergence from the model.
pub fn run(data: &[u8]) {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let ops = Op::decode_all(rest, MAX_OPS);
    let w = choice / 8 % 4;
    match choice % 8 {
        0 => run_on::<X86Pml4>(w, &ops),
        1 => run_on::<X86Pml5>(w, &ops),
        2 => run_on::<A64Granule4K48>(w, &ops),
        3 => run_on::<A64Granule16K47>(w, &ops),
        4 => run_on::<A64Granule64K48>(w, &ops),
        5 => run_on::<A64Granule4K39>(w, &ops),
        6 => run_on::<A64Granule16K48>(w, &ops),
        _ => run_on::<A64Granule64K42>(w, &ops),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A sequence touching every operation: blocks, splits by partial unmap and protect,
    /// harvests, injected failures, translations of mapped and unmapped addresses.
    fn mixed_ops() -> Vec<Op> {
        vec![
            Op::MapRange {
                unit: 1,
                idx: 1,
                count: 3,
                pa_idx: 1,
                attrs: 1,
                largest: 1,
                contiguous: true,
            },
            Op::Translate { offset: 0x20_1008 },
            Op::Harvest {
                unit: 0,
                idx: 3,
                count: 2,
                clear: 3,
            },
            Op::FailNext { after: 0 },
            Op::UnmapRange {
                unit: 0,
                idx: 3,
                count: 2,
                visit: true,
            },
            Op::UnmapRange {
                unit: 0,
                idx: 3,
                count: 2,
                visit: true,
            },
            Op::Protect {
                unit: 0,
                idx: 5,
                count: 7,
                attrs: 2,
            },
            Op::Map {
                size: 0,
                idx: 3,
                pa_idx: 5,
                attrs: 0,
            },
            Op::Cursor {
                size: 0,
                idx: 500,
                count: 30,
                pa_idx: 1,
                attrs: 1,
                mode: 0,
            },
            Op::Cursor {
                size: 0,
                idx: 505,
                count: 20,
                pa_idx: 0,
                attrs: 0,
                mode: 3,
            },
            Op::Map {
                size: 0,
                idx: 3,
                pa_idx: 5,
                attrs: 0,
            },
            Op::MapRange {
                unit: 2,
                idx: 2,
                count: 1,
                pa_idx: 0,
                attrs: 3,
                largest: 2,
                contiguous: false,
            },
            Op::UnmapLeaf { unit: 2, idx: 2 },
            Op::UnmapLeaf { unit: 0, idx: 3 },
            Op::Translate { offset: WINDOW - 8 },
            Op::UnmapRange {
                unit: 2,
                idx: 0,
                count: 4,
                visit: false,
            },
        ]
    }

    fn input(choice: u8, ops: &[Op]) -> Vec<u8> {
        let mut bytes = vec![choice];
        for op in ops {
            op.encode(&mut bytes);
        }
        bytes
    }

    #[test]
    fn mixed_sequence_passes_on_every_format_and_window() {
        for choice in 0..32 {
            run(&input(choice, &mixed_ops()));
        }
    }

    #[test]
    fn encoded_input_decodes_to_the_same_ops() {
        let bytes = input(0, &mixed_ops());
        assert_eq!(Op::decode_all(&bytes[1..], MAX_OPS), mixed_ops());
    }

    #[test]
    fn short_and_arbitrary_inputs_pass() {
        run(&[]);
        run(&[3]);
        let bytes: Vec<u8> = (0..=255).collect();
        for choice in 0..32 {
            let mut data = bytes.clone();
            data[0] = choice;
            run(&data);
        }
    }

    #[test]
    fn formats_are_the_five_listed() {
        assert_eq!(FORMATS.len(), 8);
        assert_eq!(FORMATS[3], "aarch64-16k-47bit");
    }

    /// Writes one seed per format and window into `corpus/page_table_ops` (if the corpus
    /// directory exists, as it does in this repository).
    #[test]
    fn writes_seed_corpus() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        if !dir.is_dir() {
            return;
        }
        let dir = dir.join("page_table_ops");
        std::fs::create_dir_all(&dir).expect("creating the corpus directory");
        for choice in 0..32u8 {
            let path = dir.join(format!("seed-mixed-{choice:02}"));
            std::fs::write(path, input(choice, &mixed_ops())).expect("writing a seed");
        }
    }
}
