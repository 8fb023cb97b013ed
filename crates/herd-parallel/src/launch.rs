//! A pretraining run under its recipe's `[parallel]` section: in this process when the section
//! asks for one process and no launcher started several; otherwise as one of the ranks
//! `mpirun -n N herd pretrain …` started, the parallel plans wrapping the trainer.
//!
//! The plans are tensor and context parallelism ([`crate::parts`]) and pipeline parallelism
//! ([`crate::stages`]) inside data parallelism ([`DataParallel`]). What a layout cannot split —
//! heads, units or vocabulary that tp does not divide, rows that 2 × cp does not, fewer blocks
//! than stages, an output layer tied to the embedding across stages — is refused by name before
//! anything starts.

use std::time::Duration;

use herd_train::{Recipe, RunOptions, RunSummary};

#[cfg(feature = "mpi")]
use crate::data_parallel::{train_error, DataParallel};

/// Where launchers tell a process its rank: Open MPI's `mpirun`, then PMI (MPICH's Hydra,
/// Slurm's `srun`).
const RANK_VARIABLES: [&str; 2] = ["OMPI_COMM_WORLD_RANK", "PMI_RANK"];

/// Where the same launchers tell a process the job's size.
const SIZE_VARIABLES: [&str; 2] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"];

fn launcher_number(variables: &[&str]) -> Option<usize> {
    variables
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// Where the same launchers tell a process how many of the job's processes share its machine.
const LOCAL_SIZE_VARIABLES: [&str; 2] = ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"];

/// This process's rank as an MPI launcher set it (`None` outside one). Readable before MPI
/// starts, so only rank 0 prints and draws progress.
pub fn launched_rank() -> Option<usize> {
    launcher_number(&RANK_VARIABLES)
}

/// The job's number of processes as an MPI launcher set it (`None` outside one).
pub fn launched_size() -> Option<usize> {
    launcher_number(&SIZE_VARIABLES)
}

/// How many processes of the job share this machine, as an MPI launcher set it (`None` outside
/// one): they share its cores.
pub fn launched_local_size() -> Option<usize> {
    launcher_number(&LOCAL_SIZE_VARIABLES)
}

/// Runs (or resumes) `recipe` as its `[parallel]` section lays it out. Under MPI each rank
/// calls this; a collective that waits longer than `collective_timeout` ends the job, every
/// rank writing its flight recorder to `<out>/flight-recorder/`.
pub fn pretrain(
    recipe: &Recipe,
    options: &RunOptions,
    collective_timeout: Duration,
) -> herd_train::Result<RunSummary> {
    let p = recipe.parallel;
    let bad = |message: String| herd_train::Error::Recipe {
        path: recipe.path.display().to_string(),
        message,
    };
    if p.pp > 1 {
        if recipe.model.tie_embeddings {
            return Err(bad(format!(
                "[parallel] pp = {}: the model's output layer is its embedding \
                 (tie_embeddings = true), which the first and the last stage cannot both hold",
                p.pp
            )));
        }
        // The interleaved schedule takes the micro-batches pp at a time.
        let micro_batches =
            |rows: usize| (rows / p.dp).div_ceil(recipe.training.micro_batch_rows.max(1));
        if let Some(stage) = recipe
            .training
            .stages
            .iter()
            .find(|s| p.virtual_stages > 1 && !micro_batches(s.batch_rows).is_multiple_of(p.pp))
        {
            return Err(bad(format!(
                "[parallel] virtual_stages = {}: a step of the stage until step {} has {} \
                 micro-batches per data-parallel rank, which the interleaved schedule needs to \
                 be a multiple of pp = {} (change batch_rows, micro_batch_rows or dp)",
                p.virtual_stages,
                stage.until_step,
                micro_batches(stage.batch_rows),
                p.pp
            )));
        }
        let stages = p.pp * p.virtual_stages;
        herd_model::stage::stage_sizes(recipe.model.n_layers, stages).map_err(|e| {
            bad(format!(
                "[parallel] pp = {} × virtual_stages = {}: {e}",
                p.pp, p.virtual_stages
            ))
        })?;
    }
    if let Some(stage) = recipe
        .training
        .stages
        .iter()
        .find(|s| !s.seq_len.is_multiple_of(2 * p.cp))
    {
        return Err(bad(format!(
            "[parallel] cp = {}: a stage's seq_len ({}) must split into 2 × cp equal chunks",
            p.cp, stage.seq_len
        )));
    }
    herd_model::split::check_parts(&recipe.model, p.tp).map_err(|(key, value)| {
        bad(format!(
            "[parallel] tp = {}: the model's {key} ({value}) must split into tp equal parts",
            p.tp
        ))
    })?;
    match launched_size() {
        None if p.world_size() == 1 => herd_train::pretrain(recipe, options),
        None => Err(bad(format!(
            "[parallel] asks for {n} processes: start them with `mpirun -n {n} herd pretrain …`",
            n = p.world_size()
        ))),
        Some(_) => pretrain_on_mpi(recipe, options, collective_timeout),
    }
}

/// One rank of a run over MPI laid out as its recipe's `[parallel]` section says.
#[cfg(feature = "mpi")]
fn pretrain_on_mpi(
    recipe: &Recipe,
    options: &RunOptions,
    collective_timeout: Duration,
) -> herd_train::Result<RunSummary> {
    use crate::collectives::Collectives;
    use crate::layout::{Dim, Layout};
    use crate::mpi::{MpiWorld, Watchdog};
    use crate::parts::{with_group, GroupParts};
    use crate::stages::GroupStages;
    use herd_model::split::Parts;
    use herd_train::pipeline::Stages;
    use std::sync::Arc;

    let mpi = MpiWorld::init(Watchdog {
        timeout: collective_timeout,
        dump_dir: options.out.join("flight-recorder"),
    })
    .map_err(train_error)?;
    let world = mpi.world();
    let p = recipe.parallel;
    let layout = Layout::new(p.tp, p.cp, p.pp, p.dp, world.size()).map_err(|e| {
        herd_train::Error::Recipe {
            path: recipe.path.display().to_string(),
            message: e.to_string(),
        }
    })?;
    // Gradients are sharded over the CP × DP ranks that hold the same part of the model.
    let sharded =
        (world.split_over(&layout, &[Dim::Context, Dim::Data], "cp×dp")).map_err(train_error)?;
    let tensor = world.split(&layout, Dim::Tensor).map_err(train_error)?;
    let context = world.split(&layout, Dim::Context).map_err(train_error)?;
    let pipeline = world.split(&layout, Dim::Pipeline).map_err(train_error)?;
    let parts = |dim: Dim, group: &dyn Collectives| {
        (group.size() > 1)
            .then(|| Arc::new(GroupParts::new(dim, group.size(), group.rank())) as Arc<dyn Parts>)
    };
    let stages = (pipeline.size() > 1).then(|| {
        let stages = GroupStages::new(pipeline.size(), pipeline.rank(), p.virtual_stages);
        Arc::new(stages) as Arc<dyn Stages>
    });
    let split = herd_train::ModelSplit {
        layers: parts(Dim::Tensor, &tensor),
        sequence: parts(Dim::Context, &context),
        stages: stages.clone(),
    };
    with_group(Dim::Tensor, &tensor, || {
        with_group(Dim::Context, &context, || {
            with_group(Dim::Pipeline, &pipeline, || {
                herd_train::pretrain_shared(recipe, options, split, &|params, config| {
                    let share =
                        DataParallel::new(&sharded, params, config)?.with_sequence_parts(p.cp)?;
                    Ok(Box::new(match &stages {
                        Some(stages) => share.with_stages(stages.clone()),
                        None => share,
                    }))
                })
            })
        })
    })
}

/// Without MPI built in, a launched job or a `[parallel]` section of several processes cannot
/// run: say how to get a herd that can.
#[cfg(not(feature = "mpi"))]
fn pretrain_on_mpi(
    recipe: &Recipe,
    _options: &RunOptions,
    _collective_timeout: Duration,
) -> herd_train::Result<RunSummary> {
    Err(herd_train::Error::Recipe {
        path: recipe.path.display().to_string(),
        message: format!(
            "an MPI launcher started this process ([parallel] asks for {} processes), but this \
             herd was built without MPI: build it with `cargo build --release -p herd --features \
             mpi` (Debian: apt-get install libopenmpi-dev openmpi-bin libclang-dev pkg-config)",
            recipe.parallel.world_size()
        ),
    })
}
