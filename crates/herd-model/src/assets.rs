//! Where fetched files live: the cache that `herd fetch` fills (`$HERD_ASSETS`, by
//! default `~/.cache/herd-assets`), with a helper for tests that need one of its files.

use std::path::PathBuf;

/// The asset cache folder.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("HERD_ASSETS") {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/herd-assets")
        }
    }
}

/// For tests: the cached file `relative`, or `None` (with a note on stderr) when it has not
/// been fetched. With `CI` set a missing asset is a failure, not a skip.
pub fn for_test(relative: &str) -> Option<PathBuf> {
    let path = cache_dir().join(relative);
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "asset {} is missing: run tools/test.sh (it fetches the assets)",
        path.display()
    );
    eprintln!(
        "skipping: {} not found (tools/test.sh fetches it)",
        path.display()
    );
    None
}
