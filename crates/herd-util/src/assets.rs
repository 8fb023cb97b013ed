//! Where fetched files live: the cache that `herd fetch` fills (`$HERD_ASSETS`, by default
//! `~/.cache/herd-assets`; `../shared/assets/fetch.sh` uses the same folder).

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
