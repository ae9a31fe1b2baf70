//! The estimators beyond larq: IR-Net's EDE, bitorch's ProgressiveSign, the
//! unipolar ste_heaviside and XNOR-Net's first-axis weight scale, against
//! their scalar definitions.

use lowbit::{Element, Error, Kind, Quantizer, WeightScale, bf16, f16, scalar};

fn q(spec: &str) -> Quantizer {
    spec.parse().unwrap()
}

/// Values over [−3, 3) with thresholds, signed zeros, infinities and NaN.
fn values(n: usize, seed: u32) -> Vec<f32> {
    const EDGES: [f32; 10] = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -0.5,
        f32::INFINITY,
        -f32::INFINITY,
        f32::NAN,
        1e-3,
    ];
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            if i < EDGES.len() {
                EDGES[i]
            } else {
                (s >> 8) as f32 / (1u32 << 24) as f32 * 6.0 - 3.0
            }
        })
        .collect()
}

fn same_bits(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// `q`'s backward over `x` (as `T`) equals `grad(x, dy)` element by element,
/// computed in f32 and rounded once to `T`.
fn backward_is<T: Element>(spec: &str, n: usize, grad: impl Fn(f32, f32) -> f32) {
    let x: Vec<T> = values(n, 1).into_iter().map(T::from_f32).collect();
    let dy: Vec<T> = values(n, 2).into_iter().map(T::from_f32).collect();
    let dx = q(spec).backward_vec(&x, &dy, &[n]).unwrap();
    for i in 0..n {
        let want = T::from_f32(grad(x[i].to_f32(), dy[i].to_f32())).to_f32();
        assert!(
            same_bits(dx[i].to_f32(), want),
            "{spec} {:?}: x={:e} dy={:e} gives {:e}, want {want:e}",
            T::DTYPE,
            x[i].to_f32(),
            dy[i].to_f32(),
            dx[i].to_f32()
        );
    }
}

/// `q`'s forward over `x` (as `T`) equals `f(x)` element by element,
/// computed in f32 and rounded once to `T`.
fn forward_is<T: Element>(spec: &str, n: usize, f: impl Fn(f32) -> f32) {
    let x: Vec<T> = values(n, 3).into_iter().map(T::from_f32).collect();
    let y = q(spec).forward_vec(&x, &[n]).unwrap();
    for i in 0..n {
        let want = T::from_f32(f(x[i].to_f32())).to_f32();
        assert!(
            same_bits(y[i].to_f32(), want),
            "{spec} {:?}: x={:e} gives {:e}, want {want:e}",
            T::DTYPE,
            x[i].to_f32(),
            y[i].to_f32()
        );
    }
}

// Across the CPU path's 32768-element chunks, not a multiple of anything.
const N: usize = 70_001;

#[test]
fn ede_backward_is_its_scalar_definition_in_every_dtype() {
    for spec in ["ede(t=0.001)", "ede(progress=0.5)", "ede(t=10)"] {
        let Kind::Ede { t } = q(spec).kind() else {
            unreachable!()
        };
        backward_is::<f32>(spec, N, |x, dy| scalar::ede_grad(x, dy, t));
        backward_is::<f16>(spec, N, |x, dy| scalar::ede_grad(x, dy, t));
        backward_is::<bf16>(spec, N, |x, dy| scalar::ede_grad(x, dy, t));
    }
}

#[test]
fn ede_follows_the_papers_schedule() {
    // t = 10^(−3 + 4·progress), k·t = max(t, 1).
    assert_eq!(q("ede").kind(), Kind::Ede { t: 1e-3 });
    assert_eq!(q("ede(progress=1)").kind(), Kind::Ede { t: 10.0 });
    assert_eq!(q("ede(progress=0.75)").kind(), Kind::Ede { t: 1.0 });
    assert_eq!(Quantizer::ede(0.5).unwrap(), q("ede(t=0.1)"));
    // At x = 0, tanh'(0) = 1: the gradient is dy·max(t, 1).
    let dx = q("ede(t=10)")
        .backward_vec(&[0.0f32], &[0.5], &[1])
        .unwrap();
    assert_eq!(dx, [5.0]);
    let dx = q("ede(t=0.001)")
        .backward_vec(&[0.0f32], &[0.5], &[1])
        .unwrap();
    assert_eq!(dx, [0.5]);
    // Early in training EDE is nearly the identity; late, nearly a spike.
    let early = q("ede").backward_vec(&[2.0f32], &[1.0], &[1]).unwrap()[0];
    let late = q("ede(progress=1)")
        .backward_vec(&[2.0f32], &[1.0], &[1])
        .unwrap()[0];
    assert!((early - 1.0).abs() < 1e-5 && late < 1e-6, "{early} {late}");
    // Forward is the binarizing sign.
    let y = q("ede").forward_vec(&[-0.0f32, -2.0, 3.0], &[3]).unwrap();
    assert_eq!(y, [1.0, -1.0, 1.0]);
}

#[test]
fn ede_spec_round_trips_and_rejects_bad_parameters() {
    let e = q("ede(progress=0.5)");
    assert_eq!(e.to_string().parse::<Quantizer>().unwrap(), e);
    for bad in [
        "ede(progress=1.5)",
        "ede(progress=-0.1)",
        "ede(t=0)",
        "ede(t=-1)",
        "ede(t=0.5, progress=0.5)",
        "ede(scale=first_axis)",
    ] {
        assert!(bad.parse::<Quantizer>().is_err(), "{bad} parsed");
    }
    assert!(Quantizer::ede(f32::NAN).is_err());
}

#[test]
fn progressive_sign_is_a_ramp_that_sharpens_into_the_sign() {
    // bitorch: hardtanh(x / max(1 − t, 1e−7)), the identity as its gradient.
    let x = [-3.0f32, -0.5, -0.0, 0.0, 0.125, 0.3, 2.0, f32::NAN];
    let at = |t: f32| {
        q(&format!("progressive_sign(temperature={t})"))
            .forward_vec(&x, &[8])
            .unwrap()
    };
    let y = at(0.0);
    assert_eq!(y[..7], [-1.0, -0.5, -0.0, 0.0, 0.125, 0.3, 1.0]);
    assert!(y[7].is_nan());
    assert_eq!(y[2].to_bits(), (-0.0f32).to_bits(), "−0 stays −0");
    // t = 0.75: x / 0.25.
    assert_eq!(at(0.75)[..7], [-1.0, -1.0, -0.0, 0.0, 0.5, 1.0, 1.0]);
    // t = 1: x / 1e−7, the sign but at exactly 0 (and within 1e−7 of it).
    assert_eq!(at(1.0)[..7], [-1.0, -1.0, -0.0, 0.0, 1.0, 1.0, 1.0]);
    let tiny = q("progressive_sign(temperature=1)")
        .forward_vec(&[5e-8f32], &[1])
        .unwrap();
    assert_eq!(tiny, [5e-8f32 / 1e-7f32]);

    for spec in ["progressive_sign", "progressive_sign(temperature=0.9)"] {
        let dy = [1.5f32, -2.0, f32::INFINITY, 0.25, -0.0, 3.0, 7.0, 1.0];
        assert_eq!(
            q(spec).backward_vec(&x, &dy, &[8]).unwrap(),
            dy,
            "{spec}: dx = dy"
        );
    }
}

#[test]
fn progressive_sign_follows_bitorchs_schedule_in_every_dtype() {
    // t = 1 − 4^(−10·progress): 0 at the start, 0.75 a tenth of the way.
    assert_eq!(
        q("progressive_sign").kind(),
        Kind::ProgressiveSign { temperature: 0.0 }
    );
    assert_eq!(
        Quantizer::progressive_sign(0.1).unwrap().kind(),
        Kind::ProgressiveSign { temperature: 0.75 }
    );
    let Kind::ProgressiveSign { temperature: late } = q("progressive_sign(progress=1)").kind()
    else {
        unreachable!()
    };
    assert!(late > 0.999_999 && late <= 1.0, "{late}");
    for spec in [
        "progressive_sign(progress=0.05)",
        "progressive_sign(temperature=1)",
    ] {
        let Kind::ProgressiveSign { temperature } = q(spec).kind() else {
            unreachable!()
        };
        let d = scalar::progressive_sign_divisor(temperature);
        forward_is::<f32>(spec, N, |x| scalar::progressive_sign(x, d));
        forward_is::<f16>(spec, N, |x| scalar::progressive_sign(x, d));
        forward_is::<bf16>(spec, N, |x| scalar::progressive_sign(x, d));
    }
    let p = q("progressive_sign(progress=0.5)");
    assert_eq!(p.to_string().parse::<Quantizer>().unwrap(), p);
    for bad in [
        "progressive_sign(temperature=1.5)",
        "progressive_sign(temperature=-0.1)",
        "progressive_sign(progress=2)",
        "progressive_sign(temperature=0.5, progress=0.5)",
        "progressive_sign(scale=first_axis)",
    ] {
        assert!(bad.parse::<Quantizer>().is_err(), "{bad} parsed");
    }
    assert!(Quantizer::progressive_sign(f32::NAN).is_err());
}

#[test]
fn unipolar_heaviside_passes_the_gradient_on_zero_to_clip() {
    let q = q("ste_heaviside(clip_value=0.5, unipolar=true)");
    assert_eq!(
        q.to_string(),
        "ste_heaviside(clip_value=0.5, unipolar=true)"
    );
    let x = [
        -0.5f32,
        -0.0,
        0.0,
        0.25,
        0.5,
        0.50001,
        f32::INFINITY,
        f32::NAN,
    ];
    let dx = q.backward_vec(&x, &[2.0; 8], &[8]).unwrap();
    assert_eq!(dx, [0.0, 2.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0]);
    // Forward is ste_heaviside's own.
    let y = q.forward_vec(&[-1.0f32, 0.0, 0.3], &[3]).unwrap();
    assert_eq!(y, [0.0, 0.0, 1.0]);
    // With no clip, everything from 0 up passes, +inf too; NaN does not.
    let none = "ste_heaviside(clip_value=none, unipolar=true)".parse::<Quantizer>();
    let dx = none
        .unwrap()
        .backward_vec(
            &[-1e-30f32, 0.0, 1e30, f32::INFINITY, f32::NAN],
            &[1.0; 5],
            &[5],
        )
        .unwrap();
    assert_eq!(dx, [0.0, 1.0, 1.0, 1.0, 0.0]);
}

#[test]
fn unipolar_heaviside_is_its_scalar_definition_in_every_dtype() {
    for (spec, clip) in [
        ("ste_heaviside(clip_value=0.1, unipolar=true)", Some(0.1f32)),
        ("ste_heaviside(clip_value=none, unipolar=true)", None),
    ] {
        // The clip is rounded to the tensor's type first, as for every clip.
        backward_is::<f32>(spec, N, |x, dy| scalar::ste_unipolar_grad(x, dy, clip));
        let c16 = clip.map(|c| f16::from_f32(c).to_f32());
        backward_is::<f16>(spec, N, |x, dy| scalar::ste_unipolar_grad(x, dy, c16));
        let cb = clip.map(|c| bf16::from_f32(c).to_f32());
        backward_is::<bf16>(spec, N, |x, dy| scalar::ste_unipolar_grad(x, dy, cb));
    }
    // The default stays larq's bipolar window.
    let dx = q("ste_heaviside")
        .backward_vec(&[-0.5f32], &[1.0], &[1])
        .unwrap();
    assert_eq!(dx, [1.0]);
}

/// Mean |x| of each first-axis slice, in f64, as the definition reads.
fn row_means(x: &[f32], rows: usize) -> Vec<f32> {
    let inner = x.len() / rows;
    x.chunks(inner)
        .map(|r| (r.iter().map(|v| f64::from(v.abs())).sum::<f64>() / inner as f64) as f32)
        .collect()
}

#[test]
fn first_axis_scale_multiplies_each_output_channel_by_its_mean_magnitude() {
    // [out=3, in=2, k=2]: α_o = mean |w| over the 4 weights of channel o.
    let w = [
        0.5f32, -1.5, 1.0, -1.0, //
        -3.0, 0.0, 1.0, 0.0, //
        0.25, 0.25, -0.25, 0.25,
    ];
    let shape = [3, 2, 2];
    let y = q("ste_sign(scale=first_axis)")
        .forward_vec(&w, &shape)
        .unwrap();
    assert_eq!(
        y,
        [
            1.0, -1.0, 1.0, -1.0, //
            -1.0, 1.0, 1.0, 1.0, //
            0.25, 0.25, -0.25, 0.25
        ]
    );
    // The gradient is the estimator's, of α_o·dy: α held constant.
    let dx = q("ste_sign(scale=first_axis)")
        .backward_vec(&w, &[2.0; 12], &shape)
        .unwrap();
    assert_eq!(
        dx,
        [
            2.0, 0.0, 2.0, 2.0, //
            0.0, 2.0, 2.0, 2.0, //
            0.5, 0.5, 0.5, 0.5
        ]
    );
}

fn scaled_is_its_definition<T: Element>(spec: &str, shape: &[usize]) {
    let q = q(spec);
    let n: usize = shape.iter().product();
    let x: Vec<T> = values(n, 3)
        .into_iter()
        .map(|v| if v.is_nan() { 0.75 } else { v.clamp(-3.0, 3.0) })
        .map(T::from_f32)
        .collect();
    let dy: Vec<T> = values(n, 4).into_iter().map(T::from_f32).collect();
    let xf: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
    let alpha = row_means(&xf, shape[0]);
    let inner = n / shape[0];
    let unscaled = Quantizer::new(q.kind()).unwrap();
    assert_eq!(unscaled.with_scale(WeightScale::FirstAxis).unwrap(), q);
    let y = q.forward_vec(&x, shape).unwrap();
    let dx = q.backward_vec(&x, &dy, shape).unwrap();
    for i in 0..n {
        let a = alpha[i / inner];
        let want_y = T::from_f32(a * scalar::sign(xf[i])).to_f32();
        // The unscaled quantizer's gradient of α·dy.
        let ady = [T::from_f32(a * dy[i].to_f32())];
        let want_dx = if T::from_f32(a * dy[i].to_f32()).to_f32() == a * dy[i].to_f32() {
            Some(unscaled.backward_vec(&x[i..i + 1], &ady, &[1]).unwrap()[0].to_f32())
        } else {
            None // α·dy not exact in T: only the f32 path below checks it
        };
        assert!(same_bits(y[i].to_f32(), want_y), "{spec} y[{i}]");
        if let Some(w) = want_dx {
            assert!(
                same_bits(dx[i].to_f32(), w),
                "{spec} {:?} dx[{i}] x={:e}: {:e} want {w:e}",
                T::DTYPE,
                xf[i],
                dx[i].to_f32()
            );
        }
    }
}

#[test]
fn first_axis_scale_is_its_definition_for_every_sign_quantizer() {
    for spec in [
        "ste_sign(scale=first_axis)",
        "ste_sign(clip_value=none, scale=first_axis)",
        "approx_sign(scale=first_axis)",
        "swish_sign(beta=2.0, scale=first_axis)",
    ] {
        // Few long rows across chunks, many short rows, one row.
        for shape in [&[7, 10_007][..], &[4099, 3, 3], &[1, 70_001]] {
            scaled_is_its_definition::<f32>(spec, shape);
            scaled_is_its_definition::<f16>(spec, shape);
            scaled_is_its_definition::<bf16>(spec, shape);
        }
    }
}

#[test]
fn first_axis_scale_handles_empty_and_scalar_tensors() {
    let q = q("ste_sign(scale=first_axis)");
    assert_eq!(q.forward_vec::<f32>(&[], &[0, 5]).unwrap(), [0f32; 0]);
    assert_eq!(q.forward_vec::<f32>(&[], &[5, 0]).unwrap(), [0f32; 0]);
    // A scalar is its own row: α = |x|.
    assert_eq!(q.forward_vec(&[-0.5f32], &[]).unwrap(), [-0.5]);
    // All-zero rows give 0 with gradient 0, like magnitude_aware_sign.
    let y = q.forward_vec(&[0.0f32; 4], &[2, 2]).unwrap();
    assert_eq!(y, [0.0; 4]);
}

#[test]
fn only_the_sign_family_takes_a_weight_scale() {
    for ok in [
        "ste_sign(scale=first_axis)",
        "approx_sign(scale=first_axis)",
        "swish_sign(scale=first_axis)",
        "ste_sign(scale=none)",
    ] {
        let parsed = q(ok);
        assert_eq!(
            parsed.to_string().parse::<Quantizer>().unwrap(),
            parsed,
            "{ok}"
        );
    }
    assert_eq!(q("ste_sign(scale=none)"), q("ste_sign"));
    assert_eq!(
        q("ste_sign(scale=none)").to_string(),
        "ste_sign(clip_value=1.0)"
    );
    for bad in [
        "magnitude_aware_sign(scale=first_axis)",
        "ste_tern(scale=first_axis)",
        "ste_heaviside(scale=first_axis)",
        "dorefa(scale=first_axis)",
        "ste_sign(scale=last_axis)",
        "ste_sign(scale=first_axis, scale=none)",
    ] {
        assert!(bad.parse::<Quantizer>().is_err(), "{bad} parsed");
    }
    let tern = q("ste_tern");
    assert!(matches!(
        tern.with_scale(WeightScale::FirstAxis),
        Err(Error::UnknownParameter { key, .. }) if key == "scale"
    ));
}

#[test]
fn masks_cover_unipolar_heaviside_and_refuse_what_a_bit_cannot_hold() {
    // Unipolar ste_heaviside is a window estimator: its mask is 0 ≤ x ≤ clip.
    let q = q("ste_heaviside(clip_value=0.5, unipolar=true)");
    let x = [-0.5f32, -0.0, 0.25, 0.5, 0.75, f32::NAN];
    let (mut y, mut mask) = ([0.0f32; 6], [0u32; 1]);
    q.forward_with_mask(&x, &[6], &mut y, &mut mask, &mut [])
        .unwrap();
    assert_eq!(mask, [0b001110]);
    let dy = [3.0f32; 6];
    let mut from_mask = [9.0f32; 6];
    q.backward_from_mask(&mask, &[], &dy, &[6], &mut from_mask)
        .unwrap();
    assert_eq!(from_mask, q.backward_vec(&x, &dy, &[6]).unwrap()[..]);
    // A scaled sign, EDE and rsign need more than a bit: typed errors, and
    // nothing written.
    for spec in ["ste_sign(scale=first_axis)", "ede", "rsign"] {
        let (mut y, mut mask) = ([7.0f32; 4], [7u32; 1]);
        let e = q_err(spec, &mut y, &mut mask);
        assert!(matches!(e, Error::NotMaskable { .. }), "{spec}: {e}");
        assert_eq!((y, mask), ([7.0; 4], [7]), "{spec}");
    }
}

fn q_err(spec: &str, y: &mut [f32; 4], mask: &mut [u32; 1]) -> Error {
    q(spec)
        .forward_with_mask(&[0.5f32; 4], &[2, 2], y, mask, &mut [])
        .unwrap_err()
}
