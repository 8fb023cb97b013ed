//! Shared plumbing of herd's fused CPU ops (candle custom ops with a backward pass): typed
//! slices of contiguous storage, a dtype dispatch for f32/f64, and row-parallel loops on
//! candle's worker pool (the one candle's and herd's matmuls use). candle's own fused kernels
//! (softmax, RMSNorm, RoPE) have no backward pass, and the composed tensor-op versions allocate
//! a buffer per elementwise step; these ops do one pass forward and one backward.

use candle_core::{CpuStorage, Layout, Result, WithDType};
use num_traits::Float;

/// The element types the fused ops compute in.
pub trait Real: WithDType + Float + Send + Sync {
    /// The value as f64 (for sums that want the extra precision).
    fn wide(self) -> f64 {
        WithDType::to_f64(self)
    }

    /// An f64 value in this type.
    fn narrow(value: f64) -> Self {
        WithDType::from_f64(value)
    }
}
impl Real for f32 {}
impl Real for f64 {}

/// Outputs smaller than this run on the calling thread: waking the worker pool costs more than a
/// decode step's norm or softmax (one token's rows).
const PARALLEL_MIN: usize = 1 << 15;

/// Runs `f(index, row)` on each `width`-sized row of `out` (the last may be shorter), on
/// candle's worker pool when the output is large enough to pay for it. The pool is the one
/// candle's and herd's matmuls run on: with a second pool (rayon's) the two sets of workers
/// would spin against each other on the same cores between ops.
pub fn for_each_row<T: Send>(out: &mut [T], width: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if out.len() < PARALLEL_MIN {
        out.chunks_mut(width)
            .enumerate()
            .for_each(|(i, row)| f(i, row));
        return;
    }
    let (len, rows) = (out.len(), out.len().div_ceil(width));
    let start = SharedMut(out.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(rows, |range| {
        for i in range {
            let row_len = width.min(len - i * width);
            // SAFETY: row `i` is `[i·width, i·width + row_len)` of `out`, inside it, and each
            // row index is handed to exactly one thread; `out` outlives the pool call.
            let row = unsafe { std::slice::from_raw_parts_mut(start.at(i * width), row_len) };
            f(i, row);
        }
    });
}

/// A pointer into a slice whose disjoint parts threads write (see [`for_each_row`]).
struct SharedMut<T>(*mut T);

// SAFETY: only used to hand disjoint rows of one live slice to the pool's threads.
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The element `offset` places on.
    ///
    /// # Safety
    /// `offset` must lie inside the slice the pointer came from.
    unsafe fn at(&self, offset: usize) -> *mut T {
        // SAFETY: the caller keeps `offset` inside the slice.
        unsafe { self.0.add(offset) }
    }
}

/// The contiguous elements of `storage` under `layout`.
pub fn slice<'a, T: WithDType>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [T]> {
    let data = storage.as_slice::<T>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("herd fused op: the input must be contiguous"),
    }
}

/// Wraps computed values as candle storage.
pub fn storage<T: WithDType>(values: Vec<T>) -> CpuStorage {
    T::to_cpu_storage_owned(values)
}

/// Runs `$body` with `$t` bound to `f32` or `f64` after the dtype of `$storage`.
#[macro_export]
#[doc(hidden)]
macro_rules! for_real_dtype {
    ($storage:expr, $t:ident => $body:expr) => {
        match candle_core::backend::BackendStorage::dtype($storage) {
            candle_core::DType::F32 => {
                type $t = f32;
                $body
            }
            candle_core::DType::F64 => {
                type $t = f64;
                $body
            }
            other => candle_core::bail!("herd fused op: {other:?} is not supported (f32 or f64)"),
        }
    };
}

/// Test support: how far a fused op is from the composed tensor ops it replaces.
#[cfg(test)]
pub(crate) mod check {
    use candle_core::{Tensor, Var};

    /// Largest absolute difference of two f64 tensors.
    pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        d.to_scalar().unwrap()
    }

    /// (largest output difference, largest gradient difference over `vars`) of a fused and a
    /// composed computation of the same function, backpropagating a random upstream gradient.
    pub fn compare(fused: &Tensor, composed: &Tensor, vars: &[&Var]) -> (f64, f64) {
        let upstream = Tensor::randn(0f64, 1.0, fused.shape(), fused.device()).unwrap();
        let grads = |t: &Tensor| {
            (t * &upstream)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        };
        let (a, b) = (grads(fused), grads(composed));
        let gradient = vars
            .iter()
            .map(|v| max_diff(a.get(v).unwrap(), b.get(v).unwrap()))
            .fold(0.0, f64::max);
        (max_diff(fused, composed), gradient)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_visited_once_with_its_index() {
        // Above PARALLEL_MIN (runs on the pool), with a short last row.
        for len in [100, PARALLEL_MIN * 3 + 7] {
            let mut out = vec![0usize; len];
            for_each_row(&mut out, 1000, |i, row| {
                assert!(row.len() == 1000 || (i + 1) * 1000 >= len);
                row.iter_mut().for_each(|v| *v += i + 1);
            });
            assert!(out.iter().enumerate().all(|(k, &v)| v == k / 1000 + 1));
        }
    }
}
