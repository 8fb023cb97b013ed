//! The real post-training data sets read into examples: LLaMA-Factory's demo files (fetched
//! assets) and the HH-RLHF and AlpacaEval pairs of `../shared/data/posttrain`. Every record is
//! read or reported with its reason; the counts are the files' own.

use std::path::{Path, PathBuf};

use herd_align::conversation::{parse_record, Example, Format};
use herd_tokenizer::chat::Role;
use herd_util::records::read_records;

/// (dialogs, preferences, bad records) of a file.
fn read(path: &Path) -> (Vec<Example>, Vec<Example>, Vec<String>) {
    let mut bad = Vec::new();
    let (mut dialogs, mut preferences, mut reasons) = (Vec::new(), Vec::new(), Vec::new());
    read_records::<herd_util::FileError>(path, &mut bad, &mut |record| {
        match parse_record(&record.value, Format::Auto) {
            Ok(e @ Example::Dialog(_)) => dialogs.push(e),
            Ok(e @ Example::Preference(_)) => preferences.push(e),
            Err(reason) => reasons.push(format!("{}: {reason}", record.at)),
        }
        Ok(())
    })
    .unwrap();
    reasons.extend(bad.iter().map(|b| format!("{}: {}", b.at, b.reason)));
    (dialogs, preferences, reasons)
}

fn shared(relative: &str) -> Option<PathBuf> {
    herd_util::testing::shared(&format!("data/posttrain/{relative}"))
}

#[test]
fn llama_factory_demo_sets() {
    let cases = [
        ("alpaca_en_demo.json", 999, 0),
        ("identity.json", 91, 0),
        ("glaive_toolcall_en_demo.json", 300, 0),
        ("kto_en_demo.json", 300, 0),
        ("dpo_en_demo.json", 0, 300),
    ];
    for (file, dialogs, preferences) in cases {
        let Some(path) = herd_util::testing::asset(&format!("llamafactory/{file}")) else {
            continue;
        };
        let (d, p, bad) = read(&path);
        assert!(bad.is_empty(), "{file}: {bad:?}");
        assert_eq!((d.len(), p.len()), (dialogs, preferences), "{file}");
    }
    if let Some(path) = herd_util::testing::asset("llamafactory/glaive_toolcall_en_demo.json") {
        let (dialogs, _, _) = read(&path);
        let calls = dialogs
            .iter()
            .filter_map(|e| match e {
                Example::Dialog(m) => Some(m),
                _ => None,
            })
            .flatten()
            .filter(|m| !m.tool_calls.is_empty())
            .count();
        assert!(calls > 100, "tool calls are read as calls ({calls})");
    }
}

#[test]
fn hh_rlhf_and_alpaca_eval_pairs() {
    if let Some(path) = shared("hh-rlhf/harmless-base-test.jsonl.gz") {
        let (d, p, bad) = read(&path);
        assert!(d.is_empty());
        assert_eq!(p.len() + bad.len(), 2312);
        // Nine transcripts are broken: four end with an empty reply, five pairs continue
        // different conversations. They are reported, not trained on.
        let empty = bad.iter().filter(|b| b.ends_with("an empty reply")).count();
        let diverging = bad
            .iter()
            .filter(|b| b.ends_with("different conversations"))
            .count();
        assert_eq!((empty, diverging), (4, 5), "{bad:?}");
        for e in &p {
            let Example::Preference(p) = e else {
                unreachable!()
            };
            assert_eq!(p.prompt[0].role, Role::User);
        }
        println!(
            "HH-RLHF: {} pairs, {} reported: {:?}",
            p.len(),
            bad.len(),
            &bad[..bad.len().min(3)]
        );
    }
    for (file, n) in [
        ("alpaca-eval/alpaca_eval_gpt4_pairs.train.jsonl.gz", 1460),
        ("alpaca-eval/alpaca_eval_gpt4_pairs.test.jsonl.gz", 150),
    ] {
        let Some(path) = shared(file) else { continue };
        let (_, p, bad) = read(&path);
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(p.len(), n);
    }
}
