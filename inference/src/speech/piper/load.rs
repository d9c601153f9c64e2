//! Builds the burn VITS from the initializers of a Piper `.onnx` file.
//!
//! Most parameters keep their PyTorch names (`enc_p.*`, `dp.*`, `dec.*`);
//! the flow's WaveNet weights were renamed by the exporter and are found
//! through the convolution nodes that use them (see [`OnnxWeights`]).

use burn::prelude::*;

use super::model::*;
use crate::nn::{ChannelNorm, ConvSpec, conv_transpose1d, conv1d, tensor};
use crate::onnx::{OnnxWeights, WeightError};

pub fn load_vits<B: Backend>(
    w: &OnnxWeights,
    cfg: &VitsConfig,
    device: &B::Device,
) -> Result<Vits<B>, WeightError> {
    Ok(Vits {
        enc: text_encoder(w, cfg, device)?,
        dp: duration_predictor(w, cfg, device)?,
        flow: flow(w, cfg, device)?,
        dec: generator(w, cfg, device)?,
    })
}

fn text_encoder<B: Backend>(
    w: &OnnxWeights,
    cfg: &VitsConfig,
    device: &B::Device,
) -> Result<TextEncoder<B>, WeightError> {
    let h = cfg.hidden;
    let kc = h / cfg.n_heads;
    // Piper exports the symbol embedding under the name `sid`.
    let emb_name = if w.contains("enc_p.emb.weight") {
        "enc_p.emb.weight"
    } else {
        "sid"
    };
    let emb = tensor(w, emb_name, [cfg.n_symbols, h], device)?;
    let (mut attn, mut norm_1, mut ffn, mut norm_2) = (vec![], vec![], vec![], vec![]);
    for i in 0..cfg.n_layers {
        let p = format!("enc_p.encoder.attn_layers.{i}");
        let c = |n: &str| conv1d(w, &format!("{p}.{n}"), ConvSpec::new(h, h, 1), device);
        attn.push(RelAttention {
            conv_q: c("conv_q")?,
            conv_k: c("conv_k")?,
            conv_v: c("conv_v")?,
            conv_o: c("conv_o")?,
            emb_rel_k: tensor(
                w,
                &format!("{p}.emb_rel_k"),
                [1, 2 * cfg.window + 1, kc],
                device,
            )?,
            emb_rel_v: tensor(
                w,
                &format!("{p}.emb_rel_v"),
                [1, 2 * cfg.window + 1, kc],
                device,
            )?,
            n_heads: cfg.n_heads,
            window: cfg.window,
        });
        norm_1.push(ChannelNorm::load(
            w,
            &format!("enc_p.encoder.norm_layers_1.{i}"),
            h,
            device,
        )?);
        let f = format!("enc_p.encoder.ffn_layers.{i}");
        ffn.push(Ffn {
            conv_1: conv1d(
                w,
                &format!("{f}.conv_1"),
                ConvSpec::new(h, cfg.filter, 3),
                device,
            )?,
            conv_2: conv1d(
                w,
                &format!("{f}.conv_2"),
                ConvSpec::new(cfg.filter, h, 3),
                device,
            )?,
        });
        norm_2.push(ChannelNorm::load(
            w,
            &format!("enc_p.encoder.norm_layers_2.{i}"),
            h,
            device,
        )?);
    }
    Ok(TextEncoder {
        emb,
        attn,
        norm_1,
        ffn,
        norm_2,
        proj: conv1d(w, "enc_p.proj", ConvSpec::new(h, 2 * cfg.inter, 1), device)?,
    })
}

fn dds_conv<B: Backend>(
    w: &OnnxWeights,
    prefix: &str,
    ch: usize,
    device: &B::Device,
) -> Result<DdsConv<B>, WeightError> {
    let (mut sep, mut one, mut norm_1, mut norm_2) = (vec![], vec![], vec![], vec![]);
    for i in 0..3 {
        let dil = 3usize.pow(i as u32);
        sep.push(conv1d(
            w,
            &format!("{prefix}.convs_sep.{i}"),
            ConvSpec::new(ch, ch, 3).dilation(dil).groups(ch),
            device,
        )?);
        one.push(conv1d(
            w,
            &format!("{prefix}.convs_1x1.{i}"),
            ConvSpec::new(ch, ch, 1),
            device,
        )?);
        norm_1.push(ChannelNorm::load(
            w,
            &format!("{prefix}.norms_1.{i}"),
            ch,
            device,
        )?);
        norm_2.push(ChannelNorm::load(
            w,
            &format!("{prefix}.norms_2.{i}"),
            ch,
            device,
        )?);
    }
    Ok(DdsConv {
        sep,
        one,
        norm_1,
        norm_2,
    })
}

fn duration_predictor<B: Backend>(
    w: &OnnxWeights,
    cfg: &VitsConfig,
    device: &B::Device,
) -> Result<DurationPredictor<B>, WeightError> {
    let f = cfg.hidden;
    let k = 3 * cfg.spline_bins - 1;
    let mut flows = Vec::new();
    // Reverse inference uses flows 7, 5, 3 (flow 1 is dropped by VITS).
    for i in [7, 5, 3] {
        let p = format!("dp.flows.{i}");
        flows.push(ConvFlow {
            pre: conv1d(w, &format!("{p}.pre"), ConvSpec::new(1, f, 1), device)?,
            convs: dds_conv(w, &format!("{p}.convs"), f, device)?,
            proj: conv1d(w, &format!("{p}.proj"), ConvSpec::new(f, k, 1), device)?,
        });
    }
    Ok(DurationPredictor {
        pre: conv1d(w, "dp.pre", ConvSpec::new(cfg.hidden, f, 1), device)?,
        convs: dds_conv(w, "dp.convs", f, device)?,
        proj: conv1d(w, "dp.proj", ConvSpec::new(f, f, 1), device)?,
        flows,
        affine_m: tensor(w, "dp.flows.0.m", [2, 1], device)?,
        // exp(-logs), folded to a constant by the exporter.
        affine_inv_scale: tensor(w, "/dp/flows.0/Exp_output_0", [2, 1], device)?,
        filter: f,
        bins: cfg.spline_bins,
    })
}

fn flow<B: Backend>(
    w: &OnnxWeights,
    cfg: &VitsConfig,
    device: &B::Device,
) -> Result<Flow<B>, WeightError> {
    let c = cfg.inter;
    let half = c / 2;
    let mut layers = Vec::new();
    for i in [6, 4, 2, 0] {
        let p = format!("flow.flows.{i}");
        let (mut in_layers, mut res_skip) = (vec![], vec![]);
        for j in 0..4 {
            in_layers.push(conv1d(
                w,
                &format!("{p}.enc.in_layers.{j}"),
                ConvSpec::new(c, 2 * c, 5),
                device,
            )?);
            let out = if j < 3 { 2 * c } else { c };
            res_skip.push(conv1d(
                w,
                &format!("{p}.enc.res_skip_layers.{j}"),
                ConvSpec::new(c, out, 1),
                device,
            )?);
        }
        layers.push(Coupling {
            pre: conv1d(w, &format!("{p}.pre"), ConvSpec::new(half, c, 1), device)?,
            enc: WaveNet {
                in_layers,
                res_skip,
                hidden: c,
            },
            post: conv1d(w, &format!("{p}.post"), ConvSpec::new(c, half, 1), device)?,
        });
    }
    Ok(Flow { layers })
}

fn generator<B: Backend>(
    w: &OnnxWeights,
    cfg: &VitsConfig,
    device: &B::Device,
) -> Result<Generator<B>, WeightError> {
    let mut ch = cfg.upsample_initial;
    let conv_pre = conv1d(w, "dec.conv_pre", ConvSpec::new(cfg.inter, ch, 7), device)?;
    let (mut ups, mut resblocks) = (vec![], vec![]);
    let mut rb = 0;
    for (i, (&rate, &kernel)) in cfg
        .upsample_rates
        .iter()
        .zip(&cfg.upsample_kernels)
        .enumerate()
    {
        let out = ch / 2;
        ups.push(conv_transpose1d(
            w,
            &format!("dec.ups.{i}"),
            ch,
            out,
            kernel,
            rate,
            device,
        )?);
        ch = out;
        for (k, dils) in cfg.resblock_kernels.iter().zip(&cfg.resblock_dilations) {
            let mut convs = vec![];
            for (j, &d) in dils.iter().enumerate() {
                convs.push(conv1d(
                    w,
                    &format!("dec.resblocks.{rb}.convs.{j}"),
                    ConvSpec::new(ch, ch, *k).dilation(d),
                    device,
                )?);
            }
            resblocks.push(ResBlock { convs });
            rb += 1;
        }
    }
    let conv_post = conv1d(
        w,
        "dec.conv_post",
        ConvSpec::new(ch, 1, 7).no_bias(),
        device,
    )?;
    Ok(Generator {
        conv_pre,
        ups,
        resblocks,
        conv_post,
    })
}
