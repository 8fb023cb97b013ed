//! Layers split into consecutive stages (pipeline parallelism, paper §3.3.1): each stage holds
//! some of the blocks, the first one the embedding too, the last one the final norm and the
//! output layer. As the paper does, the embedding and the output layer each count as one layer
//! when the stages are balanced, so the first and the last stage carry one block fewer than the
//! others when the count allows. A stage is a [`crate::Llama`] loaded with
//! [`crate::Llama::load_stage`]; who computes the other stages is not the model's business.

use std::ops::Range;

/// The number of blocks of each of `stages` stages of a model of `n_layers` blocks: the
/// `n_layers + 2` layers counting the embedding and the output layer are dealt out evenly, a
/// remainder to the middle stages first, then to the ends; every stage holds a block at least.
pub fn stage_sizes(n_layers: usize, stages: usize) -> Result<Vec<usize>, String> {
    if stages <= 1 {
        return Ok(vec![n_layers; stages]);
    }
    let slots = n_layers + 2;
    if slots < 2 * stages {
        return Err(format!(
            "{stages} stages need at least {} blocks (the first and the last stage each give a \
             place to the embedding or the output layer); the model has {n_layers}",
            2 * stages - 2
        ));
    }
    let (base, extra) = (slots / stages, slots % stages);
    let mut sizes = vec![base; stages];
    for stage in (1..stages - 1).chain([0, stages - 1]).take(extra) {
        sizes[stage] += 1;
    }
    sizes[0] -= 1;
    sizes[stages - 1] -= 1;
    Ok(sizes)
}

/// The blocks stage `stage` of `stages` holds ([`stage_sizes`]), consecutive from the first.
pub fn stage_layers(n_layers: usize, stages: usize, stage: usize) -> Result<Range<usize>, String> {
    if stage >= stages {
        return Err(format!("stage {stage} of {stages}"));
    }
    let sizes = stage_sizes(n_layers, stages)?;
    let start: usize = sizes[..stage].iter().sum();
    Ok(start..start + sizes[stage])
}

/// The block an HF tensor name belongs to (`model.layers.L.…`), or `None` for the embedding,
/// the final norm and the output layer.
pub fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?
        .split_once('.')?
        .0
        .parse()
        .ok()
}

/// Whether the stage holding blocks `layers` of a model of `n_layers` holds tensor `name`: its
/// blocks' tensors, the embedding on the first stage, the final norm and the output layer on
/// the last.
pub fn holds(name: &str, layers: &Range<usize>, n_layers: usize) -> bool {
    match layer_of(name) {
        Some(layer) => layers.contains(&layer),
        None if name.starts_with("model.embed_tokens.") => layers.start == 0,
        None => layers.end == n_layers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_and_last_stages_carry_one_block_fewer() {
        let stages = |n: usize, p: usize| -> Vec<Range<usize>> {
            (0..p).map(|s| stage_layers(n, p, s).unwrap()).collect()
        };
        // 8 blocks + 2 = 10 layers over 2 stages: 5 each, the first and last one a non-block.
        assert_eq!(stages(8, 2), [0..4, 4..8]);
        // 126 blocks over 16 stages (the paper's 405B): 128 layers, 8 per stage.
        let p16 = stages(126, 16);
        assert_eq!(p16[0], 0..7);
        assert_eq!(p16[1], 7..15);
        assert_eq!(p16[15], 119..126);
        // 6 blocks over 4 stages: 8 layers, 2 each.
        assert_eq!(stages(6, 4), [0..1, 1..3, 3..5, 5..6]);
        // 7 blocks over 3 stages: 9 layers, 3 each.
        assert_eq!(stages(7, 3), [0..2, 2..5, 5..7]);
        assert_eq!(stage_layers(5, 1, 0).unwrap(), 0..5);
        // 9 blocks over 4 stages: 11 layers, the 3 left over to the middle stages, then the first.
        assert_eq!(stage_sizes(9, 4).unwrap(), [2, 3, 3, 1]);
        for (n, p) in [(2, 2), (3, 2), (9, 4), (40, 6)] {
            let all = stages(n, p);
            assert_eq!(all[0].start, 0);
            assert_eq!(all[p - 1].end, n);
            assert!(all.windows(2).all(|w| w[0].end == w[1].start), "{all:?}");
            assert!(all.iter().all(|r| !r.is_empty()), "{all:?}");
        }
    }

    #[test]
    fn too_few_blocks_for_the_stages_are_refused() {
        assert!(stage_layers(1, 2, 0)
            .unwrap_err()
            .contains("the model has 1"));
        assert!(stage_layers(2, 3, 0).is_err());
        assert!(stage_layers(4, 2, 2).is_err());
    }

    #[test]
    fn stages_run_one_after_another_give_the_whole_models_logits() {
        use candle_core::{DType, Device, Tensor};

        use crate::{seeded_weights, Llama, SequenceLayout};
        let device = Device::Cpu;
        let config = crate::LlamaConfig {
            n_layers: 5,
            ..seeded_weights::tiny_config()
        };
        let weights = seeded_weights::weights(&config, &device).unwrap();
        let whole = Llama::load(config.clone(), &weights, DType::F32, &device).unwrap();
        let tokens = Tensor::new(&[[1u32, 5, 9, 2, 7, 3], [4, 4, 8, 1, 0, 6]], &device).unwrap();
        let layout = SequenceLayout::packed(&[vec![2, 4], vec![6]]).unwrap();
        let want = whole.forward(&tokens, &layout, None).unwrap();
        let stages = 3;
        let mut x = tokens.clone();
        for stage in 0..stages {
            let layers = stage_layers(config.n_layers, stages, stage).unwrap();
            let part =
                Llama::load_stage(config.clone(), &weights, DType::F32, &device, None, layers)
                    .unwrap();
            x = part.stage_forward(&x, &layout).unwrap();
        }
        let diff = (x - want).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);

        // A middle stage takes hidden states, and says so when given tokens.
        let middle =
            Llama::load_stage(config.clone(), &weights, DType::F32, &device, None, 2..4).unwrap();
        let err = middle
            .stage_forward(&tokens, &layout)
            .unwrap_err()
            .to_string();
        assert!(err.contains("takes hidden states"), "{err}");
        let tied = crate::LlamaConfig {
            tie_embeddings: true,
            ..config
        };
        let err = Llama::load_stage(tied, &weights, DType::F32, &device, None, 0..2).unwrap_err();
        assert!(err.to_string().contains("tie_embeddings"), "{err}");
    }

    #[test]
    fn tensors_go_to_the_stage_of_their_block() {
        assert_eq!(layer_of("model.layers.12.mlp.up_proj.weight"), Some(12));
        assert_eq!(layer_of("model.norm.weight"), None);
        let (first, last) = (0..2, 2..4);
        assert!(holds("model.embed_tokens.weight", &first, 4));
        assert!(!holds("model.embed_tokens.weight", &last, 4));
        assert!(holds("lm_head.weight", &last, 4) && holds("model.norm.weight", &last, 4));
        assert!(!holds("lm_head.weight", &first, 4));
        assert!(holds("model.layers.1.input_layernorm.weight", &first, 4));
        assert!(!holds("model.layers.2.input_layernorm.weight", &first, 4));
    }
}
