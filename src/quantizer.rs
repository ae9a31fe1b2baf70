//! Quantizers as values: built in code or parsed from larq's spelling.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// How DoReFa treats its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DorefaMode {
    /// `round_half_even(clip(x, 0, 1)·n) / n`.
    Activations,
    /// `2·quantize(tanh x / (2·max|tanh x|) + 0.5) − 1`.
    Weights,
}

impl DorefaMode {
    fn as_str(self) -> &'static str {
        match self {
            DorefaMode::Activations => "activations",
            DorefaMode::Weights => "weights",
        }
    }
}

/// The per-output-channel weight scale the sign quantizers can apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WeightScale {
    /// No scale: outputs are ±1.
    #[default]
    None,
    /// XNOR-Net's α (Rastegari et al. 2016, arXiv:1603.05279): each slice
    /// along the first axis (an output channel in PyTorch's and cuDNN's
    /// `[out, in, kh, kw]` layout) is multiplied by its mean `|x|`, held
    /// constant for the gradient. For channels-last layouts see
    /// `magnitude_aware_sign`.
    FirstAxis,
}

impl WeightScale {
    fn as_str(self) -> &'static str {
        match self {
            WeightScale::None => "none",
            WeightScale::FirstAxis => "first_axis",
        }
    }
}

/// The quantizers and their parameters, spelled as larq spells them.
///
/// A `Kind` is unchecked; [`Quantizer::new`] validates it. A clip of `None`
/// means larq's `clip_value=None`: the gradient passes everywhere.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Sign with the straight-through estimator (BinaryNet, Courbariaux et
    /// al. 2016): `y = −1 if x < 0 else +1`, `dx = dy` where `|x| ≤ clip`,
    /// else `+0`.
    ///
    /// ```
    /// # use lowbit::Quantizer;
    /// let q: Quantizer = "ste_sign(clip_value=1.0)".parse()?;
    /// let x = [-2.0f32, -0.5, 0.0, 1.5];
    /// assert_eq!(q.forward_vec(&x, &[4])?, [-1.0, -1.0, 1.0, 1.0]);
    /// assert_eq!(q.backward_vec(&x, &[3.0; 4], &[4])?, [0.0, 3.0, 3.0, 0.0]);
    /// # Ok::<(), lowbit::Error>(())
    /// ```
    SteSign {
        /// The gradient window `|x| ≤ clip_value`; `None` passes everywhere.
        clip_value: Option<f32>,
    },
    /// Sign with ApproxSign's piecewise-linear gradient (Bi-Real Net, Liu et
    /// al. 2018): `dx = (1 − |x|)·2·dy` where `|x| ≤ 1`, else `+0`.
    ///
    /// ```
    /// # use lowbit::Quantizer;
    /// let q: Quantizer = "approx_sign".parse()?;
    /// let dx = q.backward_vec(&[0.0f32, 0.5, -0.75, 2.0], &[1.0; 4], &[4])?;
    /// assert_eq!(dx, [2.0, 1.0, 0.5, 0.0]);
    /// # Ok::<(), lowbit::Error>(())
    /// ```
    ApproxSign,
    /// Sign with the SignSwish gradient (BNN+, Darabi et al. 2018):
    /// `dx = dy·β·(2 − βx·tanh(βx/2)) / (1 + cosh βx)`.
    ///
    /// ```
    /// # use lowbit::Quantizer;
    /// let q: Quantizer = "swish_sign(beta=5.0)".parse()?;
    /// let dx = q.backward_vec(&[0.0f32, 3.0], &[1.0; 2], &[2])?;
    /// assert_eq!(dx[0], 5.0); // β at 0
    /// assert!(dx[1].abs() < 1e-3);
    /// # Ok::<(), lowbit::Error>(())
    /// ```
    SwishSign {
        /// The sharpness, `0 < β ≤` [`MAX_BETA`]; the gradient at 0 is β.
        /// The bound keeps the `f32` gradient finite (see [`MAX_BETA`]).
        beta: f32,
    },
    /// 0/1 step with the straight-through estimator: `y = 1 if x > 0 else 0`,
    /// `dx = dy` where `|x| ≤ clip` (or `0 ≤ x ≤ clip` when `unipolar`).
    ///
    /// ```
    /// # use lowbit::Quantizer;
    /// let q: Quantizer = "ste_heaviside(unipolar=true)".parse()?;
    /// let x = [-0.5f32, 0.0, 0.5];
    /// assert_eq!(q.forward_vec(&x, &[3])?, [0.0, 0.0, 1.0]);
    /// assert_eq!(q.backward_vec(&x, &[1.0; 3], &[3])?, [0.0, 1.0, 1.0]);
    /// # Ok::<(), lowbit::Error>(())
    /// ```
    SteHeaviside {
        /// The gradient window; `None` passes everywhere (from 0 up when
        /// `unipolar`).
        clip_value: Option<f32>,
        /// lowbit's extension, for 0/1 activations: the window is
        /// `0 ≤ x ≤ clip_value` instead of `|x| ≤ clip_value`.
        unipolar: bool,
    },
    /// Sign times the per-channel mean |x| (Bi-Real Net), channels last:
    /// `y = s_c·sign(x)`, `s_c` = mean |x| of channel `c` over every other
    /// axis, held constant for the gradient `dx = s_c·dy` where
    /// `|x| ≤ clip`, else `+0`.
    ///
    /// ```
    /// # use lowbit::Quantizer;
    /// let q: Quantizer = "magnitude_aware_sign".parse()?;
    /// // Two rows of two channels: s = [1.5, 0.5].
    /// let y = q.forward_vec(&[1.0f32, -0.5, -2.0, 0.5], &[2, 2])?;
    /// assert_eq!(y, [1.5, -0.5, -1.5, 0.5]);
    /// # Ok::<(), lowbit::Error>(())
    /// ```
    MagnitudeAwareSign {
        /// The gradient window `|x| ≤ clip_value`; `None` passes everywhere.
        clip_value: Option<f32>,
    },
    /// Ternarization to {−1, 0, +1} (Ternary Weight Networks, Li et al.
    /// 2016): `y = sign(sign(x + Δ) + sign(x − Δ))`, the straight-through
    /// gradient as `SteSign`'s.
    ///
    /// ```
    /// # use lowbit::Quantizer;
    /// let q: Quantizer = "ste_tern(threshold_value=0.5)".parse()?;
    /// let y = q.forward_vec(&[-0.7f32, -0.2, 0.5, 2.0], &[4])?;
    /// assert_eq!(y, [-1.0, 0.0, 1.0, 1.0]);
    /// # Ok::<(), lowbit::Error>(())
    /// ```
    SteTern {
        /// Δ when `ternary_weight_networks` is false.
        threshold_value: f32,
        /// Δ = 0.7·mean |x| of the whole tensor instead (TWN).
        ternary_weight_networks: bool,
        /// The gradient window `|x| ≤ clip_value`; `None` passes everywhere.
        clip_value: Option<f32>,
    },
    /// DoReFa-Net's k-bit quantizer (Zhou et al. 2016), see [`DorefaMode`]
    /// for its two forms; `n = 2^k − 1` levels.
    ///
    /// ```
    /// # use lowbit::Quantizer;
    /// let q: Quantizer = "dorefa(k_bit=2)".parse()?;
    /// let y = q.forward_vec(&[-1.0f32, 0.2, 0.5, 0.9], &[4])?;
    /// assert_eq!(y, [0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]);
    /// # Ok::<(), lowbit::Error>(())
    /// ```
    DoReFa {
        /// Bits, 1 to 24 ([`K_BIT_RANGE`]).
        k_bit: u32,
        /// Activations (clip to [0, 1]) or weights (through tanh).
        mode: DorefaMode,
    },
    /// Identity, tagged with a precision (larq's `NoOp`): `y = x`, `dx = dy`.
    ///
    /// ```
    /// # use lowbit::Quantizer;
    /// let q: Quantizer = "noop(precision=8)".parse()?;
    /// assert_eq!(q.forward_vec(&[0.3f32], &[1])?, [0.3]);
    /// # Ok::<(), lowbit::Error>(())
    /// ```
    NoOp {
        /// The precision larq records; it changes nothing here.
        precision: u32,
    },
    /// Sign with IR-Net's Error Decay Estimator (Qin et al. 2020,
    /// arXiv:1909.10788): `dx = dy·k·t·(1 − tanh²(t·x))`, `k = max(1/t, 1)`.
    /// `t` grows over training; [`Quantizer::ede`] computes it from the
    /// training progress.
    ///
    /// ```
    /// # use lowbit::Quantizer;
    /// let q: Quantizer = "ede(t=2.0)".parse()?;
    /// assert_eq!(q.backward_vec(&[0.0f32], &[1.0], &[1])?, [2.0]); // k·t = max(t, 1)
    /// # Ok::<(), lowbit::Error>(())
    /// ```
    Ede {
        /// The sharpness, > 0; `ede(progress=p)` sets `t = 10^(−3 + 4p)`.
        t: f32,
    },
    /// bitorch's ProgressiveSign (Lee et al. 2022, "Progressive Binarization
    /// for Training Binary Neural Networks"): in training,
    /// `y = hardtanh(x / max(1 − t, 1e−7))`, a ramp that sharpens into the
    /// sign as the temperature `t` goes from 0 to 1, with the identity as its
    /// gradient (`dx = dy`). [`Quantizer::progressive_sign`] computes `t`
    /// from the training progress with bitorch's schedule; at inference,
    /// bitorch uses the plain sign (`ste_sign`).
    ///
    /// ```
    /// # use lowbit::Quantizer;
    /// let q: Quantizer = "progressive_sign(temperature=0.75)".parse()?;
    /// // x / 0.25, clipped to [−1, 1].
    /// assert_eq!(q.forward_vec(&[-1.0f32, 0.125, 2.0], &[3])?, [-1.0, 0.5, 1.0]);
    /// assert_eq!(q.backward_vec(&[-1.0f32, 0.125, 2.0], &[3.0; 3], &[3])?, [3.0; 3]);
    /// # Ok::<(), lowbit::Error>(())
    /// ```
    ProgressiveSign {
        /// The temperature, from 0 to 1; `progressive_sign(progress=p)` sets
        /// `t = 1 − 4^(−10p)`, bitorch's default schedule.
        temperature: f32,
    },
    /// Sign of `x − α_c` with a learned threshold per channel (ReActNet's
    /// RSign, Liu et al. 2020, arXiv:2003.03488), ApproxSign's gradient at
    /// `u = x − α_c`: `dx = (1 − |u|)·2·dy` where `|u| ≤ 1`, and
    /// `dα_c = −Σ dx` over the channel; channels last. α comes with the call:
    /// [`Quantizer::forward_with_thresholds`] and
    /// [`Quantizer::backward_with_thresholds`].
    RSign,
}

/// A validated quantizer: forward `y = q(x)` and backward `dx = dq/dx · dy`.
///
/// Build one from larq's spelling or from a [`Kind`]; either way its
/// parameters are checked once, here, and never again.
///
/// ```
/// use lowbit::{Kind, Quantizer};
///
/// let q: Quantizer = "ste_tern(threshold_value=0.2, clip_value=none)".parse()?;
/// assert_eq!(
///     q.to_string(),
///     "ste_tern(threshold_value=0.2, ternary_weight_networks=false, clip_value=none)"
/// );
/// assert_eq!(q, Quantizer::new(Kind::SteTern {
///     threshold_value: 0.2,
///     ternary_weight_networks: false,
///     clip_value: None,
/// })?);
/// assert!("ste_sign(clip_value=-1)".parse::<Quantizer>().is_err());
/// # Ok::<(), lowbit::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantizer {
    kind: Kind,
    scale: WeightScale,
}

/// Default `clip_value` of the straight-through estimators, as in larq.
pub const DEFAULT_CLIP: f32 = 1.0;
/// Default `beta` of `swish_sign`.
pub const DEFAULT_BETA: f32 = 5.0;
/// Default `threshold_value` of `ste_tern`: 0.1, as the seed document of this
/// crate gives it. larq ≥ 0.13 defaults to 0.05: spell it out to get that.
pub const DEFAULT_TERN_THRESHOLD: f32 = 0.1;
/// Default `k_bit` of `dorefa`.
pub const DEFAULT_K_BIT: u32 = 2;
/// The `k_bit` range DoReFa supports: `2^k − 1` must be exact in `f32`.
pub const K_BIT_RANGE: std::ops::RangeInclusive<u32> = 1..=24;
/// The largest `beta` of `swish_sign`: up to it, the `f32` gradient
/// `dy·β·(2 − |βx|·t)·2e/(1 + e)²` never overflows for `|dy| ≤ 3.8e30`
/// (`|2 − |βx|·t| ≤ 89.4` wherever `e > 0`), and the tail it gives as 0
/// (`|βx| > 87.3`, where `e` leaves `f32`'s normal range) is below
/// `2e−30·|dy|`. A larger β would overflow to ±inf, or flush a gradient that
/// is not small, where the true one is finite: such a β is refused instead
/// of computing its gradient another way, so that every allowed β keeps
/// the bits it always had (and the CUDA kernel's). The window of such a
/// gradient is narrower than `1e−5` around 0 already.
pub const MAX_BETA: f32 = 1e6;

/// How much of a user's text an error message quotes: a SPEC may be
/// megabytes long, and a message is read by a person.
const QUOTED: usize = 64;

/// `text` as an error quotes it: whole if short, else its first [`QUOTED`]
/// characters and the length of the rest.
pub(crate) fn excerpt(text: &str) -> String {
    match text.char_indices().nth(QUOTED) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}… ({} bytes in all)", &text[..cut], text.len()),
    }
}

/// The domain of each real parameter and what the error says it accepts:
/// checked where the value enters, on its SPEC text (so the error quotes
/// what was typed, not what `f32` made of it), and by [`Quantizer::new`] for
/// a [`Kind`] built in code.
fn real_domain(key: &str) -> (fn(f32) -> bool, &'static str) {
    match key {
        "beta" => (
            |b| b > 0.0 && b <= MAX_BETA,
            "a number > 0 and at most 1e6 (MAX_BETA)",
        ),
        "threshold_value" => (|v| v.is_finite() && v >= 0.0, "a finite number ≥ 0"),
        "clip_value" => (|c| c.is_finite() && c > 0.0, "a finite number > 0, or none"),
        "progress" | "temperature" => (|p| (0.0..=1.0).contains(&p), "a number from 0 to 1"),
        // `t`, EDE's sharpness.
        _ => (|t| t.is_finite() && t > 0.0, "a finite number > 0"),
    }
}

impl Quantizer {
    /// The names [`FromStr`] accepts, in larq's spelling.
    pub const NAMES: &'static [&'static str] = &[
        "ste_sign",
        "approx_sign",
        "swish_sign",
        "ste_heaviside",
        "magnitude_aware_sign",
        "ste_tern",
        "dorefa",
        "noop",
        "ede",
        "rsign",
        "progressive_sign",
    ];

    /// Validates `kind` and wraps it.
    pub fn new(kind: Kind) -> Result<Self> {
        let name = kind.name();
        match kind {
            Kind::SteSign { clip_value }
            | Kind::SteHeaviside { clip_value, .. }
            | Kind::MagnitudeAwareSign { clip_value } => check_clip(name, clip_value)?,
            Kind::ApproxSign | Kind::RSign => {}
            Kind::Ede { t } => check_real(name, "t", t)?,
            Kind::ProgressiveSign { temperature } => check_real(name, "temperature", temperature)?,
            Kind::SwishSign { beta } => check_real(name, "beta", beta)?,
            Kind::SteTern {
                threshold_value,
                clip_value,
                ..
            } => {
                check_real(name, "threshold_value", threshold_value)?;
                check_clip(name, clip_value)?;
            }
            Kind::DoReFa { k_bit, .. } => {
                if !K_BIT_RANGE.contains(&k_bit) {
                    return Err(invalid(name, "k_bit", k_bit, "an integer from 1 to 24"));
                }
            }
            Kind::NoOp { precision } => {
                if precision == 0 {
                    return Err(invalid(name, "precision", precision, "an integer ≥ 1"));
                }
            }
        }
        let kind = match kind {
            // −0 passes `≥ 0`; +0 is the same threshold and prints as one.
            Kind::SteTern {
                threshold_value,
                ternary_weight_networks,
                clip_value,
            } => Kind::SteTern {
                threshold_value: threshold_value.abs(),
                ternary_weight_networks,
                clip_value,
            },
            kind => kind,
        };
        Ok(Quantizer {
            kind,
            scale: WeightScale::None,
        })
    }

    /// This quantizer with a per-output-channel weight scale. Only the sign
    /// quantizers (`ste_sign`, `approx_sign`, `swish_sign`) take one.
    ///
    /// ```
    /// use lowbit::{Quantizer, WeightScale};
    ///
    /// let q = "ste_sign".parse::<Quantizer>()?.with_scale(WeightScale::FirstAxis)?;
    /// assert_eq!(q, "ste_sign(scale=first_axis)".parse()?);
    /// // Two output channels of three weights: α = mean |w| per row.
    /// let y = q.forward_vec(&[0.5f32, -1.0, 1.5, -3.0, 3.0, 0.0], &[2, 3])?;
    /// assert_eq!(y, [1.0, -1.0, 1.0, -2.0, 2.0, 2.0]);
    /// # Ok::<(), lowbit::Error>(())
    /// ```
    pub fn with_scale(self, scale: WeightScale) -> Result<Self> {
        if scale != WeightScale::None && !self.kind.takes_scale() {
            return Err(Error::UnknownParameter {
                quantizer: self.name(),
                key: "scale".to_string(),
                takes: self.kind.keys(),
            });
        }
        Ok(Quantizer { scale, ..self })
    }

    /// IR-Net's EDE at `progress` ∈ [0, 1] through training:
    /// `t = 10^(log10 Tmin + (log10 Tmax − log10 Tmin)·progress)` with
    /// `Tmin = 1e−3`, `Tmax = 10` (the paper's schedule).
    ///
    /// ```
    /// use lowbit::{Kind, Quantizer};
    ///
    /// let q = Quantizer::ede(1.0)?;
    /// assert_eq!(q.kind(), Kind::Ede { t: 10.0 });
    /// assert!(Quantizer::ede(1.5).is_err());
    /// # Ok::<(), lowbit::Error>(())
    /// ```
    pub fn ede(progress: f32) -> Result<Self> {
        if !(0.0..=1.0).contains(&progress) {
            return Err(invalid("ede", "progress", progress, "a number from 0 to 1"));
        }
        Quantizer::new(Kind::Ede {
            t: crate::scalar::ede_t(progress),
        })
    }

    /// bitorch's ProgressiveSign at `progress` ∈ [0, 1] through training:
    /// temperature `t = 1 − 4^(−10·progress)` (bitorch's default transform,
    /// α = 4 and β = 10), so the forward is nearly the sign from about a
    /// third of the way on.
    ///
    /// ```
    /// use lowbit::{Kind, Quantizer};
    ///
    /// assert_eq!(Quantizer::progressive_sign(0.0)?.kind(), Kind::ProgressiveSign { temperature: 0.0 });
    /// assert_eq!(Quantizer::progressive_sign(0.05)?, "progressive_sign(progress=0.05)".parse()?);
    /// assert!(Quantizer::progressive_sign(-0.5).is_err());
    /// # Ok::<(), lowbit::Error>(())
    /// ```
    pub fn progressive_sign(progress: f32) -> Result<Self> {
        if !(0.0..=1.0).contains(&progress) {
            return Err(invalid(
                "progressive_sign",
                "progress",
                progress,
                "a number from 0 to 1",
            ));
        }
        Quantizer::new(Kind::ProgressiveSign {
            temperature: crate::scalar::progressive_sign_temperature(progress),
        })
    }

    /// The quantizer and its parameters.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The per-output-channel weight scale ([`WeightScale::None`] unless
    /// asked for).
    pub fn scale(&self) -> WeightScale {
        self.scale
    }

    /// larq's name of the quantizer, e.g. `"ste_sign"`.
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }
}

impl Kind {
    /// larq's name of the quantizer.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::SteSign { .. } => "ste_sign",
            Kind::ApproxSign => "approx_sign",
            Kind::SwishSign { .. } => "swish_sign",
            Kind::SteHeaviside { .. } => "ste_heaviside",
            Kind::MagnitudeAwareSign { .. } => "magnitude_aware_sign",
            Kind::SteTern { .. } => "ste_tern",
            Kind::DoReFa { .. } => "dorefa",
            Kind::NoOp { .. } => "noop",
            Kind::Ede { .. } => "ede",
            Kind::RSign => "rsign",
            Kind::ProgressiveSign { .. } => "progressive_sign",
        }
    }

    /// Whether the quantizer takes a [`WeightScale`]: the sign family.
    fn takes_scale(&self) -> bool {
        matches!(
            self,
            Kind::SteSign { .. } | Kind::ApproxSign | Kind::SwishSign { .. }
        )
    }

    /// The quantizer called `name` with its default parameters; `None` for an
    /// unknown name. `noop` has no default precision and comes back as 32.
    fn with_defaults(name: &str) -> Option<Kind> {
        let clip_value = Some(DEFAULT_CLIP);
        Some(match name {
            "ste_sign" => Kind::SteSign { clip_value },
            "approx_sign" => Kind::ApproxSign,
            "swish_sign" => Kind::SwishSign { beta: DEFAULT_BETA },
            "ste_heaviside" => Kind::SteHeaviside {
                clip_value,
                unipolar: false,
            },
            "magnitude_aware_sign" => Kind::MagnitudeAwareSign { clip_value },
            "ste_tern" => Kind::SteTern {
                threshold_value: DEFAULT_TERN_THRESHOLD,
                ternary_weight_networks: false,
                clip_value,
            },
            "dorefa" => Kind::DoReFa {
                k_bit: DEFAULT_K_BIT,
                mode: DorefaMode::Activations,
            },
            "noop" => Kind::NoOp { precision: 32 },
            "ede" => Kind::Ede {
                t: crate::scalar::ede_t(0.0),
            },
            "rsign" => Kind::RSign,
            "progressive_sign" => Kind::ProgressiveSign { temperature: 0.0 },
            _ => return None,
        })
    }

    /// The parameter names this quantizer takes, in display order.
    fn keys(&self) -> &'static [&'static str] {
        match self {
            Kind::SteSign { .. } => &["clip_value", "scale"],
            Kind::SteHeaviside { .. } => &["clip_value", "unipolar"],
            Kind::MagnitudeAwareSign { .. } => &["clip_value"],
            Kind::ApproxSign => &["scale"],
            Kind::SwishSign { .. } => &["beta", "scale"],
            Kind::Ede { .. } => &["t", "progress"],
            Kind::RSign => &[],
            Kind::ProgressiveSign { .. } => &["temperature", "progress"],
            Kind::SteTern { .. } => &["threshold_value", "ternary_weight_networks", "clip_value"],
            Kind::DoReFa { .. } => &["k_bit", "mode"],
            Kind::NoOp { .. } => &["precision"],
        }
    }

    /// Sets one parameter from its SPEC text.
    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let name = self.name();
        let takes = self.keys();
        let unknown = || Error::UnknownParameter {
            quantizer: name,
            key: excerpt(key),
            takes,
        };
        match (self, key) {
            (
                Kind::SteSign { clip_value }
                | Kind::SteHeaviside { clip_value, .. }
                | Kind::MagnitudeAwareSign { clip_value }
                | Kind::SteTern { clip_value, .. },
                "clip_value",
            ) => *clip_value = parse_clip(name, value)?,
            (Kind::SteHeaviside { unipolar, .. }, "unipolar") => {
                *unipolar = parse_bool(name, "unipolar", value)?
            }
            (Kind::Ede { t }, "t") => *t = parse_f32(name, "t", value)?,
            (Kind::Ede { t }, "progress") => {
                *t = crate::scalar::ede_t(parse_f32(name, "progress", value)?);
            }
            (Kind::ProgressiveSign { temperature }, "temperature") => {
                *temperature = parse_f32(name, "temperature", value)?
            }
            (Kind::ProgressiveSign { temperature }, "progress") => {
                *temperature = crate::scalar::progressive_sign_temperature(parse_f32(
                    name, "progress", value,
                )?);
            }
            (Kind::SwishSign { beta }, "beta") => *beta = parse_f32(name, "beta", value)?,
            (
                Kind::SteTern {
                    threshold_value, ..
                },
                "threshold_value",
            ) => *threshold_value = parse_f32(name, "threshold_value", value)?,
            (
                Kind::SteTern {
                    ternary_weight_networks,
                    ..
                },
                "ternary_weight_networks",
            ) => *ternary_weight_networks = parse_bool(name, "ternary_weight_networks", value)?,
            (Kind::DoReFa { k_bit, .. }, "k_bit") => *k_bit = parse_u32(name, "k_bit", value)?,
            (Kind::DoReFa { mode, .. }, "mode") => {
                *mode = match unquote(value) {
                    "activations" => DorefaMode::Activations,
                    "weights" => DorefaMode::Weights,
                    _ => return Err(invalid(name, "mode", value, "`activations` or `weights`")),
                }
            }
            (Kind::NoOp { precision }, "precision") => {
                *precision = parse_u32(name, "precision", value)?
            }
            _ => return Err(unknown()),
        }
        Ok(())
    }
}

fn invalid(
    quantizer: &'static str,
    key: &'static str,
    value: impl fmt::Display,
    expected: &'static str,
) -> Error {
    Error::InvalidParameter {
        quantizer,
        key,
        value: excerpt(&value.to_string()),
        expected,
    }
}

/// Checks a real parameter built in code, quoting its value.
fn check_real(name: &'static str, key: &'static str, v: f32) -> Result<()> {
    let (ok, expected) = real_domain(key);
    if ok(v) {
        Ok(())
    } else {
        Err(invalid(name, key, Float(v), expected))
    }
}

fn check_clip(name: &'static str, clip: Option<f32>) -> Result<()> {
    match clip {
        Some(c) => check_real(name, "clip_value", c),
        None => Ok(()),
    }
}

fn unquote(value: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = value.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            return inner;
        }
    }
    value
}

/// Parses a real parameter and checks it against its domain, quoting the
/// text typed in any error.
fn parse_f32(name: &'static str, key: &'static str, value: &str) -> Result<f32> {
    // Rust accepts "nan" and "inf"; no parameter of a quantizer can be either.
    let v = match value.parse::<f32>() {
        Ok(v) if v.is_finite() => v,
        _ => return Err(invalid(name, key, value, "a finite number")),
    };
    // `1e-46` and `-1e-50` round to ±0: a value f32 cannot hold, as `1e400`
    // is, not the zero it becomes (which would turn a refused negative
    // threshold into an accepted −0).
    let mantissa = value.split(['e', 'E']).next().unwrap_or(value);
    if v == 0.0 && mantissa.contains(|c: char| matches!(c, '1'..='9')) {
        return Err(invalid(
            name,
            key,
            value,
            "a number f32 can hold (this one rounds to 0)",
        ));
    }
    let (ok, expected) = real_domain(key);
    if !ok(v) {
        return Err(invalid(name, key, value, expected));
    }
    Ok(v)
}

fn parse_clip(name: &'static str, value: &str) -> Result<Option<f32>> {
    match value {
        "none" | "None" | "null" => Ok(None),
        _ => parse_f32(name, "clip_value", value).map(Some),
    }
}

fn parse_bool(name: &'static str, key: &'static str, value: &str) -> Result<bool> {
    match value {
        "true" | "True" => Ok(true),
        "false" | "False" => Ok(false),
        _ => Err(invalid(name, key, value, "true or false")),
    }
}

fn parse_u32(name: &'static str, key: &'static str, value: &str) -> Result<u32> {
    let n = value
        .parse::<u32>()
        .map_err(|_| invalid(name, key, value, "a non-negative integer"))?;
    // Quantizer::new checks these ranges too, but would quote the number.
    match key {
        "k_bit" if !K_BIT_RANGE.contains(&n) => {
            Err(invalid(name, key, value, "an integer from 1 to 24"))
        }
        "precision" if n == 0 => Err(invalid(name, key, value, "an integer ≥ 1")),
        _ => Ok(n),
    }
}

/// Splits `name(k=v, ...)` into the name and its key/value pairs.
fn split_spec(spec: &str) -> Result<(&str, Vec<(&str, &str)>)> {
    let syntax = |reason: &str| Error::Syntax {
        spec: excerpt(spec),
        reason: reason.to_string(),
    };
    let s = spec.trim();
    let (name, args) = match s.find('(') {
        None => (s, None),
        Some(open) => {
            let inner = s[open + 1..]
                .strip_suffix(')')
                .ok_or_else(|| syntax("missing `)` at the end"))?;
            (s[..open].trim_end(), Some(inner))
        }
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(syntax("expected a quantizer name such as `ste_sign`"));
    }
    let mut pairs = Vec::new();
    if let Some(args) = args {
        if args.contains(['(', ')']) {
            return Err(syntax("unbalanced parentheses"));
        }
        let args = args.trim();
        // A trailing comma after an argument is fine, as in Python; a comma
        // alone (`ste_sign(,)`) is not.
        let args = match args.strip_suffix(',') {
            Some(before) if !before.trim().is_empty() => before,
            _ => args,
        };
        if !args.is_empty() {
            for arg in args.split(',') {
                let (key, value) = arg.split_once('=').ok_or_else(|| {
                    syntax(&format!(
                        "expected `key=value`, found `{}`",
                        excerpt(arg.trim())
                    ))
                })?;
                let (key, value) = (key.trim(), value.trim());
                if key.is_empty() || value.is_empty() {
                    return Err(syntax(&format!(
                        "expected `key=value`, found `{}`",
                        excerpt(arg.trim())
                    )));
                }
                pairs.push((key, value));
            }
        }
    }
    Ok((name, pairs))
}

impl FromStr for Quantizer {
    type Err = Error;

    /// Parses larq's spelling: `name` or `name(key=value, ...)`, e.g.
    /// `ste_tern(threshold_value=0.2, clip_value=none)`. Parameters left out
    /// take their defaults; `noop` needs its `precision`.
    fn from_str(spec: &str) -> Result<Self> {
        let (name, pairs) = split_spec(spec)?;
        let mut kind =
            Kind::with_defaults(name).ok_or_else(|| Error::UnknownQuantizer(excerpt(name)))?;
        let mut scale = WeightScale::None;
        for (i, (key, value)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(k, _)| k == key) {
                return Err(Error::DuplicateParameter {
                    quantizer: kind.name(),
                    key: excerpt(key),
                });
            }
            if *key == "scale" && kind.takes_scale() {
                scale = match unquote(value) {
                    "none" | "None" => WeightScale::None,
                    "first_axis" => WeightScale::FirstAxis,
                    _ => {
                        return Err(invalid(
                            kind.name(),
                            "scale",
                            value,
                            "`none` or `first_axis`",
                        ));
                    }
                };
                continue;
            }
            kind.set(key, value)?;
        }
        let given = |key: &str| pairs.iter().any(|(k, _)| *k == key);
        if matches!(kind, Kind::Ede { .. }) && given("t") && given("progress") {
            return Err(invalid(
                "ede",
                "progress",
                "given with t",
                "t or progress, not both",
            ));
        }
        if matches!(kind, Kind::ProgressiveSign { .. }) && given("temperature") && given("progress")
        {
            return Err(invalid(
                "progressive_sign",
                "progress",
                "given with temperature",
                "temperature or progress, not both",
            ));
        }
        if matches!(kind, Kind::NoOp { .. }) && !given("precision") {
            return Err(Error::MissingParameter {
                quantizer: "noop",
                key: "precision",
            });
        }
        Quantizer::new(kind)?.with_scale(scale)
    }
}

/// Writes an `f32` so that parsing it back gives the same bits (`1.0`, `0.2`).
struct Float(f32);

impl fmt::Display for Float {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

struct ClipDisplay(Option<f32>);

impl fmt::Display for ClipDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("none"),
            Some(c) => Float(c).fmt(f),
        }
    }
}

impl fmt::Display for Quantizer {
    /// larq's spelling with every parameter written out; [`FromStr`] reads it
    /// back to an equal quantizer.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name();
        // lowbit's extensions of larq's quantizers are written only when set,
        // so larq's spelling stays larq's.
        let scale = match self.scale {
            WeightScale::None => String::new(),
            s => format!("scale={}", s.as_str()),
        };
        match self.kind {
            Kind::SteSign { clip_value } if scale.is_empty() => {
                write!(f, "{name}(clip_value={})", ClipDisplay(clip_value))
            }
            Kind::SteSign { clip_value } => {
                write!(f, "{name}(clip_value={}, {scale})", ClipDisplay(clip_value))
            }
            Kind::SteHeaviside {
                clip_value,
                unipolar: true,
            } => write!(
                f,
                "{name}(clip_value={}, unipolar=true)",
                ClipDisplay(clip_value)
            ),
            Kind::SteHeaviside { clip_value, .. } | Kind::MagnitudeAwareSign { clip_value } => {
                write!(f, "{name}(clip_value={})", ClipDisplay(clip_value))
            }
            Kind::ApproxSign if scale.is_empty() => f.write_str(name),
            Kind::ApproxSign => write!(f, "{name}({scale})"),
            Kind::SwishSign { beta } if scale.is_empty() => {
                write!(f, "{name}(beta={})", Float(beta))
            }
            Kind::SwishSign { beta } => write!(f, "{name}(beta={}, {scale})", Float(beta)),
            Kind::Ede { t } => write!(f, "{name}(t={})", Float(t)),
            Kind::RSign => f.write_str(name),
            Kind::ProgressiveSign { temperature } => {
                write!(f, "{name}(temperature={})", Float(temperature))
            }
            Kind::SteTern {
                threshold_value,
                ternary_weight_networks,
                clip_value,
            } => write!(
                f,
                "{name}(threshold_value={}, ternary_weight_networks={ternary_weight_networks}, clip_value={})",
                Float(threshold_value),
                ClipDisplay(clip_value)
            ),
            Kind::DoReFa { k_bit, mode } => {
                write!(f, "{name}(k_bit={k_bit}, mode={})", mode.as_str())
            }
            Kind::NoOp { precision } => write!(f, "{name}(precision={precision})"),
        }
    }
}
