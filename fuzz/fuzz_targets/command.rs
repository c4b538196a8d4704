//! Fuzz target `command`: see `jitbot_fuzz::command` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jitbot_fuzz::command(data));
