//! fastText's files read byte by byte ([`Reader`], every read checked against the end) and
//! its matrices: dense rows, or product-quantized codes with optional quantized norms
//! (`densematrix.cc`, `quantmatrix.cc`, `productquantizer.cc`).

use std::path::Path;

use super::KSUB;
use crate::error::{Error, Result};

/// Little-endian reads with the file name in errors.
pub(super) struct Reader<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) at: usize,
    pub(super) path: &'a Path,
}

impl Reader<'_> {
    pub(super) fn take(&mut self, n: usize) -> Result<&[u8]> {
        if n > self.bytes.len() - self.at {
            return Err(Error::format(
                self.path,
                format!(
                    "truncated fastText model: needs {n} bytes at offset {}",
                    self.at
                ),
            ));
        }
        self.at += n;
        Ok(&self.bytes[self.at - n..self.at])
    }
    pub(super) fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub(super) fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub(super) fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub(super) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        let bytes = n.checked_mul(4).ok_or_else(|| {
            Error::format(
                self.path,
                format!("a matrix of {n} values at offset {}", self.at),
            )
        })?;
        Ok(self
            .take(bytes)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect())
    }
    pub(super) fn size(&mut self, what: &str) -> Result<usize> {
        let v = self.i64()?;
        usize::try_from(v).map_err(|_| Error::format(self.path, format!("negative {what}: {v}")))
    }
    pub(super) fn count(&mut self, what: &str) -> Result<usize> {
        let v = self.i32()?;
        usize::try_from(v).map_err(|_| Error::format(self.path, format!("negative {what}: {v}")))
    }
}

/// A product quantizer: per subspace, 256 centroids.
pub(super) struct ProductQuantizer {
    pub(super) nsubq: usize,
    pub(super) dsub: usize,
    pub(super) lastdsub: usize,
    pub(super) centroids: Vec<f32>,
}

impl ProductQuantizer {
    pub(super) fn read(r: &mut Reader) -> Result<ProductQuantizer> {
        let dim = r.count("quantizer dim")?;
        let nsubq = r.count("subquantizers")?;
        let dsub = r.count("subspace dim")?;
        let lastdsub = r.count("last subspace dim")?;
        let centroids = r.f32s(dim.saturating_mul(KSUB))?;
        if nsubq == 0
            || dsub == 0
            || lastdsub == 0
            || (nsubq - 1)
                .checked_mul(dsub)
                .and_then(|n| n.checked_add(lastdsub))
                != Some(dim)
        {
            return Err(Error::format(
                r.path,
                format!(
                    "product quantizer of dimension {dim} with {nsubq} subspaces of {dsub} (last {lastdsub}): the subspaces must cover the dimension"
                ),
            ));
        }
        Ok(ProductQuantizer {
            nsubq,
            dsub,
            lastdsub,
            centroids,
        })
    }

    pub(super) fn centroid(&self, m: usize, i: u8) -> &[f32] {
        let i = usize::from(i);
        if m == self.nsubq - 1 {
            let at = m * KSUB * self.dsub + i * self.lastdsub;
            &self.centroids[at..at + self.lastdsub]
        } else {
            let at = (m * KSUB + i) * self.dsub;
            &self.centroids[at..at + self.dsub]
        }
    }
}

/// A matrix as fastText stores it: dense rows, or product-quantized codes with optional
/// quantized norms.
pub(super) enum Matrix {
    Dense {
        cols: usize,
        data: Vec<f32>,
    },
    Quantized {
        codes: Vec<u8>,
        pq: ProductQuantizer,
        norms: Option<(Vec<u8>, ProductQuantizer)>,
    },
}

impl Matrix {
    pub(super) fn read_dense(r: &mut Reader) -> Result<(Matrix, usize, usize)> {
        let rows = r.size("rows")?;
        let cols = r.size("columns")?;
        let data = r.f32s(rows.saturating_mul(cols))?;
        Ok((Matrix::Dense { cols, data }, rows, cols))
    }

    pub(super) fn read_quantized(r: &mut Reader) -> Result<(Matrix, usize, usize)> {
        let qnorm = r.u8()? != 0;
        let rows = r.size("rows")?;
        let cols = r.size("columns")?;
        let codesize = r.count("code size")?;
        let codes = r.take(codesize)?.to_vec();
        let pq = ProductQuantizer::read(r)?;
        if (pq.nsubq - 1) * pq.dsub + pq.lastdsub != cols {
            return Err(Error::format(
                r.path,
                "the quantizer does not cover the columns",
            ));
        }
        if Some(codes.len()) != rows.checked_mul(pq.nsubq) {
            return Err(Error::format(
                r.path,
                format!(
                    "{} codes for {rows} rows of {} subspaces",
                    codes.len(),
                    pq.nsubq
                ),
            ));
        }
        let norms = if qnorm {
            let codes = r.take(rows)?.to_vec();
            let npq = ProductQuantizer::read(r)?;
            if npq.nsubq != 1 || npq.lastdsub != 1 {
                return Err(Error::format(
                    r.path,
                    "the norm quantizer must be one value per row",
                ));
            }
            Some((codes, npq))
        } else {
            None
        };
        Ok((Matrix::Quantized { codes, pq, norms }, rows, cols))
    }

    pub(super) fn norm(norms: &Option<(Vec<u8>, ProductQuantizer)>, row: usize) -> f32 {
        norms
            .as_ref()
            .map_or(1.0, |(codes, npq)| npq.centroid(0, codes[row])[0])
    }

    /// `x += row` (times its quantized norm).
    pub(super) fn add_row(&self, x: &mut [f32], row: usize) {
        match self {
            Matrix::Dense { cols, data } => {
                for (x, v) in x.iter_mut().zip(&data[row * cols..(row + 1) * cols]) {
                    *x += v;
                }
            }
            Matrix::Quantized { codes, pq, norms } => {
                let alpha = Self::norm(norms, row);
                let code = &codes[pq.nsubq * row..pq.nsubq * (row + 1)];
                for (m, &c) in code.iter().enumerate() {
                    for (n, v) in pq.centroid(m, c).iter().enumerate() {
                        x[m * pq.dsub + n] += alpha * v;
                    }
                }
            }
        }
    }

    /// `row · x`.
    pub(super) fn dot_row(&self, x: &[f32], row: usize) -> f32 {
        match self {
            Matrix::Dense { cols, data } => data[row * cols..(row + 1) * cols]
                .iter()
                .zip(x)
                .fold(0.0f32, |acc, (v, x)| acc + v * x),
            Matrix::Quantized { codes, pq, norms } => {
                let code = &codes[pq.nsubq * row..pq.nsubq * (row + 1)];
                let mut res = 0.0f32;
                for (m, &c) in code.iter().enumerate() {
                    for (n, v) in pq.centroid(m, c).iter().enumerate() {
                        res += x[m * pq.dsub + n] * v;
                    }
                }
                res * Self::norm(norms, row)
            }
        }
    }
}
