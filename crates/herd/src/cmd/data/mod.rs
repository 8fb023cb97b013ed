//! `herd data …`: curation commands. `tokenize` turns documents into the token shards that
//! `herd pretrain` reads.

pub mod report;
pub mod run;

use std::path::PathBuf;

use anyhow::Result;
use herd_data::reader::input_files;
use herd_data::tokenize::{tokenize_files, TokenizeOptions};
use indicatif::{ProgressBar, ProgressStyle};

/// `herd data` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Tokenize documents (.txt files, .jsonl/.jsonl.gz records, or folders of them) into token
    /// shards: `<|begin_of_text|> text <|end_of_text|>` per document, in input order.
    Tokenize(TokenizeArgs),
    /// Run a curation pipeline (TOML) over WARC, HTML, JSONL (.gz/.zst), JSON, Parquet or text:
    /// URL block lists, main-text extraction, language id, Gopher quality and repetition
    /// filters, dirty words, PII redaction, URL/exact/MinHash/line de-duplication, token-KL
    /// outliers, a quality classifier; resumable, shardable with --tasks/--rank.
    Run(run::Args),
    /// What a curation run removed (by stage and reason) and what it kept (length, language,
    /// quality), as a table and a PNG.
    Report(report::Args),
    /// Print the main text of HTML pages (like trafilatura's command line): navigation, ads,
    /// footers and banners dropped; headings, paragraphs, lists, tables and code as plain text.
    Extract(ExtractArgs),
    /// Train a fastText-style quality classifier (words and word bigrams, softmax) on labelled
    /// JSONL ({"label", "text"}); reports held-out accuracy and writes a fastText .bin.
    TrainClassifier(ClassifierArgs),
    /// Identify the language of each line on stdin with a fastText model (as fastText's
    /// predict): prints `lang<TAB>probability` (k pairs per line with --k).
    Langid(LangidArgs),
}

/// Flags of `herd data train-classifier`.
#[derive(clap::Args, Debug)]
pub struct ClassifierArgs {
    /// Labelled files or folders (.jsonl/.json, possibly .gz).
    #[arg(long, short, required = true, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Output model (.bin, readable by fastText too).
    #[arg(long, short)]
    out: PathBuf,
    /// Replace --out when it exists (without it an existing file is refused).
    #[arg(long)]
    overwrite: bool,
    /// Field holding the label.
    #[arg(long, default_value = "label")]
    label_field: String,
    /// Field holding the text.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Share of examples held out for the accuracy (chosen by a hash of the text).
    #[arg(long, default_value_t = 0.1, value_parser = crate::cmd::values::fraction)]
    held_out: f64,
    /// Embedding size, epochs, learning rate, word n-grams, buckets, seed (TOML keys of
    /// herd_data::classifier::ClassifierConfig, e.g. `epochs=10`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// Flags of `herd data extract`.
#[derive(clap::Args, Debug)]
pub struct ExtractArgs {
    /// HTML files (.html, or .html.gz); stdin when none.
    pages: Vec<PathBuf>,
    /// One JSON object per page, `{"file", "text"}`, instead of the bare text.
    #[arg(long)]
    jsonl: bool,
}

/// Flags of `herd data langid`.
#[derive(clap::Args, Debug)]
pub struct LangidArgs {
    /// fastText model (.ftz or .bin) [default: lid.176.ftz from the asset cache; `herd fetch
    /// lid.176.ftz` downloads it].
    #[arg(long, short)]
    model: Option<PathBuf>,
    /// Languages per line.
    #[arg(long, short, default_value_t = 1, value_parser = crate::cmd::values::count)]
    k: usize,
}

/// Flags of `herd data tokenize`.
#[derive(clap::Args, Debug)]
pub struct TokenizeArgs {
    /// Tokenizer: tokenizer.model (Meta's or one `herd tokenizer train` wrote), tokenizer.json…
    #[arg(long, short)]
    tokenizer: PathBuf,
    /// Input files or folders.
    #[arg(long, short, required = true, num_args = 1..)]
    input: Vec<PathBuf>,
    /// Output folder for `shard-NNNNN.tokens`; written whole under a temporary name and moved
    /// into place at the end, so pretraining never reads a mix of two runs' shards.
    #[arg(long, short)]
    out: PathBuf,
    /// Replace --out when it holds earlier shards (without it a non-empty folder is refused).
    #[arg(long)]
    overwrite: bool,
    /// JSONL field holding the text.
    #[arg(long, default_value = "text")]
    field: String,
    /// Close a shard once it holds this many tokens.
    #[arg(long, default_value_t = 100_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    shard_tokens: u64,
    /// Cut documents at line breaks into documents of about this many bytes (for books and
    /// other long texts, so that training batches mix many of them).
    #[arg(long, value_parser = crate::cmd::values::count)]
    split_chars: Option<usize>,
}

/// Runs `herd data …`.
pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Tokenize(args) => tokenize(args),
        Command::Langid(args) => langid(args),
        Command::Run(args) => run::run_pipeline(args),
        Command::Extract(args) => extract(args),
        Command::Report(args) => report::run(args),
        Command::TrainClassifier(args) => train_classifier(args),
    }
}

fn langid(args: LangidArgs) -> Result<()> {
    use std::io::{BufRead, Write};
    let path = args
        .model
        .unwrap_or_else(|| herd_util::assets::cache_dir().join("fasttext/lid.176.ftz"));
    if !path.exists() {
        anyhow::bail!(
            "{}: no language-id model; run `herd fetch lid.176.ftz` or pass --model",
            path.display()
        );
    }
    let model = herd_data::langid::LanguageId::load(&path)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    // One output line per input line, always: a line that is not UTF-8 is read with U+FFFD
    // in place of its bad bytes (and reported), so the outputs stay aligned with the inputs.
    let mut stdin = std::io::stdin().lock();
    let mut line = Vec::new();
    let mut number = 0;
    let mut not_utf8 = 0;
    while stdin.read_until(b'\n', &mut line)? > 0 {
        number += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let text = String::from_utf8_lossy(&line);
        if matches!(text, std::borrow::Cow::Owned(_)) {
            not_utf8 += 1;
            if not_utf8 <= 5 {
                eprintln!("stdin line {number}: not UTF-8 (its bad bytes read as U+FFFD)");
            }
        }
        let cells: Vec<String> = model
            .predict(&text, args.k)
            .iter()
            .map(|l| format!("{}\t{:.6}", l.lang, l.prob))
            .collect();
        writeln!(out, "{}", cells.join("\t"))?;
        line.clear();
    }
    if not_utf8 > 5 {
        eprintln!("{not_utf8} lines of stdin were not UTF-8 in all");
    }
    Ok(())
}

fn train_classifier(args: ClassifierArgs) -> Result<()> {
    use herd_data::classifier::{accuracy, save, train, ClassifierConfig};
    herd_util::fs::check_new_file(&args.out, args.overwrite)?;
    let table: toml::Table =
        toml::from_str(&args.set.join("\n")).map_err(|e| anyhow::anyhow!("--set: {e}"))?;
    let config: ClassifierConfig = toml::Value::Table(table)
        .try_into()
        .map_err(|e| anyhow::anyhow!("--set: {e}"))?;
    let (mut train_set, mut held) = (Vec::new(), Vec::new());
    let (mut bad, mut missing) = (Vec::new(), Vec::new());
    for file in input_files(&args.data)? {
        herd_data::reader::read_records::<herd_util::FileError>(&file, &mut bad, &mut |r| {
            let field = |k: &str| r.value.get(k).and_then(|v| v.as_str()).map(str::to_string);
            match (field(&args.label_field), field(&args.text_field)) {
                (Some(label), Some(text)) => {
                    let hash = herd_util::seeded::fnv1a64(text.as_bytes());
                    let example = (label, text.replace(['\n', '\r'], " "));
                    if (hash % 1_000_000) as f64 / 1e6 < args.held_out {
                        held.push(example);
                    } else {
                        train_set.push(example);
                    }
                }
                _ => missing.push(herd_data::reader::BadRecord {
                    at: r.at,
                    reason: format!("no string {:?} and {:?}", args.label_field, args.text_field),
                }),
            }
            Ok(())
        })?;
    }
    bad.append(&mut missing);
    crate::cmd::report_bad_records(&bad);
    eprintln!(
        "{} training and {} held-out examples",
        train_set.len(),
        held.len()
    );
    let started = std::time::Instant::now();
    let bytes = train(&train_set, &config)?;
    let model = herd_data::fasttext::FastTextModel::from_bytes(&bytes, &args.out)?;
    eprintln!(
        "trained in {:.1} s; accuracy: training {:.4}, held-out {:.4}",
        started.elapsed().as_secs_f64(),
        accuracy(&model, &train_set),
        accuracy(&model, &held)
    );
    save(&args.out, &bytes)?;
    println!("{}", args.out.display());
    Ok(())
}

fn extract(args: ExtractArgs) -> Result<()> {
    use std::io::{Read, Write};
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.pages.is_empty() {
        let mut html = Vec::new();
        std::io::stdin().read_to_end(&mut html)?;
        if herd_util::text::looks_binary(&html) {
            anyhow::bail!("stdin holds a binary file, not an HTML page");
        }
        writeln!(out, "{}", herd_data::extract::extract(&html))?;
        return Ok(());
    }
    let mut skipped = 0;
    for page in &args.pages {
        let mut html = Vec::new();
        let file =
            std::fs::File::open(page).map_err(|e| anyhow::anyhow!("{}: {e}", page.display()))?;
        if page.extension().is_some_and(|e| e == "gz") {
            flate2::read::MultiGzDecoder::new(file).read_to_end(&mut html)
        } else {
            std::io::BufReader::new(file).read_to_end(&mut html)
        }
        .map_err(|e| anyhow::anyhow!("{}: {e}", page.display()))?;
        if herd_util::text::looks_binary(&html) {
            // Its "text" would be binary garbage on the terminal: say so and go on.
            eprintln!(
                "{}: a binary file, not an HTML page (skipped)",
                herd_util::text::printable_path(page)
            );
            skipped += 1;
            continue;
        }
        let text = herd_data::extract::extract(&html);
        if args.jsonl {
            let record = serde_json::json!({"file": page.display().to_string(), "text": text});
            writeln!(out, "{record}")?;
        } else {
            writeln!(out, "{text}")?;
        }
    }
    if skipped > 0 {
        anyhow::bail!(
            "{skipped} of {} files were not HTML pages",
            args.pages.len()
        );
    }
    Ok(())
}

fn tokenize(args: TokenizeArgs) -> Result<()> {
    let tokenizer = herd_infer::loader::load_tokenizer(&args.tokenizer)?;
    let files = input_files(&args.input)?;
    // What the shards were made from, recorded in the folder (names and sizes: hashing a
    // corpus, or a GGUF given as the tokenizer, would cost more than the record is worth).
    let describe = |f: &PathBuf| {
        let size = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        (f.display().to_string(), size)
    };
    let sizes: Vec<(String, u64)> = files.iter().map(describe).collect();
    let made_from = serde_json::json!({
        "tokenizer": describe(&args.tokenizer),
        "inputs": sizes,
        "field": args.field,
        "shard_tokens": args.shard_tokens,
        "split_chars": args.split_chars,
    });
    let staged =
        herd_util::fs::StagedDir::new(&args.out, "data tokenize", &made_from, args.overwrite)?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}").expect("template"),
    );
    let started = std::time::Instant::now();
    let progress = |docs: u64, tokens: u64, bytes: u64| {
        let s = started.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "{docs} docs, {tokens} tokens · {:.0} docs/s · {:.2} MB/s",
            docs as f64 / s,
            bytes as f64 / 1e6 / s
        ));
        bar.tick();
    };
    let options = TokenizeOptions {
        field: &args.field,
        shard_tokens: args.shard_tokens,
        split_chars: args.split_chars,
        progress: &progress,
    };
    let summary = tokenize_files(&files, &tokenizer, staged.path(), &options)?;
    staged.commit()?;
    bar.finish_and_clear();
    crate::cmd::report_bad_records(&summary.bad);
    eprintln!(
        "{} documents, {} tokens in {} shards under {} ({:.1} s)",
        summary.documents,
        summary.tokens,
        summary.shards.len(),
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
