//! Crash points for the crash trials (`tests/crash.rs`): when the environment variable
//! `JITBOT_CRASH_AT` names a point, the process exits at once the first time it reaches it, as a
//! power cut would: no destructor, no graceful shutdown, no further write.
//!
//! Without the variable every point is inert (one cached environment lookup). Points:
//! - `after_decision`: an approval that reached the threshold has committed (approved + apply job).
//! - `after_put`: ARM confirmed the rule, before the request is marked active.
//! - `after_delete`: ARM confirmed the rule's removal, before the request is marked revoked.
//! - `after_chat_post`: a chat message was delivered, before its job is marked done.

use std::sync::OnceLock;

/// The exit status of a process stopped at a crash point (distinct from errors and signals).
pub const EXIT_CODE: i32 = 86;

static POINT: OnceLock<Option<String>> = OnceLock::new();

/// Exits the process at once if `JITBOT_CRASH_AT` names `point`.
pub fn hit(point: &str) {
    let chosen = POINT.get_or_init(|| std::env::var("JITBOT_CRASH_AT").ok());
    if chosen.as_deref() == Some(point) {
        eprintln!("JITBOT_CRASH_AT={point}: exiting now");
        std::process::exit(EXIT_CODE);
    }
}
