//! lowbit's quantizers as candle ops, with their gradients recorded for
//! candle's autograd (feature `candle`; `candle-cuda` adds candle's CUDA
//! tensors).
//!
//! ```
//! use candle_core::{Device, Var};
//! use lowbit::Quantizer;
//! use lowbit::candle::QuantizeExt;
//!
//! let q: Quantizer = "ste_sign(clip_value=1.0)".parse()?;
//! let x = Var::new(&[-1.5f32, -0.5, 0.0, 2.0], &Device::Cpu)?;
//! let y = x.quantize(&q)?;
//! assert_eq!(y.to_vec1::<f32>()?, [-1.0, -1.0, 1.0, 1.0]);
//!
//! // The straight-through estimator: dy passes where |x| ≤ 1.
//! let grads = (&y * 3.0)?.sum_all()?.backward()?;
//! let dx = grads.get(&x).expect("x is a variable").to_vec1::<f32>()?;
//! assert_eq!(dx, [0.0, 3.0, 3.0, 0.0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The forward is lowbit's forward and the gradient lowbit's backward, on
//! the tensor's own device: the CPU path for CPU tensors, lowbit's kernels
//! on the device's stream for CUDA tensors (no copy, no host
//! synchronization, the output allocated through candle). The shape is the
//! tensor's, so `magnitude_aware_sign` reads the last axis as the channels.
//! A non-contiguous input is made contiguous first (one copy, through
//! candle); a dtype other than `f32`, `f16` and `bf16` is an error.
//! lowbit's errors arrive as `candle_core::Error`s carrying lowbit's
//! message.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};

use crate::Quantizer;
use crate::element::Element;

#[cfg(feature = "candle-cuda")]
mod cuda;

/// `q` as a method of candle's tensors (and of `Var`s, through `Deref`).
pub trait QuantizeExt {
    /// `q(self)`, whose gradient is `q`'s estimator; see [`quantize`].
    fn quantize(&self, q: &Quantizer) -> candle_core::Result<Tensor>;

    /// `rsign(self − α)`; see [`quantize_with_thresholds`].
    fn quantize_with_thresholds(
        &self,
        alpha: &Tensor,
        q: &Quantizer,
    ) -> candle_core::Result<Tensor>;
}

impl QuantizeExt for Tensor {
    fn quantize(&self, q: &Quantizer) -> candle_core::Result<Tensor> {
        quantize(self, q)
    }

    fn quantize_with_thresholds(
        &self,
        alpha: &Tensor,
        q: &Quantizer,
    ) -> candle_core::Result<Tensor> {
        quantize_with_thresholds(self, alpha, q)
    }
}

/// `y = q(x)`, recorded so that `backward` gives `dx = dq/dx · dy`, lowbit's
/// [`Quantizer::backward`] (the reductions, a channel's scale say, held
/// constant as larq holds them).
///
/// A quantizer that takes thresholds (`rsign`) is an error here: call
/// [`quantize_with_thresholds`].
pub fn quantize(x: &Tensor, q: &Quantizer) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Op::new(q, Pass::Forward))
}

/// `y = sign(x − α_c)`, ReActNet's `rsign` ([`Quantizer::forward_with_thresholds`]),
/// `alpha` holding one threshold per channel (the last axis of `x`). Both
/// get their gradients: `dx` and `dα_c = −Σ dx` over the channel
/// ([`Quantizer::backward_with_thresholds`]).
///
/// ```
/// use candle_core::{Device, Tensor, Var};
/// use lowbit::Quantizer;
/// use lowbit::candle::quantize_with_thresholds;
///
/// let q: Quantizer = "rsign".parse()?;
/// let x = Var::new(&[[0.75f32, 2.0], [0.0, -1.0]], &Device::Cpu)?;
/// let alpha = Var::new(&[0.5f32, -1.0], &Device::Cpu)?;
/// let y = quantize_with_thresholds(&x, &alpha, &q)?;
/// assert_eq!(y.to_vec2::<f32>()?, [[1.0, 1.0], [-1.0, 1.0]]);
///
/// let grads = y.sum_all()?.backward()?;
/// let dalpha = grads.get(&alpha).expect("alpha is a variable");
/// assert_eq!(dalpha.to_vec1::<f32>()?, [-2.5, -2.0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn quantize_with_thresholds(
    x: &Tensor,
    alpha: &Tensor,
    q: &Quantizer,
) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op2(
        &alpha.contiguous()?,
        Op::new(q, Pass::ForwardWithThresholds),
    )
}

/// Which of lowbit's calls an op makes. Each is one custom op of candle's:
/// the forward ones record the backward ones as their gradients, and the
/// backward ones have none (no second derivatives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// `(x) → y`.
    Forward,
    /// `(x, dy) → dx`.
    Backward,
    /// `(x, α) → y`.
    ForwardWithThresholds,
    /// `(x, α, dy) → [dx, dα]`, the two gradients end to end in one flat
    /// tensor: candle's custom ops return one tensor.
    BackwardWithThresholds,
}

#[derive(Debug, Clone)]
struct Op {
    q: Quantizer,
    pass: Pass,
}

impl Op {
    fn new(q: &Quantizer, pass: Pass) -> Self {
        Op { q: *q, pass }
    }

    /// The op's lowbit call on host slices; `args` are its inputs in the
    /// order of [`Pass`], and `shape` is `x`'s.
    fn on_host<T: Element>(&self, args: &[&[T]], shape: &[usize]) -> candle_core::Result<Vec<T>> {
        let q = &self.q;
        let len = args.first().map_or(0, |x| x.len());
        let mut out = vec![T::default(); len];
        let done = match (self.pass, args) {
            (Pass::Forward, &[x]) => q.forward(x, shape, &mut out),
            (Pass::Backward, &[x, dy]) => q.backward(x, dy, shape, &mut out),
            (Pass::ForwardWithThresholds, &[x, alpha]) => {
                q.forward_with_thresholds(x, alpha, shape, &mut out)
            }
            (Pass::BackwardWithThresholds, &[x, alpha, dy]) => {
                out.resize(len + alpha.len(), T::default());
                let (dx, dalpha) = out.split_at_mut(len);
                q.backward_with_thresholds(x, alpha, dy, shape, dx, dalpha)
            }
            _ => return Err(self.error(format!("{} inputs", args.len()))),
        };
        done.map_err(|e| self.error(e))?;
        Ok(out)
    }

    /// The output's shape: `x`'s, or `[dx, dα]` flat.
    fn out_shape(&self, args: &[&Layout]) -> Shape {
        match (self.pass, args) {
            (Pass::BackwardWithThresholds, [x, alpha, ..]) => {
                Shape::from(x.shape().elem_count() + alpha.shape().elem_count())
            }
            (_, [x, ..]) => x.shape().clone(),
            (_, []) => Shape::from(()),
        }
    }

    /// The op on CPU storages: the dtype dispatched once, each input's
    /// elements found from its layout.
    fn cpu(&self, args: &[(&CpuStorage, &Layout)]) -> candle_core::Result<(CpuStorage, Shape)> {
        let dtype = same_dtype(self, args.iter().map(|(s, _)| s.dtype()))?;
        let layouts: Vec<&Layout> = args.iter().map(|(_, l)| *l).collect();
        let shape = self.out_shape(&layouts);
        let storage = match dtype {
            DType::F32 => self.cpu_typed::<f32>(args)?,
            DType::F16 => self.cpu_typed::<half::f16>(args)?,
            DType::BF16 => self.cpu_typed::<half::bf16>(args)?,
            other => return Err(self.error(format!("no {} kernels", other.as_str()))),
        };
        Ok((storage, shape))
    }

    fn cpu_typed<T: Element + candle_core::WithDType>(
        &self,
        args: &[(&CpuStorage, &Layout)],
    ) -> candle_core::Result<CpuStorage> {
        let mut slices = Vec::with_capacity(args.len());
        for (storage, layout) in args {
            let (start, end) = contiguous(self, layout)?;
            slices.push(&T::cpu_storage_as_slice(storage)?[start..end]);
        }
        let shape = args.first().map_or(&[][..], |(_, l)| l.dims());
        let out = self.on_host(&slices, shape)?;
        Ok(T::to_cpu_storage_owned(out))
    }

    /// lowbit's error, as candle's, naming the op.
    fn error(&self, e: impl std::fmt::Display) -> candle_core::Error {
        candle_core::Error::Msg(format!("lowbit {} ({}): {e}", self.q, self.name())).bt()
    }

    fn name(&self) -> &'static str {
        match self.pass {
            Pass::Forward => "lowbit-forward",
            Pass::Backward => "lowbit-backward",
            Pass::ForwardWithThresholds => "lowbit-forward-with-thresholds",
            Pass::BackwardWithThresholds => "lowbit-backward-with-thresholds",
        }
    }

    /// The op that computes this one's gradients; the backward ops have
    /// none (they are applied without recording one).
    fn gradient(&self) -> candle_core::Result<Op> {
        let pass = match self.pass {
            Pass::Forward => Pass::Backward,
            Pass::ForwardWithThresholds => Pass::BackwardWithThresholds,
            Pass::Backward | Pass::BackwardWithThresholds => {
                let op = self.name();
                return Err(candle_core::Error::BackwardNotSupported { op });
            }
        };
        Ok(Op::new(&self.q, pass))
    }
}

/// The dtype every input shares, one of lowbit's.
fn same_dtype(op: &Op, mut dtypes: impl Iterator<Item = DType>) -> candle_core::Result<DType> {
    let first = dtypes.next().unwrap_or(DType::F32);
    if let Some(other) = dtypes.find(|&d| d != first) {
        return Err(op.error(format!(
            "the inputs' dtypes differ: {} and {}",
            first.as_str(),
            other.as_str()
        )));
    }
    match first {
        DType::F32 | DType::F16 | DType::BF16 => Ok(first),
        other => Err(op.error(format!(
            "lowbit quantizes f32, f16 and bf16 tensors, not {}",
            other.as_str()
        ))),
    }
}

/// The element range a layout covers. The public functions make every
/// input contiguous, and candle's gradients are made contiguous before
/// the backward ops; a strided layout here is refused, never misread.
fn contiguous(op: &Op, layout: &Layout) -> candle_core::Result<(usize, usize)> {
    layout.contiguous_offsets().ok_or_else(|| {
        op.error(format!(
            "a strided tensor (shape {:?}, stride {:?}): make it contiguous first",
            layout.dims(),
            layout.stride()
        ))
    })
}

impl CustomOp1 for Op {
    fn name(&self) -> &'static str {
        Op::name(self)
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.cpu(&[(s, l)])
    }

    #[cfg(feature = "candle-cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        self.cuda(&[(s, l)])
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let dx = x.apply_op2_no_bwd(&dy.contiguous()?, &self.gradient()?)?;
        Ok(Some(dx))
    }
}

impl CustomOp2 for Op {
    fn name(&self) -> &'static str {
        Op::name(self)
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.cpu(&[(s1, l1), (s2, l2)])
    }

    #[cfg(feature = "candle-cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        self.cuda(&[(s1, l1), (s2, l2)])
    }

    fn bwd(
        &self,
        x: &Tensor,
        alpha: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let both = x.apply_op3_no_bwd(alpha, &dy.contiguous()?, &self.gradient()?)?;
        let len = x.elem_count();
        let dx = both.narrow(0, 0, len)?.reshape(x.shape())?;
        let dalpha = both
            .narrow(0, len, alpha.elem_count())?
            .reshape(alpha.shape())?;
        Ok((Some(dx), Some(dalpha)))
    }
}

impl CustomOp3 for Op {
    fn name(&self) -> &'static str {
        Op::name(self)
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.cpu(&[(s1, l1), (s2, l2), (s3, l3)])
    }

    #[cfg(feature = "candle-cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        self.cuda(&[(s1, l1), (s2, l2), (s3, l3)])
    }
}
