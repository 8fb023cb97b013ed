//! Fingerprints: short content hashes (XXH3-128, hex) that a run records beside its output so
//! that a resumed or repeated run can tell whether its inputs and settings are still the ones
//! the output was made from. Files are hashed by content, never by name or time: a copy is the
//! same input, an edited file is not.

use std::io::Read;
use std::path::Path;

use xxhash_rust::xxh3::Xxh3;

use crate::error::{FileError, Result};

/// The hash of `bytes`, as 32 hex digits.
pub fn of_bytes(bytes: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(bytes))
}

/// The hash of a JSON value (a setting group): of its compact serialization, in the key order
/// it was built with.
pub fn of_json(value: &serde_json::Value) -> String {
    of_bytes(&serde_json::to_vec(value).expect("a JSON value serializes"))
}

/// The hash of the content of the file `path`, read in 1 MiB blocks.
pub fn of_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| FileError::io(path, e))?;
    let mut hasher = Xxh3::new();
    let mut block = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut block).map_err(|e| FileError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&block[..n]);
    }
    Ok(format!("{:032x}", hasher.digest128()))
}

/// The hash of several files' contents, in the order given (names do not count, order does).
pub fn of_files<P: AsRef<Path>>(paths: &[P]) -> Result<String> {
    let mut joined = String::new();
    for path in paths {
        joined.push_str(&of_file(path.as_ref())?);
        joined.push('\n');
    }
    Ok(of_bytes(joined.as_bytes()))
}

/// The hash of a file, or of a folder's files (recursively, by name order, each name with its
/// content): a model given as a GGUF file or an HF or Meta folder.
pub fn of_path(path: &Path) -> Result<String> {
    if !path.is_dir() {
        return of_file(path);
    }
    let files = crate::fs::list_files(&[path.to_path_buf()], &|_| true)?;
    let mut joined = String::new();
    for file in &files {
        let name = file.strip_prefix(path).unwrap_or(file);
        joined.push_str(&format!("{}\t{}\n", name.display(), of_file(file)?));
    }
    Ok(of_bytes(joined.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_fingerprinted_by_content_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        std::fs::write(&a, "one").unwrap();
        std::fs::write(&b, "one").unwrap();
        std::fs::write(&c, vec![7u8; 3 << 20]).unwrap();
        assert_eq!(
            of_file(&a).unwrap(),
            of_file(&b).unwrap(),
            "a copy is the same input"
        );
        assert_eq!(of_file(&a).unwrap(), of_bytes(b"one"));
        assert_eq!(
            of_file(&c).unwrap(),
            of_bytes(&vec![7u8; 3 << 20]),
            "read in blocks"
        );
        assert_ne!(of_files(&[&a, &c]).unwrap(), of_files(&[&c, &a]).unwrap());
        std::fs::write(&b, "two").unwrap();
        assert_ne!(of_file(&a).unwrap(), of_file(&b).unwrap());
        assert_eq!(of_file(&a).unwrap().len(), 32);
        assert!(of_file(&dir.path().join("missing")).is_err());
        let folder = of_path(dir.path()).unwrap();
        std::fs::rename(dir.path().join("c"), dir.path().join("d")).unwrap();
        assert_ne!(
            of_path(dir.path()).unwrap(),
            folder,
            "names count in a folder"
        );
        assert_eq!(of_path(&a).unwrap(), of_file(&a).unwrap());
    }
}
