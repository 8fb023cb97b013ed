//! A seeded mutation fuzzer for the parsers of outside data, run as ordinary tests on stable
//! Rust. Each parser's test starts from real files (or small ones written by the real tools),
//! mutates them — bit flips, interesting bytes and integers written over size fields, cut,
//! repeated, deleted and spliced ranges — and feeds every case to the parser, which must return
//! (an error is fine) and never panic.
//!
//! The number of cases is small by default so the test suite stays fast; `HERD_FUZZ_CASES=N`
//! runs N per parser and `HERD_FUZZ_SEED=S` draws other cases. A case that panics is saved to
//! a file named in the failure message; committed under the test's regression folder it is run
//! first every time after.

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use crate::seeded::{fnv1a64, splitmix64};

/// Values that break size and count fields: 0, 1, −1, powers of two around the type limits.
const INTERESTING: [u64; 14] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    i64::MAX as u64,
    u64::MAX,
];

/// Bytes that matter to text formats.
const INTERESTING_BYTES: [u8; 12] = [
    0, 1, 0x7f, 0x80, 0xc3, 0xff, b'\n', b'\r', b'"', b'{', b'<', b'\\',
];

/// Draws mutated copies of inputs from one seeded stream.
pub struct Mutator {
    state: u64,
}

impl Mutator {
    /// A mutator whose cases are a function of `seed`.
    pub fn new(seed: u64) -> Mutator {
        Mutator { state: seed }
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (splitmix64(&mut self.state) % n as u64) as usize
        }
    }

    /// A position to change: half the time within the first 256 bytes (headers, sizes).
    fn position(&mut self, len: usize) -> usize {
        if self.below(2) == 0 {
            self.below(len.min(256))
        } else {
            self.below(len)
        }
    }

    /// `input` with one to eight random changes.
    pub fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        let changes = 1 + self.below(8);
        for _ in 0..changes {
            let len = out.len();
            match self.below(9) {
                0 if len > 0 => {
                    let at = self.position(len);
                    out[at] ^= 1 << self.below(8);
                }
                1 if len > 0 => {
                    let at = self.position(len);
                    out[at] = INTERESTING_BYTES[self.below(INTERESTING_BYTES.len())];
                }
                2 if len >= 8 => {
                    // An interesting integer over 2, 4 or 8 bytes, either endianness.
                    let width = [2, 4, 8][self.below(3)];
                    let at = self.position(len - width + 1);
                    let value = INTERESTING[self.below(INTERESTING.len())];
                    let bytes = if self.below(2) == 0 {
                        value.to_le_bytes()
                    } else {
                        value.to_be_bytes()
                    };
                    out[at..at + width].copy_from_slice(&bytes[..width]);
                }
                3 if len > 0 => {
                    let at = self.below(len);
                    let n = 1 + self.below((len - at).min(64));
                    out.drain(at..at + n);
                }
                4 if len > 0 => {
                    let at = self.below(len);
                    let n = 1 + self.below((len - at).min(64));
                    let piece = out[at..at + n].to_vec();
                    let to = self.below(len + 1);
                    out.splice(
                        to..to,
                        piece.iter().copied().cycle().take(n * (1 + self.below(4))),
                    );
                }
                5 => out.truncate(self.below(len + 1)),
                6 => {
                    let to = self.below(len + 1);
                    let n = 1 + self.below(16);
                    let bytes: Vec<u8> =
                        (0..n).map(|_| splitmix64(&mut self.state) as u8).collect();
                    out.splice(to..to, bytes);
                }
                7 if len > 1 => {
                    // Overwrite a range with a copy of another range.
                    let n = 1 + self.below(len.min(32));
                    let (from, to) = (self.below(len - n + 1), self.below(len - n + 1));
                    let piece = out[from..from + n].to_vec();
                    out[to..to + n].copy_from_slice(&piece);
                }
                _ if len > 0 => {
                    let at = self.position(len);
                    out[at] = out[at].wrapping_add(1 + self.below(3) as u8);
                }
                _ => out.push(splitmix64(&mut self.state) as u8),
            }
        }
        out
    }
}

/// How many cases a parser's fuzz test runs: `HERD_FUZZ_CASES`, or `default`.
pub fn cases(default: usize) -> usize {
    std::env::var("HERD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The inputs committed under `dir` (a test's regression cases), in name order.
pub fn regressions(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    paths
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("a regression case is readable");
            (p, bytes)
        })
        .collect()
}

/// Runs `check` on the committed regression cases of `regression_dir`, then on
/// [`cases`]`(default_cases)` mutations of `seeds`; `check` must not panic (it returns whatever
/// the parser says). Returns how many cases ran. A panicking case is written to a file and the
/// test fails naming it.
pub fn run(
    name: &str,
    seeds: &[Vec<u8>],
    regression_dir: &Path,
    default_cases: usize,
    check: impl Fn(&[u8]),
) -> usize {
    assert!(!seeds.is_empty(), "fuzz target {name} has no seed inputs");
    let crash_dir = std::env::temp_dir().join("herd-fuzz");
    std::fs::create_dir_all(&crash_dir).expect("temp dir");
    let current = crash_dir.join(format!("{name}.current"));
    let mut ran = 0;
    let run_one = |label: &str, input: &[u8]| {
        // Kept on disk while it runs: a case that aborts the process (an allocation the machine
        // cannot make) is still there to be found.
        let _ = std::fs::write(&current, input);
        let outcome = catch_unwind(AssertUnwindSafe(|| check(input)));
        if let Err(panic) = outcome {
            let saved = crash_dir.join(format!("{name}-{label}.bin"));
            std::fs::write(&saved, input).expect("write crash case");
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "fuzz target {name}: case {label} panicked ({message}); the input is saved as {} — \
                 fix the parser and commit the file under {} as a regression case",
                saved.display(),
                regression_dir.display()
            );
        }
    };
    for (path, bytes) in regressions(regression_dir) {
        run_one(
            &path.file_name().unwrap_or_default().to_string_lossy(),
            &bytes,
        );
        ran += 1;
    }
    for seed in seeds {
        run_one("seed", seed);
        ran += 1;
    }
    let seed = std::env::var("HERD_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0u64);
    let mut mutator = Mutator::new(fnv1a64(name.as_bytes()) ^ seed);
    let n = cases(default_cases);
    for case in 0..n {
        let base = &seeds[case % seeds.len()];
        let mut input = mutator.mutate(base);
        if case % 4 == 3 {
            input = mutator.mutate(&input);
        }
        run_one(&format!("case-{case}-seed-{seed}"), &input);
        ran += 1;
    }
    let _ = std::fs::remove_file(&current);
    let _ = writeln!(std::io::stderr(), "fuzz {name}: {ran} cases, no panic");
    ran
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_seeded_and_vary() {
        let input = b"GGUF\x03\0\0\0some header bytes and a body".to_vec();
        let (mut a, mut b) = (Mutator::new(1), Mutator::new(1));
        let cases_a: Vec<Vec<u8>> = (0..50).map(|_| a.mutate(&input)).collect();
        let cases_b: Vec<Vec<u8>> = (0..50).map(|_| b.mutate(&input)).collect();
        assert_eq!(cases_a, cases_b);
        let distinct: std::collections::HashSet<&Vec<u8>> = cases_a.iter().collect();
        assert!(distinct.len() > 45);
        assert!(cases_a.iter().any(|c| c.len() < input.len()));
        assert!(cases_a.iter().any(|c| c.len() > input.len()));
        assert!(
            Mutator::new(3).mutate(&[]).len() <= 8,
            "empty input grows a little"
        );
    }

    #[test]
    fn a_panicking_case_fails_the_run_and_is_saved() {
        let dir = tempfile::tempdir().unwrap();
        let result = std::panic::catch_unwind(|| {
            run("selftest", &[b"ok".to_vec()], dir.path(), 200, |bytes| {
                assert!(bytes.len() < 5, "too long");
            })
        });
        let message = result.unwrap_err();
        let message = message.downcast_ref::<String>().unwrap();
        assert!(
            message.contains("too long") && message.contains("saved as"),
            "{message}"
        );
        let saved = message
            .split("saved as ")
            .nth(1)
            .unwrap()
            .split(" —")
            .next()
            .unwrap();
        assert!(std::fs::read(saved).unwrap().len() >= 5);
        std::fs::remove_file(saved).unwrap();
    }
}
