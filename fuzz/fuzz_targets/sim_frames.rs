#![no_main]

use libfuzzer_sys::fuzz_target;
use machvm_fuzz::sim_frames::{FrameOp, run};

fuzz_target!(|ops: Vec<FrameOp>| run(&ops));
