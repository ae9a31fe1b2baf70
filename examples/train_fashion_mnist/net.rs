//! larq's tutorial network for (Fashion-)MNIST, on candle tensors:
//!
//! ```text
//! conv 3×3, 32 (input as it is, kernel quantized)  max-pool 2×2  batch norm
//! conv 3×3, 64 (input and kernel quantized)        max-pool 2×2  batch norm
//! conv 3×3, 64 (input and kernel quantized)                      batch norm
//! flatten, dense 64 (input and kernel quantized)                 batch norm
//! dense 10 (input and kernel quantized)                          batch norm, softmax
//! ```
//!
//! No biases, batch norm without a learned scale (`scale=False`, as larq's
//! tutorial; the logits' may have one), "valid" convolutions. Without
//! quantizers it is the same network in full precision.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, ModuleT, Result, Shape, Tensor, Var,
    bail,
};
use lowbit::candle::QuantizeExt;
use lowbit::{Kind, Quantizer};
use rand::Rng;
use rand::rngs::StdRng;

use crate::conv::conv2d;

/// The quantizers of a binarized network: larq's `kernel_quantizer` and
/// `input_quantizer`.
#[derive(Debug, Clone, Copy)]
pub struct Quantizers {
    pub kernels: Quantizer,
    pub inputs: Quantizer,
}

/// How batch norm runs in a forward pass.
#[derive(Debug, Clone, Copy)]
pub enum Norm {
    /// On the batch's own statistics, which then enter the running ones
    /// with this weight (Keras's `1 − momentum`).
    Train(f64),
    /// On the running statistics.
    Eval,
}

/// Keras's `BatchNormalization` defaults: momentum 0.99, epsilon 1e-3.
pub const MOMENTUM: f64 = 0.99;
const EPSILON: f64 = 1e-3;

/// Batch norm over every axis but axis 1, the channels: candle-nn's, with
/// its parameters and running statistics held here, so that a pass can
/// weigh its batch as it needs (`Norm::Train`) and a copy can share the
/// learned parameters but not the statistics ([`Net::recalibrated`]).
/// Without a learned scale (larq's `scale=False`) the scale is a constant 1.
/// candle-nn keeps the unbiased batch variance in the running one, as Keras
/// does for convolutions; on the dense layers Keras keeps the biased one
/// (batch 64: 1.6% smaller).
struct BatchNorm {
    beta: Var,
    gamma: Option<Var>,
    mean: Var,
    var: Var,
}

impl BatchNorm {
    fn new(channels: usize, scale: bool, device: &Device) -> Result<Self> {
        let beta = Var::zeros(channels, DType::F32, device)?;
        let gamma = match scale {
            true => Some(Var::ones(channels, DType::F32, device)?),
            false => None,
        };
        BatchNorm::with_fresh_statistics(beta, gamma)
    }

    /// The learned offset `beta` and scale `gamma`, with fresh running
    /// statistics (mean 0, variance 1, as Keras starts them).
    fn with_fresh_statistics(beta: Var, gamma: Option<Var>) -> Result<Self> {
        let (channels, device) = (beta.elem_count(), beta.device().clone());
        Ok(BatchNorm {
            beta,
            gamma,
            mean: Var::zeros(channels, DType::F32, &device)?,
            var: Var::ones(channels, DType::F32, &device)?,
        })
    }

    /// The same learned offsets and scales, with fresh running statistics.
    fn sharing_parameters(&self) -> Result<Self> {
        BatchNorm::with_fresh_statistics(self.beta.clone(), self.gamma.clone())
    }

    /// candle-nn's layer over these parameters and statistics, its running
    /// statistics taking a batch's with weight `momentum` in training mode.
    fn layer(&self, momentum: f64) -> Result<candle_nn::BatchNorm> {
        let scale = match &self.gamma {
            Some(gamma) => gamma.as_tensor().clone(),
            None => self.beta.ones_like()?,
        };
        candle_nn::BatchNorm::new_with_momentum(
            self.beta.elem_count(),
            self.mean.as_tensor().clone(),
            self.var.as_tensor().clone(),
            scale,
            self.beta.as_tensor().clone(),
            EPSILON,
            momentum,
        )
    }

    fn forward(&self, x: &Tensor, norm: Norm) -> Result<Tensor> {
        match norm {
            Norm::Train(momentum) => self.layer(momentum)?.forward_train(x),
            Norm::Eval => self.layer(0.0)?.forward_t(x, false),
        }
    }
}

/// `q(x)`, with `x`'s `channel` axis moved last for the quantizers that
/// scale per channel: larq's layouts are channels last (NHWC activations,
/// HWIO and (in, out) kernels), candle's are not. Moving it by one transpose
/// keeps each channel's set of elements, which is all a per-channel
/// reduction reads.
fn quantize(x: &Tensor, q: &Quantizer, channel: usize) -> Result<Tensor> {
    let last = x.rank() - 1;
    match q.kind() {
        Kind::MagnitudeAwareSign { .. } if channel != last => x
            .transpose(channel, last)?
            .quantize(q)?
            .transpose(channel, last)?
            .contiguous(),
        _ => x.quantize(q),
    }
}

/// Max-pooling over 2×2 windows with stride 2, an odd last row or column
/// dropped (Keras's "valid"). The gradient goes to one element per window,
/// the first maximum in row-major order, as TensorFlow's does. candle's
/// `max_pool2d` is not used: its gradient scales the tied elements of a
/// window wrongly, and misplaces the windows of an odd-sized input, and a
/// binarized network's activations tie often.
///
/// On the CPU it is one op each way ([`MaxPool`]); elsewhere it is built
/// from candle's ops ([`max_pool_composite`]), which cost as much as a
/// convolution on the CPU.
pub fn max_pool(x: &Tensor) -> Result<Tensor> {
    match (x.device(), x.dtype()) {
        (Device::Cpu, DType::F32) => x.contiguous()?.apply_op1(MaxPool),
        _ => max_pool_composite(x),
    }
}

/// [`max_pool`] from candle's ops: each window's elements gathered last,
/// and the first maximum's picked out by its index.
pub fn max_pool_composite(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (h, w) = (h / 2, w / 2);
    let windows = x
        .narrow(2, 0, 2 * h)?
        .narrow(3, 0, 2 * w)?
        .reshape((n, c, h, 2, w, 2))?
        .permute((0, 1, 2, 4, 3, 5))?
        .contiguous()?
        .reshape((n, c, h, w, 4))?;
    // argmax keeps the first of equal maxima.
    let first = windows.detach().argmax_keepdim(4)?;
    windows.gather(&first, 4)?.squeeze(4)
}

/// The first maximum of window `j` of rows `top` and `bottom`: its place
/// in the window (0 to 3, row-major) and its value.
fn first_max(top: &[f32], bottom: &[f32], j: usize) -> (usize, f32) {
    let window = [top[2 * j], top[2 * j + 1], bottom[2 * j], bottom[2 * j + 1]];
    (1..4).fold((0, window[0]), |(k, max), i| match window[i] > max {
        true => (i, window[i]),
        false => (k, max),
    })
}

/// The `i`-th pair of rows of `plane`, whose rows hold `w` each.
fn row_pair(plane: &[f32], w: usize, i: usize) -> (&[f32], &[f32]) {
    let top = &plane[2 * i * w..];
    (&top[..w], &top[w..2 * w])
}

/// [`max_pool`] on contiguous f32 CPU tensors.
struct MaxPool;

/// Its gradient, an op on `(x, dy)`.
struct MaxPoolGrad;

/// `x`'s planes and the pooled sizes, from a contiguous f32 CPU tensor.
fn planes<'a>(s: &'a CpuStorage, l: &Layout) -> Result<(&'a [f32], usize, usize, usize, usize)> {
    let (CpuStorage::F32(x), Some((start, end))) = (s, l.contiguous_offsets()) else {
        bail!("the CPU max-pool takes contiguous f32 tensors")
    };
    let (_, _, h, w) = l.shape().dims4()?;
    Ok((&x[start..end], h, w, h / 2, w / 2))
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "max-pool-2x2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, h, w, ho, wo) = planes(s, l)?;
        let mut y = Vec::with_capacity(x.len() / (h * w).max(1) * ho * wo);
        for plane in x.chunks_exact(h * w) {
            for i in 0..ho {
                let (top, bottom) = row_pair(plane, w, i);
                y.extend((0..wo).map(|j| first_max(top, bottom, j).1));
            }
        }
        let (n, c, _, _) = l.shape().dims4()?;
        Ok((CpuStorage::F32(y), Shape::from((n, c, ho, wo))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&dy.contiguous()?, &MaxPoolGrad)?))
    }
}

impl CustomOp2 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "max-pool-2x2-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, h, w, ho, wo) = planes(xs, xl)?;
        let (CpuStorage::F32(dy), Some((start, end))) = (dys, dyl.contiguous_offsets()) else {
            bail!("the CPU max-pool's gradient takes a contiguous f32 dy")
        };
        let mut dx = vec![0f32; x.len()];
        let planes = x.chunks_exact(h * w).zip(dx.chunks_exact_mut(h * w));
        for ((plane, grad), dy) in planes.zip(dy[start..end].chunks_exact(ho * wo)) {
            for i in 0..ho {
                let (top, bottom) = row_pair(plane, w, i);
                for (j, &dy) in dy[i * wo..(i + 1) * wo].iter().enumerate() {
                    let (k, _) = first_max(top, bottom, j);
                    grad[(2 * i + k / 2) * w + 2 * j + k % 2] = dy;
                }
            }
        }
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

/// The kernels' shapes: three convolutions `(out, in, 3, 3)` and two dense
/// layers `(out, in)`, candle's layouts.
const KERNELS: [&[usize]; 5] = [
    &[32, 1, 3, 3],
    &[64, 32, 3, 3],
    &[64, 64, 3, 3],
    &[64, 3 * 3 * 64],
    &[10, 64],
];

/// The network: its latent kernels, its batch norms, and its quantizers
/// (none: full precision).
pub struct Net {
    kernels: Vec<Var>,
    norms: Vec<BatchNorm>,
    quantizers: Option<Quantizers>,
}

impl Net {
    /// Kernels drawn from Keras's default initializer, Glorot uniform, with
    /// `rng`; a learned scale on the logits' batch norm if `scaled_logits`.
    pub fn new(
        quantizers: Option<Quantizers>,
        scaled_logits: bool,
        rng: &mut StdRng,
        device: &Device,
    ) -> Result<Net> {
        let kernels = KERNELS
            .iter()
            .map(|&shape| {
                let field: usize = shape[2..].iter().product();
                let (fan_out, fan_in) = (shape[0] * field, shape[1] * field);
                let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
                let count = shape.iter().product();
                let values: Vec<f32> = (0..count)
                    .map(|_| rng.random_range(-limit..limit) as f32)
                    .collect();
                Var::from_tensor(&Tensor::from_vec(values, shape, device)?)
            })
            .collect::<Result<Vec<_>>>()?;
        let norms = KERNELS
            .iter()
            .enumerate()
            .map(|(i, shape)| BatchNorm::new(shape[0], scaled_logits && i == 4, device))
            .collect::<Result<Vec<_>>>()?;
        Ok(Net {
            kernels,
            norms,
            quantizers,
        })
    }

    /// What the optimiser trains: the kernels, and batch norm's offsets and
    /// scales.
    pub fn trained(&self) -> Vec<Var> {
        let norms = self
            .norms
            .iter()
            .flat_map(|n| [Some(&n.beta), n.gamma.as_ref()]);
        self.kernels
            .iter()
            .chain(norms.flatten())
            .cloned()
            .collect()
    }

    /// larq's `weight_clip`: the latent kernels of a binarized network are
    /// clipped to [−1, 1] after each step, where the sign's gradient lives.
    pub fn clip_kernels(&self) -> Result<()> {
        if self.quantizers.is_some() {
            for k in &self.kernels {
                k.set(&k.as_tensor().clamp(-1f32, 1f32)?)?;
            }
        }
        Ok(())
    }

    /// The logits of images `x` (N, 1, 28, 28).
    pub fn forward(&self, x: &Tensor, norm: Norm) -> Result<Tensor> {
        let q = self.quantizers.as_ref();
        let kernel = |i: usize| -> Result<Tensor> {
            let k = self.kernels[i].as_tensor();
            match q {
                Some(q) => quantize(k, &q.kernels, 0),
                None => Ok(k.clone()),
            }
        };
        let input = |x: &Tensor| -> Result<Tensor> {
            match q {
                Some(q) => quantize(x, &q.inputs, 1),
                None => Ok(x.clone()),
            }
        };
        let bn = |i: usize, x: &Tensor| self.norms[i].forward(x, norm);

        // The first layer's input, the image, is not quantized.
        let x = conv2d(x, &kernel(0)?)?;
        let x = bn(0, &max_pool(&x)?)?;
        let x = conv2d(&input(&x)?, &kernel(1)?)?;
        let x = bn(1, &max_pool(&x)?)?;
        let x = bn(2, &conv2d(&input(&x)?, &kernel(2)?)?)?;
        let x = x.flatten_from(1)?;
        let x = bn(3, &input(&x)?.matmul(&kernel(3)?.t()?)?)?;
        bn(4, &input(&x)?.matmul(&kernel(4)?.t()?)?)
    }

    /// A copy that shares the kernels and batch norm's learned parameters,
    /// with the running statistics recomputed at the current kernels: the
    /// mean over training-mode passes of `batches`. A binarized network's
    /// moving averages mix the statistics of the last hundred-odd steps,
    /// whose kernels differ by every sign that flipped, and a test on them
    /// swings by ±5 points from one check to the next.
    pub fn recalibrated<'a>(&self, batches: impl IntoIterator<Item = &'a Tensor>) -> Result<Net> {
        let copy = Net {
            kernels: self.kernels.clone(),
            norms: self
                .norms
                .iter()
                .map(BatchNorm::sharing_parameters)
                .collect::<Result<Vec<_>>>()?,
            quantizers: self.quantizers,
        };
        for (k, batch) in batches.into_iter().enumerate() {
            copy.forward(&batch.detach(), Norm::Train(1.0 / (k + 1) as f64))?;
        }
        Ok(copy)
    }
}
