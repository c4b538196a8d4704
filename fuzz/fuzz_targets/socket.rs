//! Fuzz target `socket`: see `jitbot_fuzz::socket` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jitbot_fuzz::socket(data));
