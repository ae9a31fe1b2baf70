//! The edge cases larq's reference pins down beyond the golden file:
//! all-zero tensors, NaN inside a reduction, half-precision thresholds.

use lowbit::{Quantizer, f16};

fn q(spec: &str) -> Quantizer {
    spec.parse().unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

#[test]
fn all_zero_tensors_match_larq() {
    let x = [0.0f32; 6];
    let dy = [0.25f32; 6];
    let shape = [2, 3];

    // magnitude_aware_sign: scale 0, so output 0 and gradient 0.
    let mas = q("magnitude_aware_sign");
    assert_eq!(mas.forward_vec(&x, &shape).unwrap(), [0.0; 6]);
    assert_eq!(mas.backward_vec(&x, &dy, &shape).unwrap(), [0.0; 6]);

    // TWN: Δ = 0, output 0, straight-through gradient inside the clip.
    let twn = q("ste_tern(ternary_weight_networks=true)");
    assert_eq!(twn.forward_vec(&x, &shape).unwrap(), [0.0; 6]);
    assert_eq!(twn.backward_vec(&x, &dy, &shape).unwrap(), dy);

    // DoReFa weights: 0/0 → 0 (divide_no_nan), so every weight is quantize(0.5).
    for (k, want) in [
        (1, -1.0f32),
        (2, 0.333_333_37),
        (3, 2.0 * (4.0f32 / 7.0) - 1.0),
    ] {
        let w = q(&format!("dorefa(k_bit={k}, mode=weights)"));
        assert_eq!(
            bits(&w.forward_vec(&x, &shape).unwrap()),
            bits(&[want; 6]),
            "k_bit={k}"
        );
        assert_eq!(
            w.backward_vec(&x, &dy, &shape).unwrap(),
            [0.0; 6],
            "k_bit={k}"
        );
    }
}

#[test]
fn a_nan_makes_its_whole_reduction_group_nan() {
    // Channel 1 holds a NaN: its scale is NaN, the other channels are untouched.
    let x = [0.5f32, f32::NAN, -2.0, -1.5, 0.25, 1.0];
    let dy = [1.0f32; 6];
    let mas = q("magnitude_aware_sign(clip_value=none)");
    let y = mas.forward_vec(&x, &[2, 3]).unwrap();
    assert_eq!([y[0], y[2], y[3], y[5]], [1.0, -1.5, -1.0, 1.5]);
    assert!(y[1].is_nan() && y[4].is_nan());
    let dx = mas.backward_vec(&x, &dy, &[2, 3]).unwrap();
    assert_eq!([dx[0], dx[2], dx[3], dx[5]], [1.0, 1.5, 1.0, 1.5]);
    assert!(dx[1].is_nan() && dx[4].is_nan());

    // TWN and DoReFa weights reduce over the whole tensor.
    let y = q("ste_tern(ternary_weight_networks=true)")
        .forward_vec(&x, &[6])
        .unwrap();
    assert!(y.iter().all(|v| v.is_nan()));
    let w = q("dorefa(mode=weights)");
    assert!(w.forward_vec(&x, &[6]).unwrap().iter().all(|v| v.is_nan()));
    assert!(
        w.backward_vec(&x, &dy, &[6])
            .unwrap()
            .iter()
            .all(|v| v.is_nan())
    );
}

#[test]
fn half_thresholds_are_the_values_the_tensor_can_hold() {
    // 0.1 is not an f16; larq casts the threshold to the tensor's type, so
    // x = f16(0.1) sits exactly on it and maps to ±1.
    let t = f16::from_f32(0.1);
    let x = [t, -t, f16::from_f32(0.0999)];
    let y: Vec<f32> = q("ste_tern")
        .forward_vec(&x, &[3])
        .unwrap()
        .iter()
        .map(|v| v.to_f32())
        .collect();
    assert_eq!(y, [1.0, -1.0, 0.0]);

    let c = f16::from_f32(0.3);
    let dx: Vec<f32> = q("ste_sign(clip_value=0.3)")
        .backward_vec(&[c, -c], &[f16::ONE, f16::ONE], &[2])
        .unwrap()
        .iter()
        .map(|v| v.to_f32())
        .collect();
    assert_eq!(dx, [1.0, 1.0]);
}

#[test]
fn noop_copies_bits() {
    let x = [f32::from_bits(0x7fc0_1234), -0.0, 3.5];
    let y = q("noop(precision=2)").forward_vec(&x, &[3]).unwrap();
    assert_eq!(bits(&y), bits(&x));
}
