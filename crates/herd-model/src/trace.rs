//! `HERD_TRACE=1`: print the sum of each named intermediate tensor of a forward pass, under
//! llama.cpp's names (`attn_norm-0`, `Qcur-0`, `kqv_out-0`, `l_out-0`…), to find where two
//! implementations part ways (compare with llama.cpp's `llama-eval-callback`). Sums do not
//! depend on the order of rows, so herd's half-split Q/K layout compares with llama.cpp's.

use std::sync::OnceLock;

use candle_core::{DType, Tensor};

/// Whether tracing is on (read once from `HERD_TRACE`).
pub fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED
        .get_or_init(|| std::env::var_os("HERD_TRACE").is_some_and(|v| !v.is_empty() && v != "0"))
}

/// Prints `name-layer = sum` of `tensor` to stderr when tracing is on.
pub fn record(name: &str, layer: Option<usize>, tensor: &Tensor) {
    if !enabled() {
        return;
    }
    let sum = tensor
        .to_dtype(DType::F64)
        .and_then(|t| t.sum_all())
        .and_then(|s| s.to_scalar::<f64>());
    let label = match layer {
        Some(l) => format!("{name}-{l}"),
        None => name.to_string(),
    };
    match sum {
        Ok(s) => eprintln!("trace {label} {:?} sum = {s:.6}", tensor.dims()),
        Err(e) => eprintln!("trace {label}: {e}"),
    }
}
