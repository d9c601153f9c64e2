//! Reads a TensorFlow Lite model file without a TFLite runtime.
//!
//! A `.tflite` file is a FlatBuffer (schema: tensorflow/lite/schema/
//! schema.fbs). Only what running a small convolutional graph needs is
//! decoded here: the first subgraph's tensors (shape, type, constant data),
//! its operators in execution order with their options, and the builtin
//! operator codes. Every offset is bounds-checked: a damaged file gives an
//! error, never a panic.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum TfliteError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("not a valid TFLite file: {0}")]
    Format(&'static str),
}

type Result<T> = std::result::Result<T, TfliteError>;

/// Element types (schema `TensorType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    I32,
    /// Signed 8-bit, dequantised with the tensor's `scale`/`zero_point`.
    I8,
    Other(u8),
}

#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
    /// Constant contents (little-endian), empty for activations.
    pub data: Vec<u8>,
    /// Quantisation: one scale and zero point per tensor, or one per slice
    /// along `quant_axis`; empty for float tensors.
    pub scale: Vec<f32>,
    pub zero_point: Vec<i64>,
    pub quant_axis: usize,
}

impl Tensor {
    /// The constant contents as f32 (f16 widened, int8 dequantised:
    /// `scale * (q - zero_point)`).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        match self.dtype {
            DType::I8 => self.dequantize(),
            DType::F32 => Ok(self
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()),
            DType::F16 => Ok(self
                .data
                .chunks_exact(2)
                .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect()),
            _ => Err(TfliteError::Format("tensor is not a float tensor")),
        }
    }

    fn dequantize(&self) -> Result<Vec<f32>> {
        let n = self.scale.len();
        if n == 0 || self.zero_point.len() != n {
            return Err(TfliteError::Format("int8 tensor without quantisation"));
        }
        // Elements per slice along the quantised axis (per-channel scales).
        let inner: usize = self.shape.iter().skip(self.quant_axis + 1).product();
        if n > 1
            && (self.shape.get(self.quant_axis) != Some(&n)
                || self.data.len() != self.shape.iter().product::<usize>())
        {
            return Err(TfliteError::Format(
                "per-channel scales do not match the shape",
            ));
        }
        Ok(self
            .data
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                let c = if n == 1 { 0 } else { (i / inner.max(1)) % n };
                self.scale[c] * (f32::from(q as i8) - self.zero_point[c] as f32)
            })
            .collect())
    }

    pub fn to_i32(&self) -> Result<Vec<i32>> {
        if self.dtype != DType::I32 {
            return Err(TfliteError::Format("tensor is not an int32 tensor"));
        }
        Ok(self
            .data
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}

/// Fused activation (schema `ActivationFunctionType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    None,
    Relu,
    Relu6,
}

/// The operators the face networks use, with their options.
#[derive(Clone, Debug, PartialEq)]
pub enum OpKind {
    Conv2d {
        same: bool,
        stride: [usize; 2],
        dilation: [usize; 2],
        act: Activation,
    },
    DepthwiseConv2d {
        same: bool,
        stride: [usize; 2],
        dilation: [usize; 2],
        multiplier: usize,
        act: Activation,
    },
    MaxPool2d {
        same: bool,
        stride: [usize; 2],
        filter: [usize; 2],
    },
    Add {
        act: Activation,
    },
    Concat {
        axis: i32,
        act: Activation,
    },
    Pad,
    Relu,
    Prelu,
    Reshape,
    Dequantize,
    /// Any other builtin (its code); running a graph with one fails.
    Unsupported(i32),
}

#[derive(Clone, Debug)]
pub struct Operator {
    pub kind: OpKind,
    /// Tensor indices; -1 marks an omitted optional input (e.g. no bias).
    pub inputs: Vec<i32>,
    pub outputs: Vec<usize>,
}

#[derive(Clone, Debug)]
pub struct Model {
    pub tensors: Vec<Tensor>,
    pub operators: Vec<Operator>,
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
}

impl Model {
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| TfliteError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&bytes)
    }

    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let fb = Fb(bytes);
        let root = fb.root()?;
        let codes: Vec<i32> = fb
            .tables(root, 1)?
            .into_iter()
            .map(|t| {
                let old = fb.scalar_u8(t, 0)?.unwrap_or(0) as i32;
                let new = fb.scalar_i32(t, 3)?.unwrap_or(0);
                Ok(new.max(old))
            })
            .collect::<Result<_>>()?;
        let buffers = fb.tables(root, 4)?;
        let subgraph = *fb
            .tables(root, 2)?
            .first()
            .ok_or(TfliteError::Format("no subgraph"))?;
        let mut tensors = Vec::new();
        for t in fb.tables(subgraph, 0)? {
            let shape = fb
                .i32s(t, 0)?
                .into_iter()
                .map(|d| usize::try_from(d).map_err(|_| TfliteError::Format("negative dim")))
                .collect::<Result<_>>()?;
            let dtype = match fb.scalar_u8(t, 1)?.unwrap_or(0) {
                0 => DType::F32,
                1 => DType::F16,
                2 => DType::I32,
                9 => DType::I8,
                other => DType::Other(other),
            };
            let buffer = fb.scalar_u32(t, 2)?.unwrap_or(0) as usize;
            let data = match buffers.get(buffer) {
                Some(&b) => fb.bytes(b, 0)?.to_vec(),
                None => Vec::new(),
            };
            let name = fb.string(t, 3)?.unwrap_or_default();
            let (scale, zero_point, quant_axis) = match fb.table(t, 4)? {
                Some(q) => (
                    fb.f32s(q, 2)?,
                    fb.i64s(q, 3)?,
                    fb.scalar_i32(q, 6)?.unwrap_or(0).max(0) as usize,
                ),
                None => (Vec::new(), Vec::new(), 0),
            };
            tensors.push(Tensor {
                name,
                shape,
                dtype,
                data,
                scale,
                zero_point,
                quant_axis,
            });
        }
        let to_idx = |v: Vec<i32>| -> Result<Vec<usize>> {
            v.into_iter()
                .map(|i| {
                    usize::try_from(i)
                        .ok()
                        .filter(|&i| i < tensors.len())
                        .ok_or(TfliteError::Format("tensor index out of range"))
                })
                .collect()
        };
        let mut operators = Vec::new();
        for op in fb.tables(subgraph, 3)? {
            let code = *codes
                .get(fb.scalar_u32(op, 0)?.unwrap_or(0) as usize)
                .ok_or(TfliteError::Format("opcode index out of range"))?;
            let inputs = fb.i32s(op, 1)?;
            if inputs.iter().any(|&i| i < -1 || i >= tensors.len() as i32) {
                return Err(TfliteError::Format("operator input out of range"));
            }
            let outputs = to_idx(fb.i32s(op, 2)?)?;
            let opts = fb.table(op, 4)?;
            let kind = op_kind(&fb, code, opts)?;
            operators.push(Operator {
                kind,
                inputs,
                outputs,
            });
        }
        Ok(Model {
            inputs: to_idx(fb.i32s(subgraph, 1)?)?,
            outputs: to_idx(fb.i32s(subgraph, 2)?)?,
            tensors,
            operators,
        })
    }
}

fn activation(v: Option<u8>) -> Result<Activation> {
    match v.unwrap_or(0) {
        0 => Ok(Activation::None),
        1 => Ok(Activation::Relu),
        3 => Ok(Activation::Relu6),
        _ => Err(TfliteError::Format("unsupported fused activation")),
    }
}

fn op_kind(fb: &Fb, code: i32, o: Option<usize>) -> Result<OpKind> {
    // Option field readers that treat a missing options table as defaults.
    let u8_ = |f: usize| -> Result<Option<u8>> { o.map_or(Ok(None), |t| fb.scalar_u8(t, f)) };
    let i32_ = |f: usize, d: i32| -> Result<usize> {
        let v = o.map_or(Ok(None), |t| fb.scalar_i32(t, f))?.unwrap_or(d);
        usize::try_from(v).map_err(|_| TfliteError::Format("negative option"))
    };
    Ok(match code {
        0 => OpKind::Add {
            act: activation(u8_(0)?)?,
        },
        2 => OpKind::Concat {
            axis: o.map_or(Ok(None), |t| fb.scalar_i32(t, 0))?.unwrap_or(0),
            act: activation(u8_(1)?)?,
        },
        3 => OpKind::Conv2d {
            same: u8_(0)?.unwrap_or(0) == 0,
            stride: [i32_(2, 1)?, i32_(1, 1)?],
            act: activation(u8_(3)?)?,
            dilation: [i32_(5, 1)?, i32_(4, 1)?],
        },
        4 => OpKind::DepthwiseConv2d {
            same: u8_(0)?.unwrap_or(0) == 0,
            stride: [i32_(2, 1)?, i32_(1, 1)?],
            multiplier: i32_(3, 1)?,
            act: activation(u8_(4)?)?,
            dilation: [i32_(6, 1)?, i32_(5, 1)?],
        },
        6 => OpKind::Dequantize,
        17 => {
            if activation(u8_(5)?)? != Activation::None {
                return Err(TfliteError::Format("fused activation on a pool"));
            }
            OpKind::MaxPool2d {
                same: u8_(0)?.unwrap_or(0) == 0,
                stride: [i32_(2, 1)?, i32_(1, 1)?],
                filter: [i32_(4, 1)?, i32_(3, 1)?],
            }
        }
        19 => OpKind::Relu,
        22 => OpKind::Reshape,
        34 => OpKind::Pad,
        54 => OpKind::Prelu,
        other => OpKind::Unsupported(other),
    })
}

/// IEEE half → single precision.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalise.
            let shift = m.leading_zeros() - 21;
            let m = (m << shift) & 0x3ff;
            sign | ((127 - 15 + 1 - shift) << 23) | (m << 13)
        }
        (31, m) => sign | (0xff << 23) | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Bounds-checked FlatBuffer access: tables are byte positions.
struct Fb<'a>(&'a [u8]);

impl Fb<'_> {
    fn u32_at(&self, pos: usize) -> Result<u32> {
        let b = self
            .0
            .get(pos..pos + 4)
            .ok_or(TfliteError::Format("offset past the end"))?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u16_at(&self, pos: usize) -> Result<u16> {
        let b = self
            .0
            .get(pos..pos + 2)
            .ok_or(TfliteError::Format("offset past the end"))?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn root(&self) -> Result<usize> {
        if self.0.get(4..8) != Some(b"TFL3") {
            return Err(TfliteError::Format("missing TFL3 identifier"));
        }
        Ok(self.u32_at(0)? as usize)
    }

    /// Position of field `f` of the table at `t`, if present.
    fn field(&self, t: usize, f: usize) -> Result<Option<usize>> {
        let soff = self.u32_at(t)? as i32 as i64;
        let vt = usize::try_from(t as i64 - soff).map_err(|_| TfliteError::Format("vtable"))?;
        let vt_len = self.u16_at(vt)? as usize;
        let slot = 4 + 2 * f;
        if slot + 2 > vt_len {
            return Ok(None);
        }
        match self.u16_at(vt + slot)? {
            0 => Ok(None),
            off => Ok(Some(t + off as usize)),
        }
    }

    fn deref(&self, pos: usize) -> Result<usize> {
        Ok(pos + self.u32_at(pos)? as usize)
    }

    fn scalar_u8(&self, t: usize, f: usize) -> Result<Option<u8>> {
        self.field(t, f)?
            .map(|p| {
                self.0
                    .get(p)
                    .copied()
                    .ok_or(TfliteError::Format("offset past the end"))
            })
            .transpose()
    }

    fn scalar_u32(&self, t: usize, f: usize) -> Result<Option<u32>> {
        self.field(t, f)?.map(|p| self.u32_at(p)).transpose()
    }

    fn scalar_i32(&self, t: usize, f: usize) -> Result<Option<i32>> {
        Ok(self.scalar_u32(t, f)?.map(|v| v as i32))
    }

    /// A vector field: (position of the first element, length).
    fn vector(&self, t: usize, f: usize) -> Result<Option<(usize, usize)>> {
        match self.field(t, f)? {
            None => Ok(None),
            Some(p) => {
                let v = self.deref(p)?;
                let len = self.u32_at(v)? as usize;
                Ok(Some((v + 4, len)))
            }
        }
    }

    fn bytes(&self, t: usize, f: usize) -> Result<&[u8]> {
        match self.vector(t, f)? {
            None => Ok(&[]),
            Some((start, len)) => self
                .0
                .get(start..start + len)
                .ok_or(TfliteError::Format("vector past the end")),
        }
    }

    fn i32s(&self, t: usize, f: usize) -> Result<Vec<i32>> {
        let Some((start, len)) = self.vector(t, f)? else {
            return Ok(Vec::new());
        };
        (0..len)
            .map(|i| Ok(self.u32_at(start + 4 * i)? as i32))
            .collect()
    }

    fn f32s(&self, t: usize, f: usize) -> Result<Vec<f32>> {
        Ok(self
            .scalars::<4>(t, f)?
            .into_iter()
            .map(f32::from_le_bytes)
            .collect())
    }

    fn i64s(&self, t: usize, f: usize) -> Result<Vec<i64>> {
        Ok(self
            .scalars::<8>(t, f)?
            .into_iter()
            .map(i64::from_le_bytes)
            .collect())
    }

    /// A vector of fixed-size little-endian scalars.
    fn scalars<const N: usize>(&self, t: usize, f: usize) -> Result<Vec<[u8; N]>> {
        let Some((start, len)) = self.vector(t, f)? else {
            return Ok(Vec::new());
        };
        let bytes = len
            .checked_mul(N)
            .and_then(|n| self.0.get(start..start.checked_add(n)?))
            .ok_or(TfliteError::Format("vector out of bounds"))?;
        Ok(bytes
            .chunks_exact(N)
            .map(|c| c.try_into().unwrap_or([0; N]))
            .collect())
    }

    fn tables(&self, t: usize, f: usize) -> Result<Vec<usize>> {
        let Some((start, len)) = self.vector(t, f)? else {
            return Ok(Vec::new());
        };
        if len > self.0.len() / 4 {
            return Err(TfliteError::Format("vector length"));
        }
        (0..len).map(|i| self.deref(start + 4 * i)).collect()
    }

    fn table(&self, t: usize, f: usize) -> Result<Option<usize>> {
        self.field(t, f)?.map(|p| self.deref(p)).transpose()
    }

    fn string(&self, t: usize, f: usize) -> Result<Option<String>> {
        Ok(self
            .vector(t, f)?
            .and_then(|(start, len)| self.0.get(start..start + len))
            .map(|b| String::from_utf8_lossy(b).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_floats_widen_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert!(f16_to_f32(0x7c00).is_infinite());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Model::parse(b"").is_err());
        assert!(Model::parse(b"\x08\0\0\0TFL3\xff\xff\xff\x7f").is_err());
        let mut bytes = vec![0u8; 64];
        bytes[4..8].copy_from_slice(b"TFL3");
        for i in 0..64u8 {
            bytes[0] = i;
            let _ = Model::parse(&bytes);
        }
    }
}
