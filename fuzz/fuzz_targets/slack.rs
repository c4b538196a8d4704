//! Fuzz target `slack`: see `jitbot_fuzz::slack` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jitbot_fuzz::slack(data));
