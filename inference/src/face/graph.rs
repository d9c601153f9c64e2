//! Runs a small TFLite convolutional graph on burn.
//!
//! The face networks (BlazeFace, the 468-point mesh) are plain feed-forward
//! graphs of a handful of operators, so rather than transcribing each
//! architecture by hand the graph is taken from the file itself: operators
//! in the file's order, weights converted once at load to burn's layouts
//! (TFLite is NHWC with `[out, kh, kw, in]` filters; burn is NCHW with
//! `[out, in, kh, kw]`). Activations stay NCHW; a value's *logical* layout
//! is still TFLite's, so reshape, concat and pad translate their axes.
//! Float16 weights behind `DEQUANTIZE` are widened to f32 at load.

use std::collections::HashMap;
use std::path::Path;

use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::{conv2d, max_pool2d};
use burn::tensor::ops::PaddedConvOptions;

use crate::tflite::{Activation, Model, OpKind, TfliteError};

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error(transparent)]
    Tflite(#[from] TfliteError),
    #[error("unsupported graph: {0}")]
    Unsupported(String),
}

/// A value flowing through the graph.
#[derive(Clone)]
enum Val<B: Backend> {
    /// A 4-D activation, stored NCHW (logically NHWC).
    Image(Tensor<B, 4>),
    /// A tensor after a reshape, left-padded with 1s to rank 3; `rank` is
    /// its logical rank.
    Flat(Tensor<B, 3>, usize),
}

enum Step<B: Backend> {
    Conv {
        weight: Tensor<B, 4>,
        bias: Option<Tensor<B, 1>>,
        options: PaddedConvOptions<2>,
        act: Activation,
    },
    MaxPool {
        filter: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
    },
    Add(Activation),
    Relu,
    Prelu(Tensor<B, 4>),
    /// Zero padding per NCHW dim: (before, after).
    Pad([(usize, usize); 4]),
    Reshape(Vec<usize>),
    Concat(i32),
}

struct Node<B: Backend> {
    step: Step<B>,
    inputs: Vec<usize>,
    output: usize,
}

/// A loaded graph, ready to run on backend `B`.
pub struct Graph<B: Backend> {
    nodes: Vec<Node<B>>,
    input: usize,
    /// Input size (height, width, channels).
    pub input_shape: [usize; 3],
    outputs: Vec<usize>,
    /// Per tensor: the last node that reads it (values are dropped after).
    last_use: Vec<usize>,
    n_tensors: usize,
}

/// NHWC axis → NCHW axis.
const NHWC_TO_NCHW: [usize; 4] = [0, 2, 3, 1];

fn same_padding(input: usize, k: usize, stride: usize, dilation: usize) -> (usize, usize) {
    let out = input.div_ceil(stride);
    let span = (k - 1) * dilation + 1;
    let total = ((out - 1) * stride + span).saturating_sub(input);
    (total / 2, total - total / 2)
}

impl<B: Backend> Graph<B> {
    pub fn open(path: &Path, device: &B::Device) -> Result<Self, GraphError> {
        Self::from_model(&Model::open(path)?, device)
    }

    pub fn from_model(model: &Model, device: &B::Device) -> Result<Self, GraphError> {
        let unsupported = |m: String| GraphError::Unsupported(m);
        // Constant float data per tensor (weights, and dequantized weights).
        let mut consts: HashMap<usize, Vec<f32>> = HashMap::new();
        for (i, t) in model.tensors.iter().enumerate() {
            if !t.data.is_empty() && matches!(t.dtype, crate::tflite::DType::F32) {
                consts.insert(i, t.to_f32()?);
            }
        }
        let &[input] = model.inputs.as_slice() else {
            return Err(unsupported("expected one input".into()));
        };
        let in_shape = &model.tensors[input].shape;
        let &[1, h, w, c] = in_shape.as_slice() else {
            return Err(unsupported(format!("input shape {in_shape:?}")));
        };
        let shape_of = |i: usize| model.tensors[i].shape.clone();
        let weight = |consts: &HashMap<usize, Vec<f32>>, i: i32| -> Result<Vec<f32>, GraphError> {
            usize::try_from(i)
                .ok()
                .and_then(|i| consts.get(&i).cloned())
                .ok_or_else(|| unsupported(format!("tensor {i} is not a constant")))
        };
        let mut nodes = Vec::new();
        for op in &model.operators {
            let x = op.inputs.first().copied().unwrap_or(-1);
            let out = *op
                .outputs
                .first()
                .ok_or_else(|| unsupported("operator without output".into()))?;
            let xi = usize::try_from(x).map_err(|_| unsupported("missing input".into()))?;
            let step = match &op.kind {
                OpKind::Dequantize => {
                    let t = &model.tensors[xi];
                    if t.data.is_empty() {
                        return Err(unsupported("dequantize of an activation".into()));
                    }
                    consts.insert(out, t.to_f32()?);
                    continue;
                }
                OpKind::Conv2d {
                    same,
                    stride,
                    dilation,
                    act,
                }
                | OpKind::DepthwiseConv2d {
                    same,
                    stride,
                    dilation,
                    act,
                    ..
                } => {
                    let depthwise = matches!(op.kind, OpKind::DepthwiseConv2d { .. });
                    let wi = op.inputs[1];
                    let ws = shape_of(wi as usize);
                    let &[o, kh, kw, i] = ws.as_slice() else {
                        return Err(unsupported(format!("filter shape {ws:?}")));
                    };
                    let xs = shape_of(xi);
                    let (wt, groups, out_c) = if depthwise {
                        // [1, kh, kw, C·m] → [C·m, 1, kh, kw]
                        let t = Tensor::<B, 4>::from_data(
                            TensorData::new(weight(&consts, wi)?, [o, kh, kw, i]),
                            device,
                        )
                        .permute([3, 0, 1, 2]);
                        (t, xs[3], i)
                    } else {
                        let t = Tensor::<B, 4>::from_data(
                            TensorData::new(weight(&consts, wi)?, [o, kh, kw, i]),
                            device,
                        )
                        .permute([0, 3, 1, 2]);
                        (t, 1, o)
                    };
                    let bias = match op.inputs.get(2) {
                        Some(&b) if b >= 0 => {
                            let v = weight(&consts, b)?;
                            if v.len() != out_c {
                                return Err(unsupported("bias size".into()));
                            }
                            Some(Tensor::<B, 1>::from_data(
                                TensorData::new(v, [out_c]),
                                device,
                            ))
                        }
                        _ => None,
                    };
                    let (pt, pb, pl, pr) = if *same {
                        let (t, b) = same_padding(xs[1], kh, stride[0], dilation[0]);
                        let (l, r) = same_padding(xs[2], kw, stride[1], dilation[1]);
                        (t, b, l, r)
                    } else {
                        (0, 0, 0, 0)
                    };
                    Step::Conv {
                        weight: wt,
                        bias,
                        options: PaddedConvOptions::asymmetric(
                            *stride,
                            [pt, pl],
                            [pb, pr],
                            *dilation,
                            groups,
                        ),
                        act: *act,
                    }
                }
                OpKind::MaxPool2d {
                    same,
                    stride,
                    filter,
                } => {
                    let padding = if *same {
                        let xs = shape_of(xi);
                        let (t, b) = same_padding(xs[1], filter[0], stride[0], 1);
                        let (l, r) = same_padding(xs[2], filter[1], stride[1], 1);
                        if t != b || l != r {
                            return Err(unsupported("asymmetric pool padding".into()));
                        }
                        [t, l]
                    } else {
                        [0, 0]
                    };
                    Step::MaxPool {
                        filter: *filter,
                        stride: *stride,
                        padding,
                    }
                }
                OpKind::Add { act } => Step::Add(*act),
                OpKind::Relu => Step::Relu,
                OpKind::Prelu => {
                    let a = weight(&consts, op.inputs[1])?;
                    let ch = *shape_of(out)
                        .last()
                        .ok_or_else(|| unsupported("prelu shape".into()))?;
                    if a.len() != ch {
                        return Err(unsupported("prelu alpha is not per channel".into()));
                    }
                    Step::Prelu(Tensor::from_data(TensorData::new(a, [1, ch, 1, 1]), device))
                }
                OpKind::Pad => {
                    let p = model.tensors[op.inputs[1] as usize].to_i32()?;
                    if p.len() != 8 || p.iter().any(|&v| v < 0) {
                        return Err(unsupported("pad paddings".into()));
                    }
                    let mut pads = [(0, 0); 4];
                    for (axis, pair) in p.chunks(2).enumerate() {
                        pads[NHWC_TO_NCHW[axis]] = (pair[0] as usize, pair[1] as usize);
                    }
                    Step::Pad(pads)
                }
                OpKind::Reshape => {
                    let s = shape_of(out);
                    if s.is_empty() || s.len() > 3 {
                        return Err(unsupported(format!("reshape to {s:?}")));
                    }
                    Step::Reshape(s)
                }
                OpKind::Concat { axis, act } => {
                    if *act != Activation::None {
                        return Err(unsupported("fused activation on concat".into()));
                    }
                    Step::Concat(*axis)
                }
                OpKind::Unsupported(code) => {
                    return Err(unsupported(format!("builtin operator {code}")));
                }
            };
            let inputs: Vec<usize> = match step {
                Step::Add(_) => vec![xi, op.inputs[1] as usize],
                Step::Concat(_) => op.inputs.iter().map(|&i| i as usize).collect(),
                _ => vec![xi],
            };
            if inputs.iter().any(|i| consts.contains_key(i)) {
                return Err(unsupported("constant operand of an activation op".into()));
            }
            nodes.push(Node {
                step,
                inputs,
                output: out,
            });
        }
        let n_tensors = model.tensors.len();
        let mut last_use = vec![usize::MAX; n_tensors];
        for (k, n) in nodes.iter().enumerate() {
            for &i in &n.inputs {
                last_use[i] = k;
            }
        }
        Ok(Graph {
            nodes,
            input,
            input_shape: [h, w, c],
            outputs: model.outputs.clone(),
            last_use,
            n_tensors,
        })
    }

    /// Runs a batch: `x` is NCHW `[n, c, h, w]`. Returns each graph output
    /// in TFLite's layout (NHWC for 4-D), flattened per batch item.
    pub fn run(&self, x: Tensor<B, 4>) -> Result<Vec<Tensor<B, 2>>, GraphError> {
        let mut vals: Vec<Option<Val<B>>> = vec![None; self.n_tensors];
        vals[self.input] = Some(Val::Image(x));
        let missing = || GraphError::Unsupported("a value is read before it is made".into());
        for (k, node) in self.nodes.iter().enumerate() {
            let take = |vals: &mut Vec<Option<Val<B>>>, i: usize| -> Result<Val<B>, GraphError> {
                let v = if self.last_use[i] == k && !self.outputs.contains(&i) {
                    vals[i].take()
                } else {
                    vals[i].clone()
                };
                v.ok_or_else(missing)
            };
            let image = |v: Val<B>| match v {
                Val::Image(t) => Ok(t),
                Val::Flat(..) => Err(GraphError::Unsupported("4-D op on a reshaped value".into())),
            };
            let out = match &node.step {
                Step::Conv {
                    weight,
                    bias,
                    options,
                    act,
                } => {
                    let x = image(take(&mut vals, node.inputs[0])?)?;
                    let y = conv2d(x, weight.clone(), bias.clone(), options.clone());
                    Val::Image(activate(y, *act))
                }
                Step::MaxPool {
                    filter,
                    stride,
                    padding,
                } => {
                    let x = image(take(&mut vals, node.inputs[0])?)?;
                    Val::Image(max_pool2d(x, *filter, *stride, *padding, [1, 1], false))
                }
                Step::Add(act) => {
                    let a = image(take(&mut vals, node.inputs[0])?)?;
                    let b = image(take(&mut vals, node.inputs[1])?)?;
                    Val::Image(activate(a + b, *act))
                }
                Step::Relu => Val::Image(relu(image(take(&mut vals, node.inputs[0])?)?)),
                Step::Prelu(alpha) => {
                    let x = image(take(&mut vals, node.inputs[0])?)?;
                    let neg = x.clone().clamp_max(0.0) * alpha.clone();
                    Val::Image(x.clamp_min(0.0) + neg)
                }
                Step::Pad(pads) => {
                    let mut x = image(take(&mut vals, node.inputs[0])?)?;
                    for (dim, &(before, after)) in pads.iter().enumerate() {
                        x = pad_zeros(x, dim, before, after);
                    }
                    Val::Image(x)
                }
                Step::Reshape(shape) => {
                    let flat = match take(&mut vals, node.inputs[0])? {
                        Val::Image(t) => {
                            let n = t.dims()[0] as i32;
                            t.permute([0, 2, 3, 1]).reshape([n, -1])
                        }
                        Val::Flat(t, rank) => {
                            let n = t.dims()[3 - rank] as i32;
                            t.reshape([n, -1])
                        }
                    };
                    // The file's shape, with the run's batch size.
                    let mut s3 = [1usize; 3];
                    s3[3 - shape.len()..].copy_from_slice(shape);
                    s3[3 - shape.len()] = flat.dims()[0];
                    Val::Flat(flat.reshape(s3), shape.len())
                }
                Step::Concat(axis) => {
                    let parts = node
                        .inputs
                        .iter()
                        .map(|&i| take(&mut vals, i))
                        .collect::<Result<Vec<_>, _>>()?;
                    match &parts[0] {
                        Val::Image(_) => {
                            let dim = NHWC_TO_NCHW[axis.rem_euclid(4) as usize];
                            let ts = parts
                                .into_iter()
                                .map(image)
                                .collect::<Result<Vec<_>, _>>()?;
                            Val::Image(Tensor::cat(ts, dim))
                        }
                        Val::Flat(_, rank) => {
                            let rank = *rank;
                            let dim = axis.rem_euclid(rank as i32) as usize + (3 - rank);
                            let ts = parts
                                .into_iter()
                                .map(|v| match v {
                                    Val::Flat(t, _) => Ok(t),
                                    Val::Image(_) => {
                                        Err(GraphError::Unsupported("mixed concat".into()))
                                    }
                                })
                                .collect::<Result<Vec<_>, _>>()?;
                            Val::Flat(Tensor::cat(ts, dim), rank)
                        }
                    }
                }
            };
            vals[node.output] = Some(out);
        }
        self.outputs
            .iter()
            .map(|&i| {
                let v = vals[i].take().ok_or_else(missing)?;
                Ok(match v {
                    Val::Image(t) => {
                        let n = t.dims()[0];
                        t.permute([0, 2, 3, 1]).reshape([n as i32, -1])
                    }
                    Val::Flat(t, rank) => {
                        let n = t.dims()[3 - rank];
                        t.reshape([n as i32, -1])
                    }
                })
            })
            .collect()
    }
}

fn activate<B: Backend>(x: Tensor<B, 4>, act: Activation) -> Tensor<B, 4> {
    match act {
        Activation::None => x,
        Activation::Relu => relu(x),
        Activation::Relu6 => x.clamp(0.0, 6.0),
    }
}

fn pad_zeros<B: Backend>(x: Tensor<B, 4>, dim: usize, before: usize, after: usize) -> Tensor<B, 4> {
    if before == 0 && after == 0 {
        return x;
    }
    let device = x.device();
    let mut parts = Vec::with_capacity(3);
    let mut shape = x.dims();
    if before > 0 {
        shape[dim] = before;
        parts.push(Tensor::zeros(shape, &device));
    }
    parts.push(x);
    if after > 0 {
        shape[dim] = after;
        parts.push(Tensor::zeros(shape, &device));
    }
    Tensor::cat(parts, dim)
}

#[cfg(test)]
mod tests {
    use super::same_padding;

    #[test]
    fn same_padding_matches_tensorflow() {
        // stride 2 on an even size pads only after; stride 1 symmetric.
        assert_eq!(same_padding(128, 3, 2, 1), (0, 1));
        assert_eq!(same_padding(128, 5, 1, 1), (2, 2));
        assert_eq!(same_padding(7, 3, 2, 1), (1, 1));
        assert_eq!(same_padding(64, 2, 2, 1), (0, 0));
    }
}
