//! Test helpers: where the fetched assets are.

use std::path::PathBuf;

/// A file of the asset cache (`../shared/assets/fetch.sh`), `$HERD_ASSETS` or
/// `~/.cache/herd-assets`. Outside CI a missing asset skips the test; with `CI` set it fails.
pub fn asset(relative: &str) -> Option<PathBuf> {
    let dir = std::env::var("HERD_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/herd-assets")
        });
    let path = dir.join(relative);
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").is_err(),
        "asset {} is missing: run ../shared/assets/fetch.sh",
        path.display()
    );
    eprintln!(
        "skipping: {} not found (run ../shared/assets/fetch.sh)",
        path.display()
    );
    None
}
