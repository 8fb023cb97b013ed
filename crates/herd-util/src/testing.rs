//! The one way a herd test skips. A test that needs something it cannot make itself — a fetched
//! asset (`tools/test.sh` fetches them), the steering repo's data beside the clone
//! (`../shared`), a program named by an environment variable (the pinned Python clients) — asks
//! for it here: present, it gets the path; absent, the skip is written to
//! the terminal (past the test harness's capture, so `cargo test` shows it) with the reason and
//! what to run, and under `CI=true` the test fails instead. Nothing else in a test may return
//! early or skip its cases.

use std::io::Write;
use std::path::PathBuf;

/// Whether the tests run in CI (`CI` set to anything but `false` or `0`), where nothing may
/// skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Skips the calling test: says so on the terminal, or fails it in CI.
pub fn skip(reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    assert!(!in_ci(), "{test} cannot run in CI: {reason}");
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// The fetched file `relative` of the asset cache (`$HERD_ASSETS`), or a skip.
pub fn asset(relative: &str) -> Option<PathBuf> {
    let path = crate::assets::cache_dir().join(relative);
    if path.exists() {
        return Some(path);
    }
    skip(&format!(
        "asset {} is missing (tools/test.sh fetches the assets)",
        path.display()
    ));
    None
}

/// The steering repo's folder (`../shared` beside this clone).
pub fn shared_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

/// The file or folder `relative` of `../shared`, or a skip.
pub fn shared(relative: &str) -> Option<PathBuf> {
    let path = shared_root().join(relative);
    if path.exists() {
        return Some(path);
    }
    skip(&format!(
        "{} is missing: the tests read ../shared beside the repository (its data/ folder)",
        path.display()
    ));
    None
}

/// The existing file named by environment variable `var` (set by `tools/test.sh`, which `made`
/// says how it makes it), or a skip.
pub fn env_file(var: &str, made: &str) -> Option<PathBuf> {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(path) if path.exists() => Some(path),
        Some(path) => {
            skip(&format!(
                "{var} names {}, which does not exist ({made})",
                path.display()
            ));
            None
        }
        None => {
            skip(&format!("{var} is not set ({made})"));
            None
        }
    }
}
