//! Every input a fuzz target (`fuzz/`) once failed on, kept under
//! `tests/fuzz-regressions/<target>/` and replayed through the target's own body
//! (`fuzz/src/lib.rs`, included here), plus the targets' seed inputs (`fuzz/seeds/<target>/`).
//! `cargo test` keeps fixed crashes fixed without cargo-fuzz or a nightly compiler.

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::{Path, PathBuf};

/// The files of `dir` (none if it does not exist), sorted, without the `.keep` placeholder.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".keep"));
    files.sort();
    files
}

/// Runs `target` on every saved input; a panic names the file.
fn replay(name: &str, target: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for dir in [
        root.join("tests/fuzz-regressions").join(name),
        root.join("fuzz/seeds").join(name),
    ] {
        for file in inputs(&dir) {
            let data = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{} fails again", file.display());
            n += 1;
        }
    }
    n
}

#[test]
fn command_inputs_pass() {
    assert!(replay("command", harness::command) > 0);
}

#[test]
fn slack_inputs_pass() {
    assert!(replay("slack", harness::slack) > 0);
}

#[test]
fn discord_inputs_pass() {
    assert!(replay("discord", harness::discord) > 0);
}

#[test]
fn config_inputs_pass() {
    assert!(replay("config", harness::config) > 0);
}

#[test]
fn arm_inputs_pass() {
    assert!(replay("arm", harness::arm) > 0);
}
