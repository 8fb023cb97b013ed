//! Gradients of the model against central finite differences in f64, and packed rows against
//! each document alone.

use candle_core::{DType, Device, Tensor};
use herd_model::LlamaConfig;
use herd_train::loader::Batch;
use herd_train::params::Parameters;
use herd_train::step::{batch_nll_sum, loss_and_grads};

fn tiny(tied: bool) -> LlamaConfig {
    let mut c = LlamaConfig::preset("llama3.1-8b").unwrap();
    (c.vocab_size, c.dim, c.n_layers, c.n_heads, c.n_kv_heads) = (19, 8, 2, 4, 2);
    (c.head_dim, c.ffn_dim, c.tie_embeddings) = (2, 12, tied);
    c.rope_theta = 10.0; // fast-turning angles, so RoPE matters at these short lengths
    c
}

/// Two rows: one of three documents, one of a single document (the packed training layout).
fn batch() -> Batch {
    let inputs = vec![1, 5, 7, 2, 9, 3, 3, 11, 4, 6, 8, 10, 12, 14, 16, 18];
    let mut targets = inputs[1..].to_vec();
    targets.push(0);
    let weights = vec![
        1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, //
        1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0,
    ];
    Batch {
        rows: 2,
        seq_len: 8,
        inputs,
        targets,
        weights,
        doc_lens: vec![vec![3, 2, 3], vec![8]],
    }
}

fn set_value(params: &Parameters, index: usize, flat: usize, value: f64) {
    let var = &params.vars()[index];
    let mut values: Vec<f64> = var.flatten_all().unwrap().to_vec1().unwrap();
    values[flat] = value;
    let t = Tensor::from_vec(values, var.dims(), &Device::Cpu).unwrap();
    var.set(&t).unwrap();
}

fn check_gradients(tied: bool) {
    let config = tiny(tied);
    // A larger init than 0.02 so the loss is not flat in any direction.
    let params = Parameters::init(&config, 11, DType::F64, &Device::Cpu).unwrap();
    for var in params.vars() {
        if var.rank() >= 2 {
            var.set(&(var.as_tensor() * 20.0).unwrap()).unwrap();
        }
    }
    let batch = batch();
    let model = params.model().unwrap();
    let analytic = loss_and_grads(&model, &params, &batch, 1).unwrap();
    let loss_at = || -> f64 {
        let frozen = params.frozen_model().unwrap();
        let sum = batch_nll_sum(&frozen, &batch).unwrap();
        sum.to_scalar::<f64>().unwrap() / batch.n_targets() as f64
    };
    assert!((loss_at() - analytic.loss).abs() < 1e-12);
    let h = 1e-5;
    let mut worst = 0.0f64;
    let mut checked = 0;
    for (index, name) in params.names().iter().enumerate() {
        let values: Vec<f64> = params.vars()[index]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let grad: Vec<f64> = analytic.grads[index]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // A spread of entries of every tensor.
        for flat in (0..values.len()).step_by(values.len() / 5 + 1) {
            set_value(&params, index, flat, values[flat] + h);
            let plus = loss_at();
            set_value(&params, index, flat, values[flat] - h);
            let minus = loss_at();
            set_value(&params, index, flat, values[flat]);
            let numeric = (plus - minus) / (2.0 * h);
            let error = (numeric - grad[flat]).abs() / (numeric.abs() + grad[flat].abs()).max(1e-4);
            assert!(
                error < 1e-5,
                "{name}[{flat}]: analytic {} numeric {numeric}",
                grad[flat]
            );
            worst = worst.max(error);
            checked += 1;
        }
    }
    println!("tied={tied}: {checked} entries, worst relative error {worst:.2e}");
}

#[test]
fn gradients_match_finite_differences_untied() {
    check_gradients(false);
}

#[test]
fn gradients_match_finite_differences_tied() {
    check_gradients(true);
}

#[test]
fn accumulated_micro_batches_equal_the_whole_batch() {
    let params = Parameters::init(&tiny(false), 5, DType::F64, &Device::Cpu).unwrap();
    let model = params.model().unwrap();
    let whole = loss_and_grads(&model, &params, &batch(), 2).unwrap();
    let micro = loss_and_grads(&model, &params, &batch(), 1).unwrap();
    assert!((whole.loss - micro.loss).abs() < 1e-12);
    for (a, b) in whole.grads.iter().zip(&micro.grads) {
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f64>().unwrap() < 1e-12);
    }
}

/// Each document's loss in a packed row equals its loss alone in a row of its own.
#[test]
fn packed_rows_give_each_documents_own_loss() {
    let config = tiny(true);
    let params = Parameters::init(&config, 2, DType::F32, &Device::Cpu).unwrap();
    for var in params.vars() {
        if var.rank() >= 2 {
            var.set(&(var.as_tensor() * 30.0).unwrap()).unwrap();
        }
    }
    let model = params.frozen_model().unwrap();
    let docs: [&[u32]; 3] = [&[1, 5, 7, 2], &[9, 3, 3], &[11, 4, 6, 8, 10]];
    let alone = |doc: &[u32]| -> f64 {
        let n = doc.len();
        let mut targets = doc[1..].to_vec();
        targets.push(0);
        let mut weights = vec![1.0; n];
        weights[n - 1] = 0.0;
        let b = Batch {
            rows: 1,
            seq_len: n,
            inputs: doc.to_vec(),
            targets,
            weights,
            doc_lens: vec![vec![n]],
        };
        batch_nll_sum(&model, &b)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64
    };
    let inputs: Vec<u32> = docs.concat();
    let mut targets = inputs[1..].to_vec();
    targets.push(0);
    let mut per_doc = Vec::new();
    let mut start = 0;
    for doc in docs {
        let mut weights = vec![0.0; inputs.len()];
        weights[start..start + doc.len() - 1].fill(1.0);
        let b = Batch {
            rows: 1,
            seq_len: inputs.len(),
            inputs: inputs.clone(),
            targets: targets.clone(),
            weights,
            doc_lens: vec![docs.iter().map(|d| d.len()).collect()],
        };
        per_doc.push(
            batch_nll_sum(&model, &b)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64,
        );
        start += doc.len();
    }
    for (doc, packed) in docs.iter().zip(per_doc) {
        let own = alone(doc);
        assert!(
            (own - packed).abs() < 1e-5 * own.abs().max(1.0),
            "{own} vs {packed}"
        );
    }
    // Without the document mask the last document's loss changes.
    let mut weights = vec![0.0; inputs.len()];
    weights[7..11].fill(1.0);
    let unmasked = Batch {
        rows: 1,
        seq_len: inputs.len(),
        inputs: inputs.clone(),
        targets,
        weights,
        doc_lens: vec![vec![inputs.len()]],
    };
    let leaky = batch_nll_sum(&model, &unmasked)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    assert!(
        (leaky - alone(docs[2])).abs() > 1e-3,
        "the mask matters here"
    );
}
