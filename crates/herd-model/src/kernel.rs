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
/// candle's worker pool when the output is large enough to pay for it.
pub fn for_each_row<T: Send>(out: &mut [T], width: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if out.len() < PARALLEL_MIN {
        out.chunks_mut(width)
            .enumerate()
            .for_each(|(i, row)| f(i, row));
    } else {
        let mut rows: Vec<&mut [T]> = out.chunks_mut(width).collect();
        par_for_each(&mut rows, |i, row| f(i, row));
    }
}

/// Runs `f(index, item)` on every item, on candle's worker pool: the pool candle's and herd's
/// matmuls run on, so no second set of workers (rayon's) spins against it on the same cores.
pub fn par_for_each<T: Send>(items: &mut [T], f: impl Fn(usize, &mut T) + Sync) {
    let start = SharedMut(items.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(items.len(), |range| {
        for i in range {
            // SAFETY: `i` < items.len(), and each index is handed to exactly one thread.
            f(i, unsafe { &mut *start.at(i) });
        }
    });
}

/// A pointer into a buffer whose disjoint elements the pool's threads write.
pub(crate) struct SharedMut<T>(pub(crate) *mut T);

// SAFETY: only used to hand disjoint elements of one live buffer to the pool's threads, which
// finish before the pool call that borrows the buffer returns.
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The element `offset` places on.
    ///
    /// # Safety
    /// `offset` must lie inside the buffer the pointer came from.
    pub(crate) unsafe fn at(&self, offset: usize) -> *mut T {
        // SAFETY: the caller keeps `offset` inside the buffer.
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
