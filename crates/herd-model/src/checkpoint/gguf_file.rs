//! The GGUF container (llama.cpp's `gguf.cpp`, versions 1–3), read from a memory map with every
//! count, length, shape and offset checked against the file before it is used: a corrupt or
//! hostile file gives an error naming the byte offset or the tensor, never an allocation the
//! file cannot back, an overflow or a read past the end.
//!
//! Written here rather than taken from candle's `gguf_file`: candle divides by a zero
//! `general.alignment`, multiplies tensor sizes without overflow checks and reads tensor data by
//! seeking, where a mapped file lets a tensor be taken from memory. The metadata values are
//! candle's [`Value`] so the rest of herd reads them as before, and tensors become candle
//! [`QTensor`]s through `qtensor_from_ggml`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{ggml_file, GgmlDType, QTensor};
use candle_core::Device;
use memmap2::Mmap;

use crate::error::{Error, Result};

/// Array values nested deeper than this are refused (llama.cpp's files use one level).
const MAX_DEPTH: usize = 4;
/// Dimensions of a tensor (ggml's `GGML_MAX_DIMS`).
const MAX_DIMS: usize = 4;
/// The data alignment when the file does not set `general.alignment`.
const DEFAULT_ALIGNMENT: usize = 32;

/// Where one tensor's data is.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// The block format.
    pub dtype: GgmlDType,
    /// The shape, outermost dimension first (candle's order; GGUF stores it reversed).
    pub dims: Vec<usize>,
    /// Byte offset of the data in the file.
    offset: usize,
    /// Bytes of data.
    bytes: usize,
}

/// A mapped GGUF file: its metadata and the tensors it holds.
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    /// Key → value, as stored.
    pub metadata: HashMap<String, Value>,
    /// The tensors, in file order.
    pub tensors: Vec<(String, TensorInfo)>,
}

/// Little-endian reads from the mapped bytes, each checked against the end of the file.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Strings, array lengths and counts are u32 in version 1, u64 after.
    wide: bool,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> std::result::Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "{what} needs {n} bytes at byte {}, but the file ends at {}: truncated or corrupt",
                    self.at,
                    self.bytes.len()
                )
            })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> std::result::Result<[u8; N], String> {
        Ok(self.take(N, what)?.try_into().expect("N bytes"))
    }

    fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> std::result::Result<u64, String> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A count or length, which must fit in what is left of the file at `min_bytes` each.
    fn length(&mut self, what: &str, min_bytes: usize) -> std::result::Result<usize, String> {
        let at = self.at;
        let n = if self.wide {
            self.u64(what)?
        } else {
            u64::from(self.u32(what)?)
        };
        let left = (self.bytes.len() - self.at) as u64;
        if n.saturating_mul(min_bytes.max(1) as u64) > left {
            return Err(format!(
                "{what} at byte {at} is {n}, more than the {left} bytes left in the file can hold"
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> std::result::Result<String, String> {
        let n = self.length(what, 1)?;
        let bytes = self.take(n, what)?;
        // Some writers end strings with NUL bytes (C strings); they are not part of the text
        // (as candle's reader, which herd used before, drops them).
        let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        Ok(String::from_utf8_lossy(&bytes[..end]).into_owned())
    }

    fn value(&mut self, kind: u32, depth: usize) -> std::result::Result<Value, String> {
        Ok(match kind {
            0 => Value::U8(self.array::<1>("a u8 value")?[0]),
            1 => Value::I8(self.array::<1>("an i8 value")?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array("a u16 value")?)),
            3 => Value::I16(i16::from_le_bytes(self.array("an i16 value")?)),
            4 => Value::U32(self.u32("a u32 value")?),
            5 => Value::I32(i32::from_le_bytes(self.array("an i32 value")?)),
            6 => Value::F32(f32::from_le_bytes(self.array("an f32 value")?)),
            7 => match self.array::<1>("a bool value")?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(format!("bool value {b} at byte {}", self.at - 1)),
            },
            8 => Value::String(self.string("a string")?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(format!("arrays nested deeper than {MAX_DEPTH}"));
                }
                let inner = self.u32("an array's value type")?;
                let n = self.length("an array length", min_value_bytes(inner))?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(inner, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64("a u64 value")?),
            11 => Value::I64(i64::from_le_bytes(self.array("an i64 value")?)),
            12 => Value::F64(f64::from_le_bytes(self.array("an f64 value")?)),
            other => {
                return Err(format!(
                    "unknown value type {other} at byte {}",
                    self.at - 4
                ))
            }
        })
    }
}

/// The fewest bytes one value of type `kind` takes (for bounding array lengths).
fn min_value_bytes(kind: u32) -> usize {
    match kind {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 9 => 4,
        _ => 8,
    }
}

/// The ggml type of a type id (the ids `ggml.h` assigns).
fn dtype_of(id: u32) -> Option<GgmlDType> {
    Some(match id {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        9 => GgmlDType::Q8_1,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        15 => GgmlDType::Q8K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

impl GgufFile {
    /// Maps `path` and reads its header, metadata and tensor table.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is only read; a file changed under a running reader is the user's
        // doing, as with every mapped model file (llama.cpp maps GGUFs the same way).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (metadata, tensors) = parse(&map)
            .map_err(|m| Error::format(path, format!("not a readable GGUF file: {m}")))?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            map,
            metadata,
            tensors,
        })
    }

    /// The table entry of tensor `name`.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, i)| i)
    }

    /// Tensor `name` as a candle quantized tensor on `device`.
    pub fn tensor(&self, name: &str, device: &Device) -> Result<QTensor> {
        let shown = herd_util::text::printable(name);
        let info = self
            .info(name)
            .ok_or_else(|| Error::format(&self.path, format!("no tensor `{shown}`")))?;
        let data = &self.map[info.offset..info.offset + info.bytes];
        // candle views the bytes as blocks of up to 8-byte alignment; a file whose alignment is
        // smaller than that is copied to an aligned buffer first.
        let aligned: Vec<u64>;
        let data = if (data.as_ptr() as usize).is_multiple_of(8) {
            data
        } else {
            aligned = data
                .chunks(8)
                .map(|c| {
                    let mut word = [0u8; 8];
                    word[..c.len()].copy_from_slice(c);
                    u64::from_ne_bytes(word)
                })
                .collect();
            // SAFETY: the u64 buffer holds at least `data.len()` initialised bytes.
            unsafe { std::slice::from_raw_parts(aligned.as_ptr() as *const u8, data.len()) }
        };
        ggml_file::qtensor_from_ggml(info.dtype, data, info.dims.clone(), device)
            .map_err(|e| Error::format(&self.path, format!("tensor `{shown}`: {e}")))
    }
}

type Parsed = (HashMap<String, Value>, Vec<(String, TensorInfo)>);

fn parse(bytes: &[u8]) -> std::result::Result<Parsed, String> {
    let mut c = Cursor {
        bytes,
        at: 0,
        wide: true,
    };
    if c.take(4, "the magic")? != b"GGUF" {
        return Err("no GGUF magic at byte 0".into());
    }
    let version = c.u32("the version")?;
    if !(1..=3).contains(&version) {
        return Err(format!("unknown GGUF version {version}"));
    }
    c.wide = version > 1;
    let n_tensors = c.length("the tensor count", 8)?;
    let n_metadata = c.length("the metadata count", 8)?;
    let mut metadata = HashMap::with_capacity(n_metadata);
    for _ in 0..n_metadata {
        let key = c.string("a metadata key")?;
        let kind = c.u32("a value type")?;
        let value = c
            .value(kind, 0)
            .map_err(|m| format!("metadata `{}`: {m}", herd_util::text::printable(&key)))?;
        metadata.insert(key, value);
    }
    let mut infos = Vec::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        let name = c.string("a tensor name")?;
        let shown = herd_util::text::printable(&name).into_owned();
        let n_dims = c.u32("a tensor's dimension count")? as usize;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(format!(
                "tensor `{shown}` has {n_dims} dimensions (1 to {MAX_DIMS})"
            ));
        }
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            let d = if c.wide {
                c.u64("a dimension")?
            } else {
                u64::from(c.u32("a dimension")?)
            };
            dims.push(usize::try_from(d).map_err(|_| format!("tensor `{shown}`: dimension {d}"))?);
        }
        let id = c.u32("a tensor type")?;
        let dtype =
            dtype_of(id).ok_or_else(|| format!("tensor `{shown}` has unknown type {id}"))?;
        let offset = c.u64("a tensor offset")?;
        let elements = dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("tensor `{shown}` has shape {dims:?}"))?;
        let block = dtype.block_size();
        if !dims[0].is_multiple_of(block) {
            return Err(format!(
                "tensor `{shown}`: a row of {} values is not whole {dtype:?} blocks of {block}",
                dims[0]
            ));
        }
        let bytes = (elements / block)
            .checked_mul(dtype.type_size())
            .ok_or_else(|| format!("tensor `{shown}` is too large"))?;
        dims.reverse();
        infos.push((name, (dtype, dims, offset, bytes)));
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if a.is_power_of_two() => *a as usize,
        Some(other) => {
            return Err(format!(
                "general.alignment must be a power of two (u32), not {other:?}"
            ))
        }
    };
    let data_start = c.at.next_multiple_of(alignment);
    let data_len = bytes.len().saturating_sub(data_start);
    let mut tensors = Vec::with_capacity(infos.len());
    for (name, (dtype, dims, offset, bytes)) in infos {
        let shown = herd_util::text::printable(&name);
        let fits = usize::try_from(offset)
            .ok()
            .filter(|o| o.is_multiple_of(alignment))
            .and_then(|o| {
                o.checked_add(bytes)
                    .filter(|&end| end <= data_len)
                    .map(|_| o)
            });
        let Some(offset) = fits else {
            return Err(format!(
                "tensor `{shown}`: {bytes} bytes at data offset {offset} do not fit the {data_len} \
                 bytes of tensor data (or the offset is not {alignment}-aligned)"
            ));
        };
        if tensors
            .iter()
            .any(|(n, _): &(String, TensorInfo)| *n == name)
        {
            return Err(format!("tensor `{shown}` appears twice"));
        }
        tensors.push((
            name,
            TensorInfo {
                dtype,
                dims,
                offset: data_start + offset,
                bytes,
            },
        ));
    }
    Ok((metadata, tensors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file;
    use candle_core::Tensor;

    fn written(tensors: &[(&str, &QTensor)], metadata: &[(&str, &Value)]) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        gguf_file::write(&mut out, metadata, tensors).unwrap();
        out.into_inner()
    }

    #[test]
    fn files_written_by_candle_read_back() {
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 64., &dev)
            .unwrap()
            .reshape((2, 32))
            .unwrap();
        let qa = QTensor::quantize(&a, GgmlDType::Q8_0).unwrap();
        let b = Tensor::new(&[1f32, 2., 3.], &dev).unwrap();
        let qb = QTensor::quantize(&b, GgmlDType::F32).unwrap();
        let name = Value::String("tiny".into());
        let list = Value::Array(vec![Value::U32(1), Value::U32(2)]);
        let bytes = written(
            &[("a", &qa), ("b", &qb)],
            &[("general.name", &name), ("l", &list)],
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.gguf");
        std::fs::write(&path, &bytes).unwrap();
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(file.metadata["general.name"].to_string().unwrap(), "tiny");
        assert_eq!(file.metadata["l"].to_vec().unwrap().len(), 2);
        assert_eq!(file.tensors.len(), 2);
        assert_eq!(file.info("a").unwrap().dims, [2, 32]);
        let back = file.tensor("a", &dev).unwrap().dequantize(&dev).unwrap();
        let direct = qa.dequantize(&dev).unwrap();
        let diff: f32 = (back - direct)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(diff, 0.0);
        let b_back: Vec<f32> = file
            .tensor("b", &dev)
            .unwrap()
            .dequantize(&dev)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(b_back, [1., 2., 3.]);
    }

    #[test]
    fn corrupt_headers_are_errors_naming_what_and_where() {
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 32., &dev)
            .unwrap()
            .reshape((1, 32))
            .unwrap();
        let qa = QTensor::quantize(&a, GgmlDType::F32).unwrap();
        let bytes = written(&[("a", &qa)], &[]);
        let check = |bytes: &[u8], expect: &str| {
            let err = parse(bytes).unwrap_err();
            assert!(err.contains(expect), "{err}");
        };
        check(&bytes[..10], "truncated");
        let mut huge_count = bytes.clone();
        huge_count[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        check(&huge_count, "tensor count");
        // An alignment of zero (candle divides by it).
        let zero = Value::U32(0);
        check(
            &written(&[("a", &qa)], &[("general.alignment", &zero)]),
            "power of two",
        );
        // The tensor's offset pointing past the data.
        let mut past = bytes.clone();
        // Magic, version and the two counts (24 bytes), the name's length and byte (9), the
        // dimension count (4), two dimensions (16) and the type (4), then the offset.
        let at = 24 + 9 + 4 + 16 + 4;
        past[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        check(&past, "do not fit");
    }
}
