//! Fuzzing pretraining recipes: the shipped recipes, mutated, must load or be refused with the
//! file and key, never panic (a recipe is read before anything else of a run). Regression cases
//! live in `tests/fuzz/<target>/`; `HERD_FUZZ_CASES=N` runs more cases.

use std::path::Path;

use herd_train::Recipe;
use herd_util::fuzz;

#[test]
fn pretraining_recipes() {
    let recipes = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes");
    let seeds: Vec<Vec<u8>> = ["tiny", "small", "1b"]
        .iter()
        .map(|n| std::fs::read(recipes.join(format!("{n}.toml"))).unwrap())
        .collect();
    let regressions = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/recipe");
    fuzz::run("recipe", &seeds, &regressions, 1000, |bytes| {
        let text = String::from_utf8_lossy(bytes);
        if let Ok(recipe) = Recipe::parse(&text, Path::new("fuzz.toml")) {
            // What a run computes from the recipe before its first step.
            let _ = recipe.memory_estimate();
            let _ = recipe.flops_per_token(recipe.training.stages[0].seq_len);
            let _ = recipe.mix_at(recipe.lr.total_steps.saturating_sub(1));
            let _ = recipe.lr.lr(0);
        }
    });
}
