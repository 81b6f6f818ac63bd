#![no_main]

use libfuzzer_sys::fuzz_target;
use machvm_fuzz::tlb_flush::{Input, run};

fuzz_target!(|input: Input| run(&input));
