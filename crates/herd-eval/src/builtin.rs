//! The task files that ship with herd (`tasks/` in the repository), by name. Their data paths
//! are relative: a run reads them from its data folder.

use anyhow::{bail, Result};

use crate::config::TaskConfig;

/// `(name, task file text)` of every built-in task.
pub const TASKS: &[(&str, &str)] = &[
    ("arc_easy", include_str!("../../../tasks/arc_easy.yaml")),
    ("boolq", include_str!("../../../tasks/boolq.yaml")),
    ("gsm8k_cot", include_str!("../../../tasks/gsm8k_cot.yaml")),
    ("hellaswag", include_str!("../../../tasks/hellaswag.yaml")),
    ("humaneval", include_str!("../../../tasks/humaneval.yaml")),
    (
        "humaneval_20",
        include_str!("../../../tasks/humaneval_20.yaml"),
    ),
    (
        "lambada_openai",
        include_str!("../../../tasks/lambada_openai.yaml"),
    ),
    (
        "lambada_passages",
        include_str!("../../../tasks/lambada_passages.yaml"),
    ),
    ("mmlu", include_str!("../../../tasks/mmlu.yaml")),
    ("piqa", include_str!("../../../tasks/piqa.yaml")),
    ("winogrande", include_str!("../../../tasks/winogrande.yaml")),
];

/// A task by built-in name, or from a YAML file when `spec` names one.
pub fn task_config(spec: &str) -> Result<TaskConfig> {
    let path = std::path::Path::new(spec);
    if spec.ends_with(".yaml") || spec.ends_with(".yml") || path.is_file() {
        return TaskConfig::read(path);
    }
    match TASKS.iter().find(|(name, _)| *name == spec) {
        Some((name, text)) => {
            TaskConfig::parse(text).map_err(|e| anyhow::anyhow!("built-in task {name}: {e:#}"))
        }
        None => {
            let names: Vec<&str> = TASKS.iter().map(|t| t.0).collect();
            bail!(
                "no task `{spec}`: give a task file (.yaml) or one of {}",
                names.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_builtin_task_parses_under_its_name() {
        for (name, _) in super::TASKS {
            let config = super::task_config(name).unwrap();
            assert_eq!(&config.task, name);
        }
    }
}
