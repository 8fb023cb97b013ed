//! `herd needles` on a model herd pretrains: every cell of the grid is answered, prompts fill
//! their context length, needles sit at their depth, and the table and heatmap are written.

use std::path::Path;

use serde_json::Value;

mod common;
use common::{herd, pretrain_on_alice, ALICE_BOOK};
use herd_util::testing::shared;

#[test]
fn the_grid_is_built_answered_and_drawn() {
    let dir = tempfile::tempdir().unwrap();
    let haystack = "data/books/gutenberg/austen-persuasion.txt.gz";
    let (Some(book), Some(_)) = (shared(haystack), shared(ALICE_BOOK)) else {
        return;
    };
    let model = pretrain_on_alice(dir.path(), 16, 1024).expect("the book is there");
    let out = dir.path().join("needles");
    let s = |p: &Path| p.display().to_string();
    herd(&[
        "needles",
        "-m",
        &s(&model),
        "--haystack",
        &s(&book),
        "--lengths",
        "512,1000",
        "--depths",
        "0,50,100",
        "--needles",
        "4",
        "--asked",
        "2",
        "--out",
        &s(&out),
        "--quiet",
    ]);
    let table: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("needles.json")).unwrap()).unwrap();
    let cells = table["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 6);
    for cell in cells {
        let length = cell["length"].as_u64().unwrap();
        let tokens = cell["prompt_tokens"].as_u64().unwrap();
        assert!(tokens <= length && tokens + 48 >= length, "{cell}");
        let depth = cell["depth"].as_f64().unwrap();
        let placed: Vec<f64> = cell["placed_at"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect();
        assert_eq!(placed.len(), 4);
        // The first needle at a boundary near its depth; the others after it.
        assert!((placed[0] - depth).abs() <= 5.0, "{cell}");
        assert!(placed.windows(2).all(|w| w[0] <= w[1]), "{cell}");
        assert_eq!(cell["expected"].as_array().unwrap().len(), 2);
        let score = cell["score"].as_f64().unwrap();
        assert!([0.0, 0.5, 1.0].contains(&score), "{cell}");
    }
    let png = std::fs::read(out.join("needles.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}
