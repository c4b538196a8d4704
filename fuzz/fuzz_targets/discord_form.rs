//! Fuzz target `discord_form`: see `jitbot_fuzz::discord_form` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jitbot_fuzz::discord_form(data));
