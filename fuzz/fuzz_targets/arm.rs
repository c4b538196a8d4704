//! Fuzz target `arm`: see `jitbot_fuzz::arm` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jitbot_fuzz::arm(data));
