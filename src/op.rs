//! What a quantizer computes, resolved once for the tensor's type.
//!
//! A [`Quantizer`] and a [`DType`] resolve here, and only here, into an
//! [`Op`]: the elementwise functor with its parameters already rounded to the
//! tensor's type, the reduction that must run before it, and the window its
//! gradient passes through (what a 1-bit mask saves). The CPU maps the
//! functor over slices (`cpu::forward`, `cpu::backward`); the CUDA path
//! plans a launch of the functor's kernel family (`cuda::plan`), whose C
//! functor in `kernels/functors.cuh` is the same formula.
//!
//! Adding a quantizer: its scalar definition in [`crate::scalar`], its
//! `Kind` in `quantizer.rs`, a functor below and its arm in [`Op::new`], its
//! line in `kernels/kernels.def`, its C functor in `kernels/functors.cuh`
//! and its family in `cuda::plan::kernel_family` (README's "Adding a
//! quantizer" lists the tests).

use crate::element::DType;
use crate::error::Error;
use crate::quantizer::{DorefaMode, Kind, Quantizer, WeightScale};
use crate::scalar;

/// Forward (`y = q(x)`) or backward (`dx = dq/dx · dy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Forward,
    Backward,
}

/// Which value of the reduction an element reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Index {
    /// None: the functor ignores `s`.
    None,
    /// The one value of a whole-tensor reduction (or a constant).
    Scalar,
    /// Its channel's, `i % channels` (the last axis).
    Channel,
    /// Its row's, `i / inner` (the first axis).
    Row,
}

/// The reduction a call runs over `x` before its elementwise pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Reduction {
    None,
    /// No pass over `x`: the value is known (ste_tern's fixed threshold).
    Constant(f32),
    /// TWN's `0.7·mean |x|` of the whole tensor, rounded to the type.
    TwnThreshold,
    /// DoReFa's `max |tanh x|`.
    MaxAbsTanh,
    /// Bi-Real's per-channel mean `|x|`, rounded to the type.
    ChannelMeanAbs,
    /// XNOR-Net's per-row (first-axis) mean `|x|`.
    RowMeanAbs,
}

/// Where the gradient passes, for the quantizers whose gradient is `dy`
/// (or `s·dy`) inside a window and `+0` outside: one bit per element is all
/// their backward pass needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Window {
    /// Everywhere (noop, the identity estimators).
    Everywhere,
    /// `|x| ≤ clip` ([`scalar::ste_passes`]).
    Ste(Option<f32>),
    /// `0 ≤ x ≤ clip` ([`scalar::ste_unipolar_passes`]).
    Unipolar(Option<f32>),
    /// `0 ≤ x ≤ 1` ([`scalar::dorefa_activations_passes`]).
    UnitInterval,
}

/// One element of a quantizer: `fwd(x, s)` and `bwd(x, dy, s)`, `s` being
/// the element's value of the reduction ([`Index`]), ignored by those that
/// reduce nothing. Every implementation is a call of [`crate::scalar`].
pub(crate) trait Elementwise: Copy + Send + Sync {
    const INDEX: Index;
    fn fwd(self, x: f32, s: f32) -> f32;
    fn bwd(self, x: f32, dy: f32, s: f32) -> f32;

    /// Whether `bwd` multiplies `dy` by the reduced scale rather than
    /// passing it or a zero: the per-channel and per-row scales. Only how
    /// the CPU widens a bf16 `dy` follows from it (the bits do not).
    const SCALES_DY: bool = matches!(Self::INDEX, Index::Channel | Index::Row);

    /// Whether `bwd` is worth splitting as `bwd_of(of_x(x), dy, s)`: the
    /// gradients that evaluate an `exp` or a `tanh` of `x`, which the CPU
    /// then looks up by bit pattern in half precision.
    const TABULATED: bool = false;
    /// What `bwd` computes from `x` alone.
    #[inline(always)]
    fn of_x(self, x: f32) -> [f32; 2] {
        [x, 0.0]
    }
    /// `bwd` from [`Elementwise::of_x`]: the same bits as `bwd(x, dy, s)`.
    #[inline(always)]
    fn bwd_of(self, of_x: [f32; 2], dy: f32, s: f32) -> f32 {
        self.bwd(of_x[0], dy, s)
    }
}

/// Declares a functor: its fields, the index it reads, forward and
/// backward, and optionally the backward split in two (`of_x`, `bwd_of`).
macro_rules! functor {
    ($name:ident { $($field:ident: $ty:ty),* }, $index:ident,
     fwd($q:ident, $x:ident, $s:ident) $fwd:block,
     bwd($qb:ident, $xb:ident, $dy:ident, $sb:ident) $bwd:block
     $(, of_x($qx:ident, $xx:ident) $of_x:block,
     bwd_of($qo:ident, $t:ident, $dyo:ident, $so:ident) $bwd_of:block)?) => {
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub(crate) struct $name { $(pub(crate) $field: $ty),* }

        impl Elementwise for $name {
            const INDEX: Index = Index::$index;
            #[inline(always)]
            #[allow(unused_variables)]
            fn fwd(self, $x: f32, $s: f32) -> f32 {
                let $q = self;
                $fwd
            }
            #[inline(always)]
            #[allow(unused_variables)]
            fn bwd(self, $xb: f32, $dy: f32, $sb: f32) -> f32 {
                let $qb = self;
                $bwd
            }
            $(
                const TABULATED: bool = true;
                #[inline(always)]
                #[allow(unused_variables)]
                fn of_x(self, $xx: f32) -> [f32; 2] {
                    let $qx = self;
                    $of_x
                }
                #[inline(always)]
                #[allow(unused_variables)]
                fn bwd_of(self, $t: [f32; 2], $dyo: f32, $so: f32) -> f32 {
                    let $qo = self;
                    $bwd_of
                }
            )?
        }
    };
}

functor!(SteSign { clip: Option<f32> }, None,
    fwd(q, x, s) { scalar::sign(x) },
    bwd(q, x, dy, s) { scalar::ste_grad(x, dy, q.clip) });
functor!(ApproxSign {}, None,
    fwd(q, x, s) { scalar::sign(x) },
    bwd(q, x, dy, s) { scalar::approx_sign_grad(x, dy) });
functor!(SwishSign { beta: f32 }, None,
    fwd(q, x, s) { scalar::sign(x) },
    bwd(q, x, dy, s) { scalar::swish_sign_grad(x, dy, q.beta) },
    of_x(q, x) { scalar::swish_sign_grad_factors(x, q.beta) },
    bwd_of(q, t, dy, s) { scalar::swish_sign_grad_from(t, dy, q.beta) });
functor!(Ede { t: f32 }, None,
    fwd(q, x, s) { scalar::sign(x) },
    bwd(q, x, dy, s) { scalar::ede_grad(x, dy, q.t) });
functor!(ProgressiveSign { divisor: f32 }, None,
    fwd(q, x, s) { scalar::progressive_sign(x, q.divisor) },
    bwd(q, x, dy, s) { dy });
functor!(SteHeaviside { clip: Option<f32> }, None,
    fwd(q, x, s) { scalar::heaviside(x) },
    bwd(q, x, dy, s) { scalar::ste_grad(x, dy, q.clip) });
functor!(SteHeavisideUnipolar { clip: Option<f32> }, None,
    fwd(q, x, s) { scalar::heaviside(x) },
    bwd(q, x, dy, s) { scalar::ste_unipolar_grad(x, dy, q.clip) });
functor!(MagnitudeAwareSign { clip: Option<f32> }, Channel,
    fwd(q, x, s) { scalar::magnitude_aware_sign(x, s) },
    bwd(q, x, dy, s) { scalar::magnitude_aware_sign_grad(x, dy, s, q.clip) });
// The threshold is the reduction's value: TWN's, or the fixed one as a constant.
functor!(SteTern { clip: Option<f32> }, Scalar,
    fwd(q, x, s) { scalar::ternarize(x, s) },
    bwd(q, x, dy, s) { scalar::ste_grad(x, dy, q.clip) });
functor!(DorefaActivations { levels: f32 }, None,
    fwd(q, x, s) { scalar::dorefa_quantize(x, q.levels) },
    bwd(q, x, dy, s) { scalar::dorefa_activations_grad(x, dy) });
functor!(DorefaWeights { levels: f32 }, Scalar,
    fwd(q, x, s) { scalar::dorefa_weights(x, s, q.levels) },
    bwd(q, x, dy, s) { scalar::dorefa_weights_grad(x, dy, s) },
    of_x(q, x) { [scalar::dorefa_weights_grad_factor(x), 0.0] },
    bwd_of(q, t, dy, s) { scalar::dorefa_weights_grad_from(t[0], dy, s) });
functor!(NoOp {}, None,
    fwd(q, x, s) { x },
    bwd(q, x, dy, s) { dy });

/// A sign quantizer times its row's mean `|x|` (XNOR-Net's α, held constant
/// for the gradient, so the gradient is the quantizer's own of `α·dy`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Scaled<F>(pub(crate) F);

impl<F: Elementwise> Elementwise for Scaled<F> {
    const INDEX: Index = Index::Row;
    #[inline(always)]
    fn fwd(self, x: f32, s: f32) -> f32 {
        scalar::magnitude_aware_sign(x, s)
    }
    #[inline(always)]
    fn bwd(self, x: f32, dy: f32, s: f32) -> f32 {
        self.0.bwd(x, s * dy, 0.0)
    }
    const TABULATED: bool = F::TABULATED;
    #[inline(always)]
    fn of_x(self, x: f32) -> [f32; 2] {
        self.0.of_x(x)
    }
    #[inline(always)]
    fn bwd_of(self, of_x: [f32; 2], dy: f32, s: f32) -> f32 {
        self.0.bwd_of(of_x, s * dy, 0.0)
    }
}

/// The functor of a call: one variant per kernel family.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Functor {
    SteSign(SteSign),
    ApproxSign(ApproxSign),
    SwishSign(SwishSign),
    Ede(Ede),
    ProgressiveSign(ProgressiveSign),
    SteHeaviside(SteHeaviside),
    SteHeavisideUnipolar(SteHeavisideUnipolar),
    MagnitudeAwareSign(MagnitudeAwareSign),
    SteTern(SteTern),
    DorefaActivations(DorefaActivations),
    DorefaWeights(DorefaWeights),
    NoOp(NoOp),
    SteSignScaled(Scaled<SteSign>),
    ApproxSignScaled(Scaled<ApproxSign>),
    SwishSignScaled(Scaled<SwishSign>),
}

/// Calls `$body` with `$f` bound to the concrete functor of `$functor`, so
/// that the body is compiled once per functor type: dispatch written once.
macro_rules! with_functor {
    ($functor:expr, |$f:ident| $body:expr) => {{
        use $crate::op::Functor as F;
        match $functor {
            F::SteSign($f) => $body,
            F::ApproxSign($f) => $body,
            F::SwishSign($f) => $body,
            F::Ede($f) => $body,
            F::ProgressiveSign($f) => $body,
            F::SteHeaviside($f) => $body,
            F::SteHeavisideUnipolar($f) => $body,
            F::MagnitudeAwareSign($f) => $body,
            F::SteTern($f) => $body,
            F::DorefaActivations($f) => $body,
            F::DorefaWeights($f) => $body,
            F::NoOp($f) => $body,
            F::SteSignScaled($f) => $body,
            F::ApproxSignScaled($f) => $body,
            F::SwishSignScaled($f) => $body,
        }
    }};
}
pub(crate) use with_functor;

/// What one quantizer computes on one element type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Op {
    /// The tensors' type, which the parameters are rounded to.
    pub(crate) dtype: DType,
    pub(crate) functor: Functor,
    /// The reduction of the forward pass; see [`Op::reduction`].
    forward_reduction: Reduction,
    /// Where the gradient passes; `None` when it needs `x` itself.
    pub(crate) window: Option<Window>,
}

impl Op {
    /// Resolves `q` for tensors of `dtype`: clip values and fixed thresholds
    /// are rounded to the type here, as larq casts them, and nowhere else.
    /// `rsign` has kernels of its own (it takes α) and resolves to `None`.
    pub(crate) fn new(q: &Quantizer, dtype: DType) -> Option<Op> {
        let round = |v: f32| dtype.round(v);
        let clip_of = |c: Option<f32>| c.map(round);
        let op = |functor, forward_reduction, window| Op {
            dtype,
            functor,
            forward_reduction,
            window,
        };
        let mut op = match q.kind() {
            Kind::SteSign { clip_value } => {
                let clip = clip_of(clip_value);
                op(
                    Functor::SteSign(SteSign { clip }),
                    Reduction::None,
                    Some(Window::Ste(clip)),
                )
            }
            Kind::ApproxSign => op(Functor::ApproxSign(ApproxSign {}), Reduction::None, None),
            Kind::SwishSign { beta } => op(
                Functor::SwishSign(SwishSign { beta }),
                Reduction::None,
                None,
            ),
            Kind::Ede { t } => op(Functor::Ede(Ede { t }), Reduction::None, None),
            Kind::ProgressiveSign { temperature } => op(
                Functor::ProgressiveSign(ProgressiveSign {
                    divisor: scalar::progressive_sign_divisor(temperature),
                }),
                Reduction::None,
                Some(Window::Everywhere),
            ),
            Kind::SteHeaviside {
                clip_value,
                unipolar: false,
            } => {
                let clip = clip_of(clip_value);
                op(
                    Functor::SteHeaviside(SteHeaviside { clip }),
                    Reduction::None,
                    Some(Window::Ste(clip)),
                )
            }
            Kind::SteHeaviside {
                clip_value,
                unipolar: true,
            } => {
                let clip = clip_of(clip_value);
                op(
                    Functor::SteHeavisideUnipolar(SteHeavisideUnipolar { clip }),
                    Reduction::None,
                    Some(Window::Unipolar(clip)),
                )
            }
            Kind::MagnitudeAwareSign { clip_value } => {
                let clip = clip_of(clip_value);
                op(
                    Functor::MagnitudeAwareSign(MagnitudeAwareSign { clip }),
                    Reduction::ChannelMeanAbs,
                    Some(Window::Ste(clip)),
                )
            }
            Kind::SteTern {
                threshold_value,
                ternary_weight_networks,
                clip_value,
            } => {
                let clip = clip_of(clip_value);
                let threshold = if ternary_weight_networks {
                    Reduction::TwnThreshold
                } else {
                    Reduction::Constant(round(threshold_value))
                };
                op(
                    Functor::SteTern(SteTern { clip }),
                    threshold,
                    Some(Window::Ste(clip)),
                )
            }
            Kind::DoReFa { k_bit, mode } => {
                let levels = scalar::dorefa_levels(k_bit);
                match mode {
                    DorefaMode::Activations => op(
                        Functor::DorefaActivations(DorefaActivations { levels }),
                        Reduction::None,
                        Some(Window::UnitInterval),
                    ),
                    DorefaMode::Weights => op(
                        Functor::DorefaWeights(DorefaWeights { levels }),
                        Reduction::MaxAbsTanh,
                        None,
                    ),
                }
            }
            Kind::NoOp { .. } => op(
                Functor::NoOp(NoOp {}),
                Reduction::None,
                Some(Window::Everywhere),
            ),
            Kind::RSign => return None,
        };
        if q.scale() == WeightScale::FirstAxis {
            // Quantizer::with_scale admits only the sign family.
            op.functor = match op.functor {
                Functor::SteSign(f) => Functor::SteSignScaled(Scaled(f)),
                Functor::ApproxSign(f) => Functor::ApproxSignScaled(Scaled(f)),
                Functor::SwishSign(f) => Functor::SwishSignScaled(Scaled(f)),
                other => unreachable!("{other:?} takes no weight scale"),
            };
            op.forward_reduction = Reduction::RowMeanAbs;
            // The scale would have to be saved as well.
            op.window = None;
        }
        Some(op)
    }

    /// The reduction a pass runs first. TWN's threshold is the forward's
    /// alone: ste_tern's gradient does not read it.
    pub(crate) fn reduction(&self, dir: Direction) -> Reduction {
        match (self.forward_reduction, dir) {
            (Reduction::TwnThreshold | Reduction::Constant(_), Direction::Backward) => {
                Reduction::None
            }
            (r, _) => r,
        }
    }

    /// Whether a masked forward saves a per-channel scale beside the mask:
    /// where the gradient reads the channel means (magnitude_aware_sign).
    pub(crate) fn saves_scale(&self) -> bool {
        self.reduction(Direction::Backward) == Reduction::ChannelMeanAbs
    }

    /// Whether the pass is a copy: of `x` forward (noop), of `dy` backward
    /// (noop, progressive_sign and the unclipped straight-through
    /// estimators; the scaled signs are other functors). A copy keeps every
    /// NaN's bits, which a round trip through `f32` may not.
    pub(crate) fn copies(&self, dir: Direction) -> bool {
        match dir {
            Direction::Forward => matches!(self.functor, Functor::NoOp(_)),
            Direction::Backward => matches!(
                self.functor,
                Functor::NoOp(_)
                    | Functor::ProgressiveSign(_)
                    | Functor::SteSign(SteSign { clip: None })
                    | Functor::SteHeaviside(SteHeaviside { clip: None })
                    | Functor::SteTern(SteTern { clip: None })
            ),
        }
    }
}

/// The error for a mask asked of a quantizer whose gradient needs `x`.
pub(crate) fn not_maskable(q: &Quantizer) -> Error {
    let reason = match q.kind() {
        _ if q.scale() != WeightScale::None => {
            "its per-output-channel scale would have to be saved as well"
        }
        Kind::ApproxSign => "its gradient (1 − |x|)·2·dy needs the value of x",
        Kind::Ede { .. } => "its gradient is a smooth function of x",
        Kind::RSign => "its gradient (1 − |x − α|)·2·dy needs the value of x",
        Kind::SwishSign { .. } => "its gradient is a smooth function of x",
        Kind::DoReFa { .. } => "its gradient dy·(1 − tanh² x)/max|tanh x| needs the value of x",
        _ => "its gradient needs the value of x",
    };
    Error::NotMaskable {
        quantizer: q.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(spec: &str, dtype: DType) -> Op {
        Op::new(&spec.parse().unwrap(), dtype).unwrap()
    }

    #[test]
    fn parameters_are_rounded_to_the_type() {
        let f = |spec| op(spec, DType::BF16);
        assert_eq!(
            f("ste_sign(clip_value=0.3)").functor,
            Functor::SteSign(SteSign {
                clip: Some(half::bf16::from_f32(0.3).to_f32())
            })
        );
        assert_eq!(
            f("ste_tern(threshold_value=0.3)").reduction(Direction::Forward),
            Reduction::Constant(half::bf16::from_f32(0.3).to_f32())
        );
        assert_eq!(
            op("ste_sign(clip_value=0.3)", DType::F32).window,
            Some(Window::Ste(Some(0.3)))
        );
    }

    #[test]
    fn reductions_and_copies_follow_the_direction() {
        let twn = op("ste_tern(ternary_weight_networks=true)", DType::F32);
        assert_eq!(twn.reduction(Direction::Forward), Reduction::TwnThreshold);
        assert_eq!(twn.reduction(Direction::Backward), Reduction::None);
        let mas = op("magnitude_aware_sign", DType::F16);
        assert_eq!(
            mas.reduction(Direction::Backward),
            Reduction::ChannelMeanAbs
        );
        let ste = op("ste_sign(clip_value=none)", DType::F32);
        assert!(!ste.copies(Direction::Forward) && ste.copies(Direction::Backward));
        let scaled = op("ste_sign(clip_value=none, scale=first_axis)", DType::F32);
        assert!(!scaled.copies(Direction::Backward));
        assert!(matches!(scaled.functor, Functor::SteSignScaled(_)));
        assert!(Op::new(&"rsign".parse().unwrap(), DType::F32).is_none());
    }
}
