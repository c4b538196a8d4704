//! Fuzz target `discord`: see `jitbot_fuzz::discord` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jitbot_fuzz::discord(data));
