//! Fuzz target `config`: see `jitbot_fuzz::config` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jitbot_fuzz::config(data));
