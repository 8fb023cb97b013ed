//! fastText supervised models (`.bin`, and `.ftz` with product-quantized matrices and pruned
//! n-gram buckets) read and applied exactly as fastText 0.9's `predict`: the same tokens, the
//! same hashed character and word n-grams, the average of their input rows, then softmax or
//! the hierarchical softmax's tree search, in the same f32 arithmetic.
//!
//! Written here rather than taken from a crate: the pure-Rust `fasttext` crate (0.8) predicts
//! other labels than fastText for every one of the 5,800 test sentences with `lid.176.ftz`, and
//! the C++ bindings need CMake and a C++ build. The file layout and the arithmetic follow
//! fastText's `args.cc`, `dictionary.cc`, `densematrix.cc`, `quantmatrix.cc`,
//! `productquantizer.cc` and `loss.cc`.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};
use matrix::{Matrix, Reader};
pub(crate) use write::{write_supervised, Dictionary};

mod matrix;
mod write;

const MAGIC: i32 = 793_712_314;
const VERSION: i32 = 12;
const EOS: &str = "</s>";
const BOW: &str = "<";
const EOW: &str = ">";
const LABEL_PREFIX: &str = "__label__";
/// Centroids per product-quantizer subspace.
const KSUB: usize = 256;
/// The largest embedding dimension read (fastText's models use 10 to 300).
const MAX_DIM: usize = 4096;
/// fastText's count for tree nodes not built yet (above every real count).
const HUFFMAN_SENTINEL: i64 = 1_000_000_000_000_000;
/// The longest character n-gram read (fastText's default `maxn` is 6).
const MAX_NGRAM_CHARS: i32 = 64;

/// fastText's 32-bit FNV-1a, over bytes sign-extended as C++ `int8_t`s.
fn hash(bytes: &[u8]) -> u32 {
    bytes.iter().fold(2_166_136_261u32, |h, &b| {
        (h ^ (b as i8 as i32 as u32)).wrapping_mul(16_777_619)
    })
}

/// fastText's `std_log`: `log(x + 1e-5)`, the sum and logarithm in double precision.
fn std_log(x: f32) -> f32 {
    (f64::from(x) + 1e-5).ln() as f32
}

/// The hyper-parameters stored in the file that prediction needs.
#[derive(Debug, Clone)]
struct Args {
    dim: usize,
    word_ngrams: i32,
    loss: Loss,
    bucket: i32,
    minn: i32,
    maxn: i32,
}

/// The output layer's loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    HierarchicalSoftmax,
    NegativeSampling,
    Softmax,
    OneVsAll,
}

/// A node of the hierarchical softmax's Huffman tree.
#[derive(Debug, Clone, Copy)]
struct Node {
    left: i32,
    right: i32,
    count: i64,
}

/// A fastText supervised model.
pub struct FastTextModel {
    args: Args,
    /// word → id, for the words and labels of the dictionary.
    ids: HashMap<Vec<u8>, i32>,
    nwords: i32,
    labels: Vec<String>,
    /// Per word id: its id and its character n-gram rows.
    subwords: Vec<Vec<i32>>,
    is_label: Vec<bool>,
    pruneidx: Option<HashMap<i32, i32>>,
    input: Matrix,
    output: Matrix,
    tree: Vec<Node>,
}

impl FastTextModel {
    /// Reads a `.bin` or `.ftz` file.
    pub fn load(path: &Path) -> Result<FastTextModel> {
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, path)
    }

    /// Reads a model from the bytes of a file (`path` names it in errors).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<FastTextModel> {
        let mut r = Reader { bytes, at: 0, path };
        let (magic, version) = (r.i32()?, r.i32()?);
        if magic != MAGIC || version > VERSION {
            return Err(Error::format(
                path,
                format!("not a fastText model (magic {magic}, version {version})"),
            ));
        }
        let mut args = read_args(&mut r)?;
        if version == 11 && args.1 == 3 {
            // Old supervised models did not use character n-grams.
            args.0.maxn = 0;
        }
        let args = args.0;
        let size = r.count("dictionary size")?;
        let nwords = r.i32()?;
        let nlabels = r.count("labels")?;
        let _ntokens = r.i64()?;
        let pruneidx_size = r.i64()?;
        // Each entry takes at least 10 bytes (an empty word, its NUL, count and type).
        if size > (bytes.len() - r.at) / 10 {
            return Err(Error::format(
                path,
                format!("a dictionary of {size} entries cannot fit in the file"),
            ));
        }
        if nwords < 0 || nwords as usize + nlabels != size || nlabels == 0 {
            return Err(Error::format(
                path,
                format!(
                    "the dictionary has {size} entries but says {nwords} words and {nlabels} labels \
                     (a classifier needs at least one label)"
                ),
            ));
        }
        let mut words = Vec::with_capacity(size);
        let mut counts = Vec::with_capacity(size);
        let mut is_label = Vec::with_capacity(size);
        for _ in 0..size {
            let end = r.bytes[r.at..]
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| Error::format(path, "truncated dictionary"))?;
            words.push(r.take(end + 1)?[..end].to_vec());
            counts.push(r.i64()?);
            is_label.push(r.u8()? == 1);
        }
        let pruneidx = if pruneidx_size >= 0 {
            let mut map = HashMap::new();
            for _ in 0..pruneidx_size {
                let (from, to) = (r.i32()?, r.i32()?);
                map.insert(from, to);
            }
            Some(map)
        } else {
            None
        };
        let quant_input = r.u8()? != 0;
        let (input, input_rows, input_cols) = if quant_input {
            Matrix::read_quantized(&mut r)?
        } else {
            Matrix::read_dense(&mut r)?
        };
        let qout = r.u8()? != 0;
        let (output, output_rows, output_cols) = if quant_input && qout {
            Matrix::read_quantized(&mut r)?
        } else {
            Matrix::read_dense(&mut r)?
        };
        // Every row id prediction can compute must be inside the matrices.
        let buckets = match &pruneidx {
            Some(map) => map.len(),
            None => args.bucket as usize,
        };
        let bad_shape = input_cols != args.dim
            || output_cols != args.dim
            || input_rows < nwords as usize + buckets
            || output_rows < nlabels
            || pruneidx.as_ref().is_some_and(|map| {
                map.iter()
                    .any(|(&from, &to)| from < 0 || to < 0 || to as usize >= buckets)
            });
        if bad_shape {
            return Err(Error::format(
                path,
                format!(
                    "matrices of {input_rows}×{input_cols} (input) and {output_rows}×{output_cols}                      (output) do not fit dimension {}, {nwords} words, {buckets} buckets and                      {nlabels} labels",
                    args.dim
                ),
            ));
        }
        let words_first = is_label.iter().take(nwords as usize).all(|l| !l)
            && is_label.iter().skip(nwords as usize).all(|l| *l);
        if !words_first {
            return Err(Error::format(
                path,
                "the dictionary must list its words before its labels",
            ));
        }
        let label_counts: Vec<i64> = (0..size)
            .filter(|&i| is_label[i])
            .map(|i| counts[i])
            .collect();
        if label_counts.len() != nlabels {
            return Err(Error::format(
                path,
                "label count does not match the dictionary",
            ));
        }
        // Counts of at least 1 keep the hierarchical softmax's tree shallow (about 90 levels
        // at most for 64-bit counts); zero or negative counts could chain it a label per level.
        // fastText writes labels by count, most frequent first; its tree construction (below)
        // relies on that order and on counts under its 10^15 sentinel.
        let in_order = label_counts.windows(2).all(|w| w[0] >= w[1]);
        if !in_order
            || label_counts
                .iter()
                .any(|&c| !(1..HUFFMAN_SENTINEL).contains(&c))
        {
            return Err(Error::format(
                path,
                "label counts must be from 1 to 10^15, most frequent first",
            ));
        }
        let labels = (0..size)
            .filter(|&i| is_label[i])
            .map(|i| String::from_utf8_lossy(&words[i]).into_owned())
            .collect();
        let ids = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as i32))
            .collect();
        let mut model = FastTextModel {
            tree: huffman_tree(&label_counts),
            args,
            ids,
            nwords,
            labels,
            subwords: Vec::new(),
            is_label,
            pruneidx,
            input,
            output,
        };
        model.subwords = words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let mut ids = vec![i as i32];
                if w != EOS.as_bytes() {
                    let marked = [BOW.as_bytes(), w, EOW.as_bytes()].concat();
                    model.char_ngrams(&marked, &mut ids);
                }
                ids
            })
            .collect();
        Ok(model)
    }

    /// Adds bucket `id` (pruned models map it, or drop it).
    fn push_hash(&self, ids: &mut Vec<i32>, id: i32) {
        match &self.pruneidx {
            Some(map) if map.is_empty() => {}
            Some(map) => {
                if let Some(&to) = map.get(&id) {
                    ids.push(self.nwords + to);
                }
            }
            None => ids.push(self.nwords + id),
        }
    }

    /// The character n-grams (minn..=maxn UTF-8 characters) of a `<word>`.
    fn char_ngrams(&self, word: &[u8], ids: &mut Vec<i32>) {
        let (minn, maxn) = (self.args.minn, self.args.maxn);
        for i in 0..word.len() {
            if word[i] & 0xC0 == 0x80 {
                continue;
            }
            let (mut j, mut n) = (i, 1);
            while j < word.len() && n <= maxn {
                j += 1;
                while j < word.len() && word[j] & 0xC0 == 0x80 {
                    j += 1;
                }
                if n >= minn && !(n == 1 && (i == 0 || j == word.len())) {
                    let h = hash(&word[i..j]) % self.args.bucket as u32;
                    self.push_hash(ids, h as i32);
                }
                n += 1;
            }
        }
    }

    /// The input rows of a line: per token its word and n-gram rows, then word n-grams.
    /// `text` is read as fastText reads a line followed by `\n` (so `</s>` ends it).
    pub(crate) fn line_ids(&self, text: &str) -> Vec<i32> {
        let mut ids = Vec::new();
        let mut hashes: Vec<i32> = Vec::new();
        let separators = [b' ', b'\n', b'\r', b'\t', 0x0B, 0x0C, 0];
        let tokens = text
            .as_bytes()
            .split(|b| separators.contains(b))
            .filter(|t| !t.is_empty())
            .chain(std::iter::once(EOS.as_bytes()));
        for token in tokens {
            let h = hash(token);
            let wid = self.ids.get(token).copied();
            let label = match wid {
                Some(id) => self.is_label[id as usize],
                None => token.starts_with(LABEL_PREFIX.as_bytes()),
            };
            if label {
                continue;
            }
            match wid {
                None => {
                    let marked = [BOW.as_bytes(), token, EOW.as_bytes()].concat();
                    self.char_ngrams(&marked, &mut ids);
                }
                Some(id) if self.args.maxn <= 0 => ids.push(id),
                Some(id) => ids.extend_from_slice(&self.subwords[id as usize]),
            }
            hashes.push(h as i32);
        }
        let n = self.args.word_ngrams.max(1) as usize;
        for i in 0..hashes.len() {
            let mut h = hashes[i] as i64 as u64;
            for &next in hashes.iter().skip(i + 1).take(n - 1) {
                h = h.wrapping_mul(116_049_371).wrapping_add(next as i64 as u64);
                self.push_hash(&mut ids, (h % self.args.bucket as u64) as i32);
            }
        }
        ids
    }

    /// The `k` most likely labels of one line of text with their probabilities, best first,
    /// as fastText's `predict(text, k)` returns them.
    pub fn predict(&self, text: &str, k: usize) -> Vec<(String, f32)> {
        let ids = self.line_ids(text);
        if ids.is_empty() || k == 0 {
            return Vec::new();
        }
        let mut hidden = vec![0f32; self.args.dim];
        for &id in &ids {
            self.input.add_row(&mut hidden, id as usize);
        }
        let scale = (1.0 / ids.len() as f64) as f32;
        hidden.iter_mut().for_each(|h| *h *= scale);
        let k = k.min(self.labels.len());
        let mut best: Vec<(f32, usize)> = Vec::new();
        match self.args.loss {
            Loss::HierarchicalSoftmax => {
                let root = 2 * self.labels.len() - 2;
                self.search(k, root, 0.0, &mut best, &hidden);
            }
            Loss::Softmax | Loss::NegativeSampling | Loss::OneVsAll => {
                let mut out: Vec<f32> = (0..self.labels.len())
                    .map(|i| self.output.dot_row(&hidden, i))
                    .collect();
                if self.args.loss == Loss::Softmax {
                    let max = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut z = 0.0f32;
                    for o in out.iter_mut() {
                        *o = (*o - max).exp();
                        z += *o;
                    }
                    out.iter_mut().for_each(|o| *o /= z);
                } else {
                    out.iter_mut().for_each(|o| *o = 1.0 / (1.0 + (-*o).exp()));
                }
                for (i, &p) in out.iter().enumerate() {
                    push_best(&mut best, k, (std_log(p), i));
                }
            }
        }
        best.sort_by(|a, b| b.0.total_cmp(&a.0));
        best.into_iter()
            .map(|(score, i)| (self.labels[i].clone(), score.exp()))
            .collect()
    }

    /// fastText's depth-first search of the label tree, keeping the `k` best leaves.
    fn search(
        &self,
        k: usize,
        node: usize,
        score: f32,
        best: &mut Vec<(f32, usize)>,
        hidden: &[f32],
    ) {
        if score < std_log(0.0) {
            return;
        }
        let worst = best.iter().map(|b| b.0).fold(f32::INFINITY, f32::min);
        if best.len() == k && score < worst {
            return;
        }
        let n = &self.tree[node];
        if n.left == -1 && n.right == -1 {
            push_best(best, k, (score, node));
            return;
        }
        let f = self.output.dot_row(hidden, node - self.labels.len());
        // `1. / (1 + std::exp(-f))`: the exponential in f32, the division in f64.
        let f = (1.0 / f64::from(1.0 + (-f).exp())) as f32;
        self.search(
            k,
            n.left as usize,
            score + std_log((1.0 - f64::from(f)) as f32),
            best,
            hidden,
        );
        self.search(k, n.right as usize, score + std_log(f), best, hidden);
    }
}

/// Keeps the `k` highest-scoring entries (a new entry that ties the worst is kept and the
/// older worst dropped, as fastText's heap does).
fn push_best(best: &mut Vec<(f32, usize)>, k: usize, entry: (f32, usize)) {
    best.push(entry);
    if best.len() > k {
        let worst = (0..best.len())
            .min_by(|&a, &b| best[a].0.total_cmp(&best[b].0))
            .expect("non-empty");
        best.swap_remove(worst);
    }
}

/// (args, model enum) from the header.
fn read_args(r: &mut Reader) -> Result<(Args, i32)> {
    let dim = r.count("dim")?;
    let _ws = r.i32()?;
    let _epoch = r.i32()?;
    let _min_count = r.i32()?;
    let _neg = r.i32()?;
    let word_ngrams = r.i32()?;
    let loss = match r.i32()? {
        1 => Loss::HierarchicalSoftmax,
        2 => Loss::NegativeSampling,
        3 => Loss::Softmax,
        4 => Loss::OneVsAll,
        other => return Err(Error::format(r.path, format!("unknown loss {other}"))),
    };
    let model = r.i32()?;
    let bucket = r.i32()?;
    let minn = r.i32()?;
    let maxn = r.i32()?;
    let _lr_update_rate = r.i32()?;
    let _t = r.f64()?;
    if model != 3 {
        return Err(Error::format(
            r.path,
            "not a supervised (classifier) fastText model",
        ));
    }
    let sane = (1..=MAX_DIM).contains(&dim)
        && bucket >= 0
        && (0..=MAX_NGRAM_CHARS).contains(&minn)
        && (0..=MAX_NGRAM_CHARS).contains(&maxn)
        && (bucket > 0 || (maxn == 0 && word_ngrams <= 1));
    if !sane {
        return Err(Error::format(
            r.path,
            format!(
                "bad hyper-parameters: dim {dim}, bucket {bucket}, minn {minn}, maxn {maxn}, \
                 wordNgrams {word_ngrams} (n-grams need buckets)"
            ),
        ));
    }
    Ok((
        Args {
            dim,
            word_ngrams,
            loss,
            bucket,
            minn,
            maxn,
        },
        model,
    ))
}

/// fastText's Huffman tree over the label counts (leaves `0..n`, root `2n − 2`).
fn huffman_tree(counts: &[i64]) -> Vec<Node> {
    let n = counts.len();
    if n == 0 {
        return Vec::new();
    }
    let mut tree = vec![
        Node {
            left: -1,
            right: -1,
            count: HUFFMAN_SENTINEL,
        };
        2 * n - 1
    ];
    for (node, &c) in tree.iter_mut().zip(counts) {
        node.count = c;
    }
    let (mut leaf, mut node) = (n as i64 - 1, n);
    for i in n..2 * n - 1 {
        let mut mini = [0usize; 2];
        for m in mini.iter_mut() {
            if leaf >= 0 && tree[leaf as usize].count < tree[node].count {
                *m = leaf as usize;
                leaf -= 1;
            } else {
                *m = node;
                node += 1;
            }
        }
        tree[i].left = mini[0] as i32;
        tree[i].right = mini[1] as i32;
        tree[i].count = tree[mini[0]].count.saturating_add(tree[mini[1]].count);
    }
    tree
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_sign_extends_bytes_like_fasttext() {
        // FNV-1a of ASCII is the usual one; bytes ≥ 0x80 are XORed as negative int8s.
        assert_eq!(hash(b"a"), 0xE40C292C);
        assert_ne!(hash("é".as_bytes()), {
            "é".as_bytes().iter().fold(2_166_136_261u32, |h, &b| {
                (h ^ u32::from(b)).wrapping_mul(16_777_619)
            })
        });
    }

    /// A model with the given labels (and counts), four words and ten buckets, as bytes.
    fn model_bytes(labels: &[(String, i64)], bucket: i32, word_ngrams: i32) -> Vec<u8> {
        let words: Vec<(String, i64)> = ["</s>", "a", "b", "c"]
            .iter()
            .map(|w| (w.to_string(), 3))
            .collect();
        let dict = Dictionary {
            words: &words,
            labels,
            dim: 2,
            word_ngrams,
            bucket,
            epochs: 1,
        };
        let input = vec![0.1f32; (words.len() + bucket as usize) * 2];
        let output = vec![0.2f32; labels.len() * 2];
        write_supervised(&dict, &input, &output)
    }

    #[test]
    fn dictionaries_that_would_break_prediction_are_refused() {
        let path = Path::new("bad.bin");
        let label = |name: &str, count| (format!("__label__{name}"), count);
        let good = model_bytes(&[label("x", 5), label("y", 1)], 10, 2);
        assert_eq!(
            FastTextModel::from_bytes(&good, path)
                .unwrap()
                .predict("a b", 2)
                .len(),
            2
        );
        // Counts out of fastText's order sent its tree construction past the nodes built
        // (found by fuzzing lid.176.ftz).
        let unsorted = model_bytes(&[label("x", 1), label("y", 5)], 10, 2);
        let err = FastTextModel::from_bytes(&unsorted, path)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("most frequent first"), "{err}");
        // No labels (the tree's root index underflowed), zero buckets with word bigrams (a
        // division by zero).
        assert!(FastTextModel::from_bytes(&model_bytes(&[], 10, 2), path).is_err());
        let err = FastTextModel::from_bytes(&model_bytes(&[label("x", 5)], 0, 2), path)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("n-grams need buckets"), "{err}");
        // A header claiming more dictionary entries than the file holds sizes nothing.
        let mut huge = good.clone();
        let at = 4 * 2 + 4 * 12 + 8; // magic, version, twelve i32 args, t
        huge[at..at + 4].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(FastTextModel::from_bytes(&huge, path).is_err());
    }

    #[test]
    fn huffman_tree_pairs_the_rarest_first() {
        let tree = huffman_tree(&[10, 5, 2]);
        // Node 3 joins the two rarest leaves (2 and 1), the root joins leaf 0 and node 3.
        assert_eq!((tree[3].left, tree[3].right, tree[3].count), (2, 1, 7));
        assert_eq!((tree[4].left, tree[4].right, tree[4].count), (3, 0, 17));
    }
}
