//! `herd scaling` on a micro sweep: 3 budgets × 4 shapes of herd's test recipe on Alice, each run
//! a real pretraining run with equal compute within its budget, scored on ARC-Easy; the fits,
//! tables and figures come out, and running the sweep again reads every run back.

use std::path::Path;

use serde_json::Value;

mod common;
use common::{alice_shards, herd, recipe, ALICE_BOOK};
use herd_util::testing::shared;

const SWEEP: &str = r#"
name = "micro"
base = "recipe.toml"
budgets = [6e10, 1.2e11, 2.4e11]
seq_len = 128
batch_rows = 4
min_steps = 8
held_out_budgets = 1

[[sizes]]
name = "d16-l1"
dim = 16
n_layers = 1
n_heads = 2
n_kv_heads = 1
ffn_dim = 48

[[sizes]]
name = "d24-l1"
dim = 24
n_layers = 1
n_heads = 2
n_kv_heads = 1
ffn_dim = 64

[[sizes]]
name = "d32-l1"
dim = 32
n_layers = 1
n_heads = 2
n_kv_heads = 1
ffn_dim = 96

[[sizes]]
name = "d48-l2"
dim = 48
n_layers = 2
n_heads = 3
n_kv_heads = 1
ffn_dim = 128

[downstream]
task = "arc_easy"
data_dir = "{data}"
limit = 24
"#;

#[test]
fn a_micro_sweep_gives_fits_tables_and_figures_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (Some(data), Some(_)) = (shared("data/eval"), shared(ALICE_BOOK)) else {
        return;
    };
    alice_shards(dir.path()).expect("the book is there");
    recipe(dir.path(), 40);
    let sweep = dir.path().join("sweep.toml");
    std::fs::write(&sweep, SWEEP.replace("{data}", &data.display().to_string())).unwrap();
    let out = dir.path().join("out");
    let s = |p: &Path| p.display().to_string();
    let args = [
        "scaling",
        "--recipe",
        &s(&sweep),
        "--out",
        &s(&out),
        "--quiet",
    ];
    herd(&args);
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("scaling.json")).unwrap()).unwrap();
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 12, "{}", json["left_out"]);
    // Every run of a budget spends it: 6 · N · tokens within one step's worth.
    for r in runs {
        let (c, n, d) = (
            r["budget"].as_f64().unwrap(),
            r["params"].as_f64().unwrap(),
            r["tokens"].as_f64().unwrap(),
        );
        let step = 6.0 * n * 4.0 * 128.0;
        assert!((6.0 * n * d - c).abs() <= step / 2.0 + 1.0, "{r}");
        assert!(r["val_loss"].as_f64().unwrap() < 6.7, "{r}"); // below ln 768: it learned
        let acc = r["downstream_acc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
        assert!(r["downstream_nll"].as_f64().unwrap() > 0.0);
    }
    let analysis = &json["analysis"];
    assert_eq!(analysis["budgets"].as_array().unwrap().len(), 3);
    assert!(analysis["params_law"]["exponent"].is_number());
    assert_eq!(analysis["paper_alpha"], 0.53);
    let held = &analysis["downstream"]["held_out"][0];
    assert_eq!(held["flops"], 2.4e11);
    assert!(held["predicted_acc"].is_number() && held["measured_nll"].is_number());
    for png in ["isoflops.png", "optimal_size.png", "downstream.png"] {
        let bytes = std::fs::read(out.join(png)).unwrap();
        assert_eq!(&bytes[1..4], b"PNG", "{png}");
    }
    let table = std::fs::read_to_string(out.join("scaling.md")).unwrap();
    assert!(table.contains("| α of N*(C) = A·C^α |"), "{table}");
    // Again: every run is read back, none trains, the findings are the same.
    let stamp = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let first = out
        .join("runs")
        .join(runs[0]["name"].as_str().unwrap())
        .join("scaling.json");
    let before = stamp(&first);
    herd(&args);
    assert_eq!(stamp(&first), before);
    let again: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("scaling.json")).unwrap()).unwrap();
    assert_eq!(again["analysis"], json["analysis"]);
}
