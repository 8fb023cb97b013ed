//! Language id equals fastText's own predictions (fasttext-predict 0.9.2.4 with lid.176.ftz,
//! `tools/reference/langid_fixture.py`) on the 5,800 lingua sentences: the same top-2 labels,
//! probabilities within 1e-6 (measured: identical).

use std::io::Read;
use std::path::Path;

use herd_data::langid::LanguageId;

fn gunzip(path: &Path) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    text
}

#[test]
fn lid176_predicts_what_fasttext_predicts() {
    let Some(model) = herd_util::testing::asset("fasttext/lid.176.ftz") else {
        return;
    };
    let Some(sentences) = herd_util::testing::shared("data/langid/lingua-sentences.tsv.gz") else {
        return;
    };
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lid176-lingua.tsv.gz");
    let lid = LanguageId::load(&model).unwrap();
    let (sentences, expected) = (gunzip(&sentences), gunzip(&fixture));
    let (mut n, mut worst, mut correct) = (0, 0f32, 0);
    for (line, reference) in sentences.lines().zip(expected.lines()) {
        let (truth, sentence) = line.split_once('\t').unwrap();
        let cells: Vec<&str> = reference.split('\t').collect();
        let got = lid.predict(sentence, 2);
        assert_eq!(got.len() * 2, cells.len(), "{sentence}");
        for (g, pair) in got.iter().zip(cells.chunks(2)) {
            assert_eq!(format!("__label__{}", g.lang), pair[0], "{sentence}");
            let p: f32 = pair[1].parse().unwrap();
            worst = worst.max((g.prob - p).abs());
        }
        correct += usize::from(got[0].lang == truth);
        n += 1;
    }
    assert_eq!(n, 5800);
    eprintln!(
        "{n} sentences: worst probability difference {worst:e}; top label = truth for {correct}"
    );
    // The issue asks for 1e-4; the arithmetic is fastText's, so it agrees to rounding.
    assert!(worst <= 1e-6, "{worst}");
}
