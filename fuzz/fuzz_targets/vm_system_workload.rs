//! The machine simulator driven by the fuzz input: the bytes decode into a workload (stores,
//! loads, forks, exits, unmaps, protection changes, pageout steps over up to three address
//! spaces of 24 pages in 20 frames), run on `machvm::sim` — real page tables, software-TLB
//! CPUs — and checked against the flat model of `machvm-tests`: every byte read, every fault
//! expected, no stale translation, no frame or page table lost.

#![no_main]

use libfuzzer_sys::fuzz_target;
use machvm_tests::workload::{self, Op};

fuzz_target!(|data: &[u8]| {
    let mut bytes = data;
    let mut ops = Vec::new();
    while ops.len() < 300 {
        match Op::decode(&mut bytes) {
            Some(op) => ops.push(op),
            None => break,
        }
    }
    workload::run(20, &ops);
});
