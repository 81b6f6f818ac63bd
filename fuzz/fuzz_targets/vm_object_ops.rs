#![no_main]

use libfuzzer_sys::fuzz_target;
use machvm_fuzz::vm_object_ops::{Op, run};

fuzz_target!(|ops: Vec<Op>| run(&ops));
