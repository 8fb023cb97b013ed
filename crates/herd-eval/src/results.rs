//! Results in lm-evaluation-harness's shapes: the results JSON (`results` with `"acc,none"` and
//! `"acc_stderr,none"` keys, `configs`, `versions`, `n-shot`, `higher_is_better`, `n-samples`,
//! `config`, `date`) and the markdown table it prints.

use serde_json::{json, Map, Value};

use crate::evaluate::TaskResult;
use crate::task::Task;

/// How the run was made, for the results' `config`.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The model path.
    pub model: String,
    /// Documents per task asked for.
    pub limit: Option<usize>,
    /// Resamples for bootstrapped standard errors.
    pub bootstrap_iters: usize,
    /// Seconds the whole run took.
    pub seconds: f64,
}

/// The harness's results object for the tasks run.
pub fn results_json(tasks: &[(&Task, &TaskResult)], info: &RunInfo) -> Value {
    let mut results = Map::new();
    let mut configs = Map::new();
    let mut versions = Map::new();
    let mut n_shot = Map::new();
    let mut higher = Map::new();
    let mut n_samples = Map::new();
    let mut group_subtasks = Map::new();
    for (task, result) in tasks {
        let name = task.name().to_string();
        let mut entry = Map::new();
        entry.insert("alias".into(), json!(name));
        let mut hib = Map::new();
        for m in &result.metrics {
            let metric = m.metric.name();
            entry.insert(format!("{metric},{}", m.filter), json!(m.value));
            entry.insert(
                format!("{metric}_stderr,{}", m.filter),
                m.stderr.map_or(json!("N/A"), |s| json!(s)),
            );
            hib.insert(metric.into(), json!(m.higher_is_better));
        }
        results.insert(name.clone(), Value::Object(entry));
        let mut config = serde_json::to_value(&task.config).expect("a task config serializes");
        config["num_fewshot"] = json!(task.num_fewshot);
        configs.insert(name.clone(), config);
        versions.insert(name.clone(), task.config.version());
        n_shot.insert(name.clone(), json!(task.num_fewshot));
        higher.insert(name.clone(), Value::Object(hib));
        n_samples.insert(
            name.clone(),
            json!({"original": result.original, "effective": result.effective}),
        );
        group_subtasks.insert(name, json!([]));
    }
    json!({
        "results": results,
        "group_subtasks": group_subtasks,
        "configs": configs,
        "versions": versions,
        "n-shot": n_shot,
        "higher_is_better": higher,
        "n-samples": n_samples,
        "config": {
            "model": "herd",
            "model_args": format!("pretrained={}", info.model),
            "batch_size": "auto",
            "device": "cpu",
            "limit": info.limit,
            "bootstrap_iters": info.bootstrap_iters,
            "fewshot_seed": crate::task::FEWSHOT_SEED,
        },
        "date": chrono::Utc::now().timestamp() as f64,
        "total_evaluation_time_seconds": format!("{}", info.seconds),
    })
}

/// The harness's results table (`make_table`) as markdown: one row per metric and filter,
/// metrics sorted by name, values to 4 decimals, `±` and the standard error or `N/A`.
pub fn markdown_table(results: &Value) -> String {
    let headers = [
        "Tasks", "Version", "Filter", "n-shot", "Metric", "", "Value", "", "Stderr",
    ];
    let mut rows: Vec<[String; 9]> = Vec::new();
    let tasks = results["results"].as_object().cloned().unwrap_or_default();
    for (name, entry) in &tasks {
        let entry = entry.as_object().cloned().unwrap_or_default();
        let version = match &results["versions"][name] {
            Value::Number(n) => n.as_f64().map_or(n.to_string(), |f| format!("{f}")),
            Value::String(s) => s.clone(),
            _ => "    N/A".into(),
        };
        let shots = results["n-shot"][name].to_string();
        let mut keys: Vec<&String> = entry.keys().filter(|k| *k != "alias").collect();
        keys.sort();
        for key in keys {
            let (metric, filter) = key.split_once(',').unwrap_or((key, ""));
            if metric.ends_with("_stderr") {
                continue;
            }
            let arrow = match results["higher_is_better"][name][metric].as_bool() {
                Some(true) => "↑",
                Some(false) => "↓",
                None => "",
            };
            let value = entry[key]
                .as_f64()
                .map_or(entry[key].to_string(), |v| format!("{v:.4}"));
            let stderr = match entry.get(&format!("{metric}_stderr,{filter}")) {
                Some(Value::Number(n)) => format!("{:.4}", n.as_f64().unwrap_or(f64::NAN)),
                Some(_) => "   N/A".into(),
                None => String::new(),
            };
            let pm = if stderr.is_empty() { "" } else { "±" };
            rows.push([
                name.clone(),
                version.clone(),
                filter.into(),
                shots.clone(),
                metric.into(),
                arrow.into(),
                value,
                pm.into(),
                stderr,
            ]);
        }
    }
    // Numbers right-aligned, as pytablewriter aligns them.
    let right = [false, true, false, true, false, false, true, false, true];
    render_table(&headers, &right, &rows)
}

/// The contamination reports of the results as a markdown table: per task and metric, the
/// share of contaminated items and the score on the clean and on the contaminated ones.
pub fn contamination_table(results: &Value) -> String {
    let headers = [
        "Tasks",
        "Contaminated",
        "Metric",
        "Clean",
        "Contaminated items",
    ];
    let mut rows: Vec<[String; 5]> = Vec::new();
    let reports = results["contamination"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (name, report) in &reports {
        let share = format!(
            "{}/{} ({:.1}%)",
            report["contaminated_items"],
            report["items"],
            100.0 * report["contaminated_share"].as_f64().unwrap_or(0.0)
        );
        let clean = report["scores"]["clean"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let dirty = &report["scores"]["contaminated"];
        let mut keys: Vec<&String> = clean.keys().collect();
        keys.extend(dirty.as_object().into_iter().flat_map(|m| m.keys()));
        keys.sort();
        keys.dedup();
        let value = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.4}"));
        for key in keys {
            rows.push([
                name.clone(),
                share.clone(),
                key.clone(),
                value(&clean.get(key).cloned().unwrap_or(Value::Null)),
                value(&dirty[key]),
            ]);
        }
    }
    render_table(&headers, &[false, true, false, true, true], &rows)
}

/// A markdown table with padded columns (`right`: right-aligned ones).
fn render_table<const N: usize>(
    headers: &[&str; N],
    right: &[bool; N],
    rows: &[[String; N]],
) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([headers[c].chars().count(), 3])
                .max()
                .unwrap_or(3)
        })
        .collect();
    let cell = |text: &str, c: usize| {
        let pad = widths[c] - text.chars().count();
        if right[c] {
            format!("{}{text}", " ".repeat(pad))
        } else {
            format!("{text}{}", " ".repeat(pad))
        }
    };
    let line = |cells: Vec<String>| format!("|{}|\n", cells.join("|"));
    let mut out = line((0..N).map(|c| cell(headers[c], c)).collect());
    out.push_str(&line(
        (0..N)
            .map(|c| {
                let dashes = "-".repeat(widths[c] - right[c] as usize);
                if right[c] {
                    format!("{dashes}:")
                } else {
                    dashes
                }
            })
            .collect(),
    ));
    for r in rows {
        out.push_str(&line((0..N).map(|c| cell(&r[c], c)).collect()));
    }
    out
}
