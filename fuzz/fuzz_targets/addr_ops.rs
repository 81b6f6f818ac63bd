#![no_main]

use libfuzzer_sys::fuzz_target;
use machvm_fuzz::addr_ops::{AddrOp, run};

fuzz_target!(|ops: Vec<AddrOp>| run(&ops));
