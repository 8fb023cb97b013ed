//! Writing so that nothing already written is lost or silently mixed with another run's:
//! files are written under a temporary name and renamed when complete, and a command's output
//! folder is checked before anything is written into it — an older output is reused only when
//! it was made from the same inputs and settings ([`RunDir`]), replaced only when the user says
//! `--overwrite`, and a folder herd did not make is never deleted.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{FileError, Result};
use crate::text::printable_path;

/// Writes `bytes` to `path` (creating its folder) through a temporary file and a rename, so a
/// crash never leaves a half-written file under the final name.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes).map_err(|e| FileError::io(path, e))?;
    file.commit()
}

/// A file written under a hidden temporary name beside `path` and renamed to `path` by
/// [`AtomicFile::commit`]; dropped without a commit, the temporary file is removed.
pub struct AtomicFile {
    tmp: PathBuf,
    path: PathBuf,
    writer: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Starts writing `path` (its folder is created).
    pub fn create(path: &Path) -> Result<AtomicFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| FileError::io(dir, e))?;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let tmp = path.with_file_name(format!(".{name}.tmp"));
        let file = File::create(&tmp).map_err(|e| FileError::io(&tmp, e))?;
        Ok(AtomicFile {
            tmp,
            path: path.to_path_buf(),
            writer: Some(BufWriter::new(file)),
        })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes and renames the file into place.
    pub fn commit(mut self) -> Result<()> {
        let writer = self.writer.take().expect("written once");
        writer
            .into_inner()
            .map_err(|e| FileError::io(&self.tmp, e.into_error()))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| FileError::io(&self.path, e))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer.as_mut().expect("not committed").write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.as_mut().expect("not committed").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The name of the file that marks a folder as a herd command's output and records what it was
/// made from.
pub const MARKER: &str = ".herd-run.json";

/// What to do with an output folder that already holds a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refuse (the default): the user must say `--resume` or `--overwrite`, or pick another
    /// folder.
    Refuse,
    /// Continue it, if it was made from the same inputs and settings.
    Resume,
    /// Delete it and start again (only a folder herd made, or an empty one).
    Overwrite,
}

impl Existing {
    /// What a command's `--resume` and `--overwrite` flags ask for (both at once is refused:
    /// one continues a run, the other deletes it).
    pub fn from_flags(resume: bool, overwrite: bool) -> Result<Existing> {
        match (resume, overwrite) {
            (true, true) => Err(FileError::setting(
                "--resume and --overwrite",
                "one continues a run and the other deletes it: pass one of them",
            )),
            (true, false) => Ok(Existing::Resume),
            (false, true) => Ok(Existing::Overwrite),
            (false, false) => Ok(Existing::Refuse),
        }
    }
}

/// An output folder, checked against what it already holds.
#[derive(Debug)]
pub struct RunDir {
    /// The folder.
    pub path: PathBuf,
    /// Whether it already held a run of the same command, inputs and settings (so the caller
    /// continues it).
    pub resumed: bool,
}

impl RunDir {
    /// Opens `dir` as the output of `command` made from `fingerprint` (a JSON object: one key
    /// per input or setting group, its value a hash or the setting itself):
    /// - absent or empty: created and marked;
    /// - marked by the same command with the same fingerprint: resumed when `existing` is
    ///   [`Existing::Resume`], else refused unless [`Existing::Overwrite`];
    /// - marked with another command or fingerprint: refused with the keys that differ, unless
    ///   [`Existing::Overwrite`];
    /// - holding files but no marker: always refused (herd does not delete what it did not
    ///   write).
    pub fn open(
        dir: &Path,
        command: &str,
        fingerprint: &Value,
        existing: Existing,
    ) -> Result<RunDir> {
        let shown = printable_path(dir);
        let marker_path = dir.join(MARKER);
        let marker = match std::fs::read(&marker_path) {
            Ok(bytes) => Some(serde_json::from_slice::<Value>(&bytes).map_err(|e| {
                FileError::format(&marker_path, format!("unreadable run marker ({e})"))
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(FileError::io(&marker_path, e)),
        };
        let wanted = serde_json::json!({"command": command, "fingerprint": fingerprint});
        match marker {
            None if !is_empty_dir(dir)? => {
                return Err(FileError::format(
                    dir,
                    format!(
                        "the folder already holds files that herd did not write (no {MARKER}): \
                         choose an empty or new folder for the output, or remove {shown} yourself"
                    ),
                ))
            }
            None => {}
            Some(found) if found == wanted && existing == Existing::Resume => {
                return Ok(RunDir {
                    path: dir.to_path_buf(),
                    resumed: true,
                })
            }
            Some(_) if existing == Existing::Overwrite => {
                std::fs::remove_dir_all(dir).map_err(|e| FileError::io(dir, e))?;
            }
            Some(found) if found == wanted => {
                return Err(FileError::format(
                    dir,
                    "already holds this run's output: pass --resume to continue it or \
                     --overwrite to start again, or choose another folder",
                ))
            }
            Some(found) => {
                let what = differences(&found, &wanted).join(", ");
                return Err(FileError::format(
                    dir,
                    format!(
                        "holds the output of another run ({what} differ): choose another folder, \
                         or pass --overwrite to delete it and start again"
                    ),
                ));
            }
        }
        std::fs::create_dir_all(dir).map_err(|e| FileError::io(dir, e))?;
        write_atomic(
            &marker_path,
            &serde_json::to_vec_pretty(&wanted).expect("json"),
        )?;
        Ok(RunDir {
            path: dir.to_path_buf(),
            resumed: false,
        })
    }
}

/// The keys of two markers whose values differ (`command`, or `fingerprint.<key>`).
fn differences(found: &Value, wanted: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if found.get("command") != wanted.get("command") {
        out.push(format!(
            "the command ({} vs {})",
            found.get("command").unwrap_or(&Value::Null),
            wanted.get("command").unwrap_or(&Value::Null)
        ));
    }
    let empty = serde_json::Map::new();
    let keys = |v: &Value| v.get("fingerprint").and_then(Value::as_object).cloned();
    let (a, b) = (
        keys(found).unwrap_or_default(),
        keys(wanted).unwrap_or_else(|| empty.clone()),
    );
    let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        if a.get(name) != b.get(name) {
            out.push(name.clone());
        }
    }
    if out.is_empty() {
        out.push("the run marker".into());
    }
    out
}

/// Whether `dir` is absent or holds nothing.
pub fn is_empty_dir(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(FileError::format(
            dir,
            "is a file, but a folder is needed for the output",
        )),
        Err(e) => Err(FileError::io(dir, e)),
    }
}

/// A folder written whole under a hidden temporary name beside `dir` and renamed to `dir` by
/// [`StagedDir::commit`]: readers never see half of it, and a killed run leaves the old `dir`
/// (if any) untouched. A non-empty `dir` is refused unless `overwrite`, and even then only
/// replaced when herd made it (it holds [`MARKER`]).
pub struct StagedDir {
    tmp: PathBuf,
    dir: PathBuf,
    committed: bool,
}

impl StagedDir {
    /// Checks `dir` and creates the temporary folder; `command` and `fingerprint` are recorded
    /// in the marker.
    pub fn new(
        dir: &Path,
        command: &str,
        fingerprint: &Value,
        overwrite: bool,
    ) -> Result<StagedDir> {
        if !is_empty_dir(dir)? {
            if !dir.join(MARKER).is_file() {
                return Err(FileError::format(
                    dir,
                    format!(
                        "the output folder is not empty and herd did not write it (no {MARKER}): \
                         choose a new folder or remove it yourself"
                    ),
                ));
            }
            if !overwrite {
                return Err(FileError::format(
                    dir,
                    "the output folder already holds an output: pass --overwrite to replace it, \
                     or choose a new folder",
                ));
            }
        }
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("out");
        let tmp = dir.with_file_name(format!(".{name}.tmp"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| FileError::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| FileError::io(&tmp, e))?;
        let marker = serde_json::json!({"command": command, "fingerprint": fingerprint});
        write_atomic(
            &tmp.join(MARKER),
            &serde_json::to_vec_pretty(&marker).expect("json"),
        )?;
        Ok(StagedDir {
            tmp,
            dir: dir.to_path_buf(),
            committed: false,
        })
    }

    /// Where to write now.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Where the output will be once committed.
    pub fn final_path(&self) -> &Path {
        &self.dir
    }

    /// Replaces `dir` with the finished folder.
    pub fn commit(mut self) -> Result<PathBuf> {
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir).map_err(|e| FileError::io(&self.dir, e))?;
        }
        std::fs::rename(&self.tmp, &self.dir).map_err(|e| FileError::io(&self.dir, e))?;
        self.committed = true;
        Ok(self.dir.clone())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Refuses to replace an existing file `path` unless `overwrite` (for commands whose output is
/// one file, such as a trained vocabulary).
pub fn check_new_file(path: &Path, overwrite: bool) -> Result<()> {
    if path.is_dir() {
        return Err(FileError::format(
            path,
            "is a folder, but the output is a file",
        ));
    }
    if path.exists() && !overwrite {
        return Err(FileError::format(
            path,
            "already exists: pass --overwrite to replace it, or choose another name",
        ));
    }
    Ok(())
}

/// A leading `~/` as the home folder (paths in recipe and pipeline files).
pub fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

/// The files of `inputs`: files as given (whatever their name), folders recursively in name
/// order keeping the files `wanted` accepts. A missing input is an error naming it.
pub fn list_files(inputs: &[PathBuf], wanted: &dyn Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(|e| FileError::io(input, e))?
                .map(|e| e.map(|e| e.path()).map_err(|e| FileError::io(input, e)))
                .collect::<Result<_>>()?;
            entries.sort();
            for entry in entries {
                if entry.is_dir() {
                    files.extend(list_files(&[entry], wanted)?);
                } else if wanted(&entry) {
                    files.push(entry);
                }
            }
        } else if input.exists() {
            files.push(input.clone());
        } else {
            return Err(FileError::format(input, "no such file or folder"));
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn folders_are_listed_recursively_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("b/c")).unwrap();
        for name in ["z.jsonl", "a.txt", "b/c/d.jsonl", "b/e.jsonl"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let json = |p: &Path| p.extension().is_some_and(|e| e == "jsonl");
        let files = list_files(&[dir.path().to_path_buf()], &json).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["b/c/d.jsonl", "b/e.jsonl", "z.jsonl"]);
        let given = list_files(&[dir.path().join("a.txt")], &json).unwrap();
        assert_eq!(given.len(), 1, "a file named on its own is taken as it is");
        let err = list_files(&[dir.path().join("nope")], &json).unwrap_err();
        assert!(err.to_string().contains("no such file"), "{err}");
    }

    #[test]
    fn atomic_files_appear_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/a.txt");
        write_atomic(&path, b"one").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        let mut f = AtomicFile::create(&path).unwrap();
        f.write_all(b"two, half written").unwrap();
        drop(f); // a failure before the commit
        assert_eq!(std::fs::read(&path).unwrap(), b"one", "the old file stays");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn run_folders_are_resumed_only_with_the_same_inputs() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("run");
        let fp = json!({"data": "abc", "recipe": "r1"});
        let first = RunDir::open(&dir, "pretrain", &fp, Existing::Refuse).unwrap();
        assert!(!first.resumed);
        std::fs::write(dir.join("metrics.jsonl"), "{}").unwrap();
        let err = RunDir::open(&dir, "pretrain", &fp, Existing::Refuse).unwrap_err();
        assert!(err.to_string().contains("--resume"), "{err}");
        assert!(
            RunDir::open(&dir, "pretrain", &fp, Existing::Resume)
                .unwrap()
                .resumed
        );
        let other = json!({"data": "xyz", "recipe": "r1"});
        let err = RunDir::open(&dir, "pretrain", &other, Existing::Resume).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("data") && !message.contains("recipe"),
            "{message}"
        );
        let err = RunDir::open(&dir, "sft", &fp, Existing::Resume).unwrap_err();
        assert!(err.to_string().contains("command"), "{err}");
        let fresh = RunDir::open(&dir, "pretrain", &other, Existing::Overwrite).unwrap();
        assert!(!fresh.resumed && !dir.join("metrics.jsonl").exists());
    }

    #[test]
    fn a_folder_herd_did_not_write_is_never_deleted() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("precious.txt"), "keep").unwrap();
        for existing in [Existing::Refuse, Existing::Resume, Existing::Overwrite] {
            let err = RunDir::open(root.path(), "pretrain", &json!({}), existing).unwrap_err();
            assert!(err.to_string().contains("did not write"), "{err}");
        }
        assert!(StagedDir::new(root.path(), "tokenize", &json!({}), true).is_err());
        assert!(root.path().join("precious.txt").exists());
    }

    #[test]
    fn staged_folders_replace_the_old_one_only_when_committed() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("shards");
        let staged = StagedDir::new(&out, "tokenize", &json!({"a": 1}), false).unwrap();
        std::fs::write(staged.path().join("00000.tokens"), "x").unwrap();
        assert!(!out.exists());
        staged.commit().unwrap();
        assert!(out.join("00000.tokens").exists());
        let err = StagedDir::new(&out, "tokenize", &json!({"a": 2}), false)
            .err()
            .unwrap();
        assert!(err.to_string().contains("--overwrite"), "{err}");
        let staged = StagedDir::new(&out, "tokenize", &json!({"a": 2}), true).unwrap();
        std::fs::write(staged.path().join("00001.tokens"), "y").unwrap();
        drop(staged); // killed before the end: the old output stays as it was
        assert!(out.join("00000.tokens").exists());
        let staged = StagedDir::new(&out, "tokenize", &json!({"a": 2}), true).unwrap();
        std::fs::write(staged.path().join("00001.tokens"), "y").unwrap();
        staged.commit().unwrap();
        assert!(
            !out.join("00000.tokens").exists(),
            "no shard of the old run is left"
        );
        assert!(out.join("00001.tokens").exists());
    }
}
