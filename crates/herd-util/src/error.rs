//! The errors about files and settings that every herd crate shares: each names the file (and
//! where in it) or the setting, so the message says what to fix. Crates wrap [`FileError`] in
//! their own error type rather than defining these variants again.

use std::path::{Path, PathBuf};

/// Something wrong with a file or a setting.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The OS refused a read or write.
    #[error("{}: {source}", crate::text::printable_path(path))]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS's reason.
        source: std::io::Error,
    },
    /// The content is not what it should be (the message says where: line, record, offset,
    /// tensor).
    #[error(
        "{}: {}",
        crate::text::printable_path(path),
        crate::text::printable(message)
    )]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
    /// A setting has a value that makes no sense.
    #[error(
        "{}: {}",
        crate::text::printable(origin),
        crate::text::printable(message)
    )]
    Setting {
        /// Where it was set: a file and its section (`recipes/tiny.toml [optimizer]`) or a
        /// command-line flag.
        origin: String,
        /// What is wrong, naming the key (`peak_lr must be a finite number above 0, got NaN`).
        message: String,
    },
}

impl FileError {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> FileError {
        FileError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A content error in `path`.
    pub fn format(path: impl AsRef<Path>, message: impl Into<String>) -> FileError {
        FileError::Format {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }

    /// A bad setting from `origin`.
    pub fn setting(origin: impl Into<String>, message: impl Into<String>) -> FileError {
        FileError::Setting {
            origin: origin.into(),
            message: message.into(),
        }
    }
}

/// herd-util's result type.
pub type Result<T> = std::result::Result<T, FileError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_a_corrupt_file_reach_the_terminal_escaped() {
        let err = FileError::format("m.gguf", "tensor `\u{1b}[2Jgone` has no data");
        assert_eq!(
            err.to_string(),
            "m.gguf: tensor `\\u{1b}[2Jgone` has no data"
        );
    }
}
