//! Layer helpers shared by the models: building burn layers from weights
//! read out of package files, and the few layers burn does not ship in the
//! form these networks use.

use burn::module::Param;
use burn::nn::PaddingConfig1d;
use burn::nn::conv::{Conv1d, ConvTranspose1d};
use burn::prelude::*;

use crate::onnx::{OnnxWeights, WeightError};

/// A float tensor of rank `D` from the weight `name`, checked against `dims`.
pub fn tensor<B: Backend, const D: usize>(
    w: &OnnxWeights,
    name: &str,
    dims: [usize; D],
    device: &B::Device,
) -> Result<Tensor<B, D>, WeightError> {
    let t = w.get(name, &dims)?;
    Ok(Tensor::from_data(
        TensorData::new(t.values.clone(), dims),
        device,
    ))
}

/// Geometry of a 1-D convolution: kernel, dilation, groups, padding per side.
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub dilation: usize,
    pub groups: usize,
    pub bias: bool,
}

impl ConvSpec {
    pub fn new(c_in: usize, c_out: usize, kernel: usize) -> Self {
        Self {
            c_in,
            c_out,
            kernel,
            dilation: 1,
            groups: 1,
            bias: true,
        }
    }
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = d;
        self
    }
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    pub fn no_bias(mut self) -> Self {
        self.bias = false;
        self
    }
}

/// A stride-1 convolution with "same" padding (`dilation * (kernel - 1) / 2`
/// on each side), weights `{prefix}.weight` / `{prefix}.bias`.
pub fn conv1d<B: Backend>(
    w: &OnnxWeights,
    prefix: &str,
    spec: ConvSpec,
    device: &B::Device,
) -> Result<Conv1d<B>, WeightError> {
    let weight = tensor(
        w,
        &format!("{prefix}.weight"),
        [spec.c_out, spec.c_in / spec.groups, spec.kernel],
        device,
    )?;
    let bias = if spec.bias {
        Some(Param::from_tensor(tensor(
            w,
            &format!("{prefix}.bias"),
            [spec.c_out],
            device,
        )?))
    } else {
        None
    };
    let pad = spec.dilation * (spec.kernel - 1) / 2;
    Ok(Conv1d {
        weight: Param::from_tensor(weight),
        bias,
        stride: 1,
        kernel_size: spec.kernel,
        dilation: spec.dilation,
        groups: spec.groups,
        padding: PaddingConfig1d::Explicit(pad, pad),
    })
}

/// A transposed convolution (upsampling by `stride`), padding
/// `(kernel - stride) / 2`, as HiFi-GAN uses.
pub fn conv_transpose1d<B: Backend>(
    w: &OnnxWeights,
    prefix: &str,
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    device: &B::Device,
) -> Result<ConvTranspose1d<B>, WeightError> {
    let weight = tensor(
        w,
        &format!("{prefix}.weight"),
        [c_in, c_out, kernel],
        device,
    )?;
    let bias = tensor(w, &format!("{prefix}.bias"), [c_out], device)?;
    Ok(ConvTranspose1d {
        weight: Param::from_tensor(weight),
        bias: Some(Param::from_tensor(bias)),
        stride,
        kernel_size: kernel,
        dilation: 1,
        groups: 1,
        padding: (kernel - stride) / 2,
        padding_out: 0,
        channels: [c_in, c_out],
    })
}

/// Layer normalisation over the channel axis of `[batch, channels, time]`
/// (VITS' `modules.LayerNorm`, eps 1e-5).
#[derive(Module, Debug)]
pub struct ChannelNorm<B: Backend> {
    gamma: Tensor<B, 3>,
    beta: Tensor<B, 3>,
}

impl<B: Backend> ChannelNorm<B> {
    pub fn load(
        w: &OnnxWeights,
        prefix: &str,
        channels: usize,
        device: &B::Device,
    ) -> Result<Self, WeightError> {
        let gamma = tensor::<B, 1>(w, &format!("{prefix}.gamma"), [channels], device)?;
        let beta = tensor::<B, 1>(w, &format!("{prefix}.beta"), [channels], device)?;
        Ok(Self {
            gamma: gamma.reshape([1, channels, 1]),
            beta: beta.reshape([1, channels, 1]),
        })
    }

    /// `x`: `[batch, channels, time]` → same shape.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let mean = x.clone().mean_dim(1);
        let centred = x - mean;
        let var = centred.clone().powi_scalar(2).mean_dim(1);
        centred / (var + 1e-5).sqrt() * self.gamma.clone() + self.beta.clone()
    }
}
