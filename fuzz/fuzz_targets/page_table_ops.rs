#![no_main]

use libfuzzer_sys::fuzz_target;
use machvm_fuzz::page_table_ops::run;

fuzz_target!(|data: &[u8]| run(data));
