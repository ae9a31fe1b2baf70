//! Property tests: over random shapes (lengths that are not multiples of the
//! parallel chunk), random parameters and values piled up at every threshold,
//! the parallel CPU path equals the scalar definition, outputs hold only the
//! values each quantizer can produce, and gradients are zero exactly where the
//! estimator says.

use lowbit::{DorefaMode, Element, Kind, Quantizer, bf16, f16, scalar};
use proptest::prelude::*;

/// Values that sit on, and one step either side of, every threshold the
/// quantizers test, plus non-finite values and plain random ones.
fn value() -> impl Strategy<Value = f32> {
    let edges = prop::sample::select(vec![
        0.0f32,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -0.5,
        0.1,
        -0.1,
        0.05,
        -0.05,
        0.2,
        -0.2,
        0.3,
        -0.3,
        0.75,
        -0.75,
        1.0 / 3.0,
        2.0,
        -2.0,
    ]);
    prop_oneof![
        6 => -3.0f32..3.0,
        2 => (edges, -2i32..=2).prop_map(|(v, ulps)| step(v, ulps)),
        1 => prop::sample::select(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30]),
    ]
}

/// `v` moved by `ulps` representable f32 steps.
fn step(v: f32, ulps: i32) -> f32 {
    let mut v = v;
    for _ in 0..ulps.abs() {
        v = if ulps > 0 { v.next_up() } else { v.next_down() };
    }
    v
}

fn clip() -> impl Strategy<Value = Option<f32>> {
    prop_oneof![
        Just(None),
        Just(Some(1.0)),
        Just(Some(0.5)),
        (0.05f32..3.0f32).prop_map(Some)
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        clip().prop_map(|clip_value| Kind::SteSign { clip_value }),
        Just(Kind::ApproxSign),
        (0.5f32..20.0).prop_map(|beta| Kind::SwishSign { beta }),
        (clip(), any::<bool>()).prop_map(|(clip_value, unipolar)| Kind::SteHeaviside {
            clip_value,
            unipolar
        }),
        (1e-3f32..10.0).prop_map(|t| Kind::Ede { t }),
        clip().prop_map(|clip_value| Kind::MagnitudeAwareSign { clip_value }),
        (
            prop_oneof![Just(0.1f32), Just(0.05), Just(0.0), 0.0f32..1.0],
            any::<bool>(),
            clip()
        )
            .prop_map(|(threshold_value, ternary_weight_networks, clip_value)| {
                Kind::SteTern {
                    threshold_value,
                    ternary_weight_networks,
                    clip_value,
                }
            }),
        (
            1u32..=24,
            prop_oneof![Just(DorefaMode::Activations), Just(DorefaMode::Weights)]
        )
            .prop_map(|(k_bit, mode)| Kind::DoReFa { k_bit, mode }),
        (1u32..=32).prop_map(|precision| Kind::NoOp { precision }),
        prop_oneof![Just(0.0f32), Just(1.0), Just(0.75), 0.0f32..=1.0]
            .prop_map(|temperature| Kind::ProgressiveSign { temperature }),
    ]
}

/// Shapes of one to three axes; some are longer than one parallel chunk
/// (32768 elements) and none needs to be a multiple of anything.
fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        4 => prop::collection::vec(1usize..12, 1..=3),
        2 => (1usize..400).prop_map(|n| vec![n]),
        1 => (30_000usize..70_000).prop_map(|n| vec![n]),
        1 => (1usize..8, 5_000usize..20_000).prop_map(|(r, c)| vec![r, c]),
        1 => (2_000usize..9_000, 1usize..9).prop_map(|(r, c)| vec![r, c]),
    ]
}

fn tensor() -> impl Strategy<Value = (Vec<usize>, Vec<f32>, Vec<f32>)> {
    shape().prop_flat_map(|shape| {
        let n = shape.iter().product::<usize>();
        (
            Just(shape),
            prop::collection::vec(value(), n),
            prop::collection::vec(-2.0f32..2.0, n),
        )
    })
}

/// Per-element parameters after the reduction, computed the plain way:
/// sequential sums, one element at a time.
struct Reference {
    kind: Kind,
    /// TWN threshold or the fixed one, DoReFa's max|tanh|, as the element sees it.
    value: f32,
    scales: Vec<f32>,
}

impl Reference {
    fn new<T: Element>(kind: Kind, x: &[f32], channels: usize) -> Self {
        let mut value = 0.0;
        let mut scales = Vec::new();
        match kind {
            Kind::SteTern {
                threshold_value,
                ternary_weight_networks,
                ..
            } => {
                value = if ternary_weight_networks {
                    let sum: f64 = x.iter().map(|v| f64::from(v.abs())).sum();
                    scalar::twn_threshold(sum, x.len())
                } else {
                    threshold_value
                };
                value = T::round_f32(value);
            }
            Kind::DoReFa {
                mode: DorefaMode::Weights,
                ..
            } => {
                value = x
                    .iter()
                    .fold(0.0, |m, &v| scalar::nan_max(m, scalar::tanh(v).abs()));
            }
            Kind::MagnitudeAwareSign { .. } => {
                let rows = x.len() / channels;
                scales = (0..channels)
                    .map(|c| {
                        let sum: f64 = (0..rows)
                            .map(|r| f64::from(x[r * channels + c].abs()))
                            .sum();
                        T::round_f32(scalar::mean_abs(sum, rows))
                    })
                    .collect();
            }
            _ => {}
        }
        Reference {
            kind,
            value,
            scales,
        }
    }

    fn forward(&self, x: f32, i: usize) -> f32 {
        match self.kind {
            Kind::SteSign { .. } | Kind::ApproxSign | Kind::SwishSign { .. } | Kind::Ede { .. } => {
                scalar::sign(x)
            }
            Kind::SteHeaviside { .. } => scalar::heaviside(x),
            Kind::MagnitudeAwareSign { .. } => {
                scalar::magnitude_aware_sign(x, self.scales[i % self.scales.len()])
            }
            Kind::SteTern { .. } => scalar::ternarize(x, self.value),
            Kind::DoReFa { k_bit, mode } => {
                let n = scalar::dorefa_levels(k_bit);
                match mode {
                    DorefaMode::Activations => scalar::dorefa_quantize(x, n),
                    DorefaMode::Weights => scalar::dorefa_weights(x, self.value, n),
                }
            }
            Kind::NoOp { .. } => x,
            Kind::ProgressiveSign { temperature } => {
                scalar::progressive_sign(x, scalar::progressive_sign_divisor(temperature))
            }
            Kind::RSign => unreachable!("kind() has no rsign; tests/rsign.rs covers it"),
        }
    }

    fn backward<T: Element>(&self, x: f32, dy: f32, i: usize) -> f32 {
        let clip = |c: Option<f32>| c.map(T::round_f32);
        match self.kind {
            Kind::SteSign { clip_value }
            | Kind::SteHeaviside {
                clip_value,
                unipolar: false,
            }
            | Kind::SteTern { clip_value, .. } => scalar::ste_grad(x, dy, clip(clip_value)),
            Kind::SteHeaviside {
                clip_value,
                unipolar: true,
            } => scalar::ste_unipolar_grad(x, dy, clip(clip_value)),
            Kind::Ede { t } => scalar::ede_grad(x, dy, t),
            Kind::ApproxSign => scalar::approx_sign_grad(x, dy),
            Kind::SwishSign { beta } => scalar::swish_sign_grad(x, dy, beta),
            Kind::MagnitudeAwareSign { clip_value } => scalar::magnitude_aware_sign_grad(
                x,
                dy,
                self.scales[i % self.scales.len()],
                clip(clip_value),
            ),
            Kind::DoReFa { mode, .. } => match mode {
                DorefaMode::Activations => scalar::dorefa_activations_grad(x, dy),
                DorefaMode::Weights => scalar::dorefa_weights_grad(x, dy, self.value),
            },
            Kind::NoOp { .. } | Kind::ProgressiveSign { .. } => dy,
            Kind::RSign => unreachable!("kind() has no rsign; tests/rsign.rs covers it"),
        }
    }
}

fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Reductions add in another order than the plain reference, so a reduced
/// value may differ in its last bit; everything downstream of it is compared
/// with that allowance, everything else bit for bit.
fn close(got: f32, want: f32) -> bool {
    same(got, want) || (got - want).abs() <= 4.0 * f32::EPSILON * want.abs()
}

/// TWN outputs may flip for elements within rounding of the threshold.
fn near_twn_threshold(kind: Kind, x: f32, threshold: f32) -> bool {
    matches!(
        kind,
        Kind::SteTern {
            ternary_weight_networks: true,
            ..
        }
    ) && (x.abs() - threshold).abs() <= 4.0 * f32::EPSILON * threshold
}

fn check<T: Element>(
    kind: Kind,
    shape: &[usize],
    x: &[f32],
    dy: &[f32],
) -> Result<(), TestCaseError> {
    let q = Quantizer::new(kind).unwrap();
    // The reference sees exactly the values the tensor stores.
    let x: Vec<T> = x.iter().map(|&v| T::from_f32(v)).collect();
    let dy: Vec<T> = dy.iter().map(|&v| T::from_f32(v)).collect();
    let xf: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
    let dyf: Vec<f32> = dy.iter().map(|v| v.to_f32()).collect();
    let channels = *shape.last().unwrap();
    let reference = Reference::new::<T>(kind, &xf, channels);

    let y = q.forward_vec(&x, shape).unwrap();
    let dx = q.backward_vec(&x, &dy, shape).unwrap();
    let reduced = matches!(
        kind,
        Kind::MagnitudeAwareSign { .. }
            | Kind::SteTern {
                ternary_weight_networks: true,
                ..
            }
    );
    for i in 0..x.len() {
        let (xi, dyi) = (xf[i], dyf[i]);
        let want_y = T::from_f32(reference.forward(xi, i)).to_f32();
        let want_dx = T::from_f32(reference.backward::<T>(xi, dyi, i)).to_f32();
        let (got_y, got_dx) = (y[i].to_f32(), dx[i].to_f32());
        if near_twn_threshold(kind, xi, reference.value) {
            continue;
        }
        let ok = |g, w| if reduced { close(g, w) } else { same(g, w) };
        prop_assert!(
            ok(got_y, want_y),
            "{q} {:?} y[{i}] x={xi:e}: got {got_y:e} want {want_y:e}",
            T::DTYPE
        );
        prop_assert!(
            ok(got_dx, want_dx),
            "{q} {:?} dx[{i}] x={xi:e} dy={dyi:e}: got {got_dx:e} want {want_dx:e}",
            T::DTYPE
        );
        // A NaN elsewhere in its reduction group makes a finite x's output
        // NaN; the comparison above has already checked that case.
        if xi.is_nan() || !want_y.is_nan() {
            check_range::<T>(kind, xi, got_y)?;
        }
        check_zero_gradient::<T>(kind, xi, dyi, got_dx)?;
    }
    Ok(())
}

/// The output holds only the values the quantizer can produce.
fn check_range<T: Element>(kind: Kind, x: f32, y: f32) -> Result<(), TestCaseError> {
    if x.is_nan() {
        // NaN in, NaN out, for every quantizer.
        prop_assert!(y.is_nan(), "{kind:?}: NaN gave {y:e}");
        return Ok(());
    }
    let ok = match kind {
        Kind::SteSign { .. } | Kind::ApproxSign | Kind::SwishSign { .. } | Kind::Ede { .. } => {
            y == 1.0 || y == -1.0
        }
        Kind::SteHeaviside { .. } => y == 0.0 || y == 1.0,
        Kind::SteTern { .. } => y == -1.0 || y == 0.0 || y == 1.0 || y.is_nan(),
        Kind::DoReFa { k_bit, mode } => {
            // The nearest level i, and the value level i takes once stored.
            let n = scalar::dorefa_levels(k_bit);
            let i = match mode {
                DorefaMode::Activations => y * n,
                DorefaMode::Weights => (y + 1.0) / 2.0 * n,
            }
            .round();
            let level = match mode {
                DorefaMode::Activations => i / n,
                DorefaMode::Weights => 2.0 * (i / n) - 1.0,
            };
            (0.0..=n).contains(&i) && y == T::round_f32(level)
        }
        Kind::MagnitudeAwareSign { .. } => y.is_nan() || (y >= 0.0) == (x >= 0.0 || y == 0.0),
        Kind::NoOp { .. } => true,
        // The ramp clipped to [−1, 1]; at temperature 1 it is ±1 but near 0.
        Kind::ProgressiveSign { .. } => (-1.0..=1.0).contains(&y),
        Kind::RSign => unreachable!("kind() has no rsign; tests/rsign.rs covers it"),
    };
    prop_assert!(ok, "{kind:?}: x={x:e} gave y={y:e}");
    Ok(())
}

/// What the estimator says of one element's gradient.
enum Expect {
    /// Outside the window: exactly `+0`, whatever `dy` is.
    PlusZero,
    /// Inside a straight-through window: `dy` itself.
    Dy,
    /// A smooth estimator's value, checked against the reference only.
    Other,
}

/// Gradients are zero exactly where the estimator says so, and pass `dy`
/// unchanged where a straight-through estimator says so.
fn check_zero_gradient<T: Element>(
    kind: Kind,
    x: f32,
    dy: f32,
    dx: f32,
) -> Result<(), TestCaseError> {
    let window = |clip: Option<f32>| match clip {
        None => Expect::Dy,
        Some(c) if x.abs() <= T::round_f32(c) => Expect::Dy,
        Some(_) => Expect::PlusZero,
    };
    let expect = match kind {
        Kind::SteSign { clip_value }
        | Kind::SteHeaviside {
            clip_value,
            unipolar: false,
        }
        | Kind::SteTern { clip_value, .. } => window(clip_value),
        Kind::SteHeaviside {
            clip_value,
            unipolar: true,
        } => {
            let below_clip = clip_value.is_none_or(|c| x <= T::round_f32(c));
            if x >= 0.0 && below_clip {
                Expect::Dy
            } else {
                Expect::PlusZero
            }
        }
        Kind::MagnitudeAwareSign { clip_value } => match window(clip_value) {
            Expect::Dy => Expect::Other,
            e => e,
        },
        // Outside |x| ≤ 1, NaN included.
        Kind::ApproxSign if x.abs() > 1.0 || x.is_nan() => Expect::PlusZero,
        Kind::DoReFa {
            mode: DorefaMode::Activations,
            ..
        } => {
            if (0.0..=1.0).contains(&x) {
                Expect::Dy
            } else {
                Expect::PlusZero
            }
        }
        Kind::NoOp { .. } | Kind::ProgressiveSign { .. } => Expect::Dy,
        _ => Expect::Other,
    };
    match expect {
        Expect::PlusZero => prop_assert!(
            dx.to_bits() == 0,
            "{kind:?}: x={x:e}: gradient {dx:e} must be +0"
        ),
        Expect::Dy => prop_assert!(
            same(dx, dy),
            "{kind:?}: x={x:e}: gradient {dx:e} must be dy={dy:e}"
        ),
        Expect::Other => {}
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn parallel_path_equals_scalar_definition_f32(kind in kind(), (shape, x, dy) in tensor()) {
        check::<f32>(kind, &shape, &x, &dy)?;
    }

    #[test]
    fn parallel_path_equals_scalar_definition_f16(kind in kind(), (shape, x, dy) in tensor()) {
        check::<f16>(kind, &shape, &x, &dy)?;
    }

    #[test]
    fn parallel_path_equals_scalar_definition_bf16(kind in kind(), (shape, x, dy) in tensor()) {
        check::<bf16>(kind, &shape, &x, &dy)?;
    }

    #[test]
    fn results_do_not_depend_on_the_run(kind in kind(), (shape, x, dy) in tensor()) {
        let q = Quantizer::new(kind).unwrap();
        let first = (q.forward_vec(&x, &shape).unwrap(), q.backward_vec(&x, &dy, &shape).unwrap());
        let again = (q.forward_vec(&x, &shape).unwrap(), q.backward_vec(&x, &dy, &shape).unwrap());
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&first.0), bits(&again.0));
        prop_assert_eq!(bits(&first.1), bits(&again.1));
    }
}
