//! Fuzz target `oidc`: see `jitbot_fuzz::oidc` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| jitbot_fuzz::oidc(data));
