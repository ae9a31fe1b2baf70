//! `rsign` (ReActNet's RSign, arXiv:2003.03488) on the CPU: `y = sign(x − α_c)`,
//! `dx` = ApproxSign's gradient at `x − α_c`, `dα_c = −Σ dx`. The parallel
//! path against the scalar definition bit for bit, dα against a plain `f64`
//! sum, the edges, half precision, and the error paths.

use lowbit::{Backend, DType, Device, Element, Error, Kind, Quantizer, bf16, f16, scalar};
use proptest::prelude::*;

fn rsign() -> Quantizer {
    "rsign".parse().unwrap()
}

fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Values over [-3, 3) from a fixed seed, with the edges mixed in when
/// `edges` (NaN, ±inf, ±0, ±1, ...).
fn values(n: usize, seed: u32, edges: bool) -> Vec<f32> {
    const EDGES: [f32; 10] = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -0.5,
        2.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ];
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            if edges && s.is_multiple_of(37) {
                EDGES[(s >> 8) as usize % EDGES.len()]
            } else {
                (s >> 8) as f32 / (1u32 << 24) as f32 * 6.0 - 3.0
            }
        })
        .collect()
}

fn typed<T: Element>(v: &[f32]) -> Vec<T> {
    v.iter().map(|&v| T::from_f32(v)).collect()
}

fn widened<T: Element>(v: &[T]) -> Vec<f32> {
    v.iter().map(|v| v.to_f32()).collect()
}

/// One unit in the last place of `T` at 1.0.
fn epsilon<T: Element>() -> f64 {
    match T::DTYPE {
        DType::F32 => f64::from(f32::EPSILON),
        DType::F16 => 2f64.powi(-10),
        DType::BF16 => 2f64.powi(-7),
    }
}

/// Runs forward and backward on `shape` and checks them against the scalar
/// definition: `y` and `dx` bit for bit, `dα` against a sequential `f64` sum
/// of `dx` (the library's partition adds in another order, so within a unit
/// of `T` plus the `f64` sums' own rounding).
fn check<T: Element>(shape: &[usize], x: &[f32], alpha: &[f32], dy: &[f32]) -> Result<(), String> {
    let q = rsign();
    let (x, alpha, dy) = (typed::<T>(x), typed::<T>(alpha), typed::<T>(dy));
    let channels = alpha.len();
    let mut y = vec![T::default(); x.len()];
    let mut dx = vec![T::default(); x.len()];
    let mut dalpha = vec![T::default(); channels];
    q.forward_with_thresholds(&x, &alpha, shape, &mut y)
        .map_err(|e| e.to_string())?;
    q.backward_with_thresholds(&x, &alpha, &dy, shape, &mut dx, &mut dalpha)
        .map_err(|e| e.to_string())?;

    let mut sums = vec![0f64; channels];
    let mut sum_abs = vec![0f64; channels];
    for i in 0..x.len() {
        let c = i % channels;
        let (xi, ai, dyi) = (x[i].to_f32(), alpha[c].to_f32(), dy[i].to_f32());
        let want_y = T::from_f32(scalar::rsign(xi, ai)).to_f32();
        let want_dx = T::from_f32(scalar::rsign_grad(xi, dyi, ai)).to_f32();
        let (got_y, got_dx) = (y[i].to_f32(), dx[i].to_f32());
        if !same(got_y, want_y) || !same(got_dx, want_dx) {
            return Err(format!(
                "{:?} {shape:?} [{i}] x={xi:e} α={ai:e} dy={dyi:e}: y {got_y:e} (want {want_y:e}), dx {got_dx:e} (want {want_dx:e})",
                T::DTYPE
            ));
        }
        sums[c] += f64::from(got_dx);
        sum_abs[c] += f64::from(got_dx).abs();
    }
    for c in 0..channels {
        let want = T::from_f32(scalar::rsign_dalpha(sums[c])).to_f32();
        let got = dalpha[c].to_f32();
        let tol = epsilon::<T>() * f64::from(want).abs() + 1e-10 * sum_abs[c];
        if !(same(got, want) || (f64::from(got) - f64::from(want)).abs() <= tol) {
            return Err(format!(
                "{:?} {shape:?} dα[{c}] = {got:e}, the plain sum gives {want:e}",
                T::DTYPE
            ));
        }
    }
    Ok(())
}

fn check_all_types(shape: &[usize], seed: u32) {
    let n: usize = shape.iter().product();
    let channels = shape.last().copied().unwrap_or(1);
    let x = values(n, seed, true);
    let alpha = values(channels, seed + 1, false);
    let dy = values(n, seed + 2, false);
    check::<f32>(shape, &x, &alpha, &dy).unwrap();
    check::<f16>(shape, &x, &alpha, &dy).unwrap();
    check::<bf16>(shape, &x, &alpha, &dy).unwrap();
}

#[test]
fn equals_the_scalar_definition_for_one_channel_and_many() {
    for (seed, shape) in [
        vec![],
        vec![1],
        vec![7],
        vec![5, 1],
        vec![2, 3, 5],
        vec![1000, 64],
        vec![40, 3000],
        vec![70_001],
        vec![3, 11_000],
    ]
    .iter()
    .enumerate()
    {
        check_all_types(shape, seed as u32 * 3);
    }
}

#[test]
fn equals_the_scalar_definition_across_chunk_boundaries() {
    // The parallel path works in chunks of 2^15 elements and dα in slabs of
    // up to 2^16; lengths on and around both boundaries.
    for (seed, shape) in [
        [32_767, 1],
        [32_768, 1],
        [32_769, 1],
        [10_923, 3],
        [65_536, 1],
        [65_537, 1],
        [2 * 65_536 + 5, 1],
        [16_385, 4],
    ]
    .iter()
    .enumerate()
    {
        check_all_types(shape, 100 + seed as u32);
    }
}

#[test]
fn dalpha_is_exact_where_the_sum_is() {
    // Multiples of 1/8 in x and α and dy = ±1 or ±1/2: every dx is a short
    // binary fraction and every partial sum exact, so any order gives the
    // same bits.
    for (rows, channels) in [(100_000, 1), (4096, 16), (50, 3000), (3, 5)] {
        let n = rows * channels;
        let x: Vec<f32> = (0..n).map(|i| ((i * 7) % 33) as f32 / 8.0 - 2.0).collect();
        let alpha: Vec<f32> = (0..channels).map(|c| (c % 9) as f32 / 8.0 - 0.5).collect();
        let dy: Vec<f32> = (0..n)
            .map(|i| [1.0, -0.5, 0.5, -1.0][i % 4] * if i % 3 == 0 { 1.0 } else { -1.0 })
            .collect();
        let q = rsign();
        let shape = [rows, channels];
        let mut dx = vec![0f32; n];
        let mut dalpha = vec![0f32; channels];
        q.backward_with_thresholds(&x, &alpha, &dy, &shape, &mut dx, &mut dalpha)
            .unwrap();
        for c in 0..channels {
            let sum: f64 = (0..rows).map(|r| f64::from(dx[r * channels + c])).sum();
            let want = scalar::rsign_dalpha(sum);
            assert_eq!(dalpha[c].to_bits(), want.to_bits(), "{shape:?} [{c}]");
        }
        // bf16 holds these values too: the same sums in another type.
        let (xb, ab, dyb) = (typed::<bf16>(&x), typed::<bf16>(&alpha), typed::<bf16>(&dy));
        let mut dxb = vec![bf16::ZERO; n];
        let mut dab = vec![bf16::ZERO; channels];
        q.backward_with_thresholds(&xb, &ab, &dyb, &shape, &mut dxb, &mut dab)
            .unwrap();
        assert_eq!(widened(&dxb), dx);
        let want: Vec<bf16> = typed(&dalpha);
        assert_eq!(dab, want, "{shape:?}");
    }
}

#[test]
fn zero_thresholds_give_approx_signs_outputs() {
    let approx: Quantizer = "approx_sign".parse().unwrap();
    let shape = [300, 7];
    let n = 2100;
    let x = values(n, 11, true);
    let dy = values(n, 12, true);
    let alpha = [0.0f32; 7];
    let (mut y, mut dx, mut dalpha) = (vec![0f32; n], vec![0f32; n], [0f32; 7]);
    rsign()
        .forward_with_thresholds(&x, &alpha, &shape, &mut y)
        .unwrap();
    rsign()
        .backward_with_thresholds(&x, &alpha, &dy, &shape, &mut dx, &mut dalpha)
        .unwrap();
    let want_y = approx.forward_vec(&x, &shape).unwrap();
    let want_dx = approx.backward_vec(&x, &dy, &shape).unwrap();
    for i in 0..n {
        assert!(same(y[i], want_y[i]), "y[{i}]: {} vs {}", y[i], want_y[i]);
        assert!(
            same(dx[i], want_dx[i]),
            "dx[{i}]: {} vs {}",
            dx[i],
            want_dx[i]
        );
    }
    check::<f32>(&shape, &x, &alpha, &dy).unwrap();
}

#[test]
fn signs_at_zero_nan_and_infinity() {
    // One row: every element is its own channel.
    let x = [
        0.25,
        -0.0,
        0.0,
        f32::NAN,
        0.5,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::INFINITY,
        0.5,
    ];
    let alpha = [
        0.25,
        0.0,
        -0.0,
        0.0,
        f32::NAN,
        1e30,
        1e30,
        f32::INFINITY,
        0.0,
    ];
    let dy = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, f32::NAN];
    let q = rsign();
    let mut y = [0f32; 9];
    q.forward_with_thresholds(&x, &alpha, &[9], &mut y).unwrap();
    // sign(+0) = +1 at x = α, whatever the zeros' signs; NaN in x or α, or
    // inf − inf, is NaN; inf − 1e30 is still inf.
    let want = [1.0, 1.0, 1.0, f32::NAN, f32::NAN, 1.0, -1.0, f32::NAN, 1.0];
    for i in 0..9 {
        assert!(same(y[i], want[i]), "y[{i}] = {}", y[i]);
    }
    let (mut dx, mut dalpha) = ([0f32; 9], [7f32; 9]);
    q.backward_with_thresholds(&x, &alpha, &dy, &[9], &mut dx, &mut dalpha)
        .unwrap();
    // u = 0 gives 2·dy; a NaN or infinite u lies outside the window (+0);
    // a NaN dy inside it is NaN, and so is its dα.
    let want = [2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, f32::NAN];
    for i in 0..9 {
        assert!(same(dx[i], want[i]), "dx[{i}] = {}", dx[i]);
        let want = if want[i] == 0.0 { 0.0 } else { -want[i] };
        assert!(same(dalpha[i], want), "dα[{i}] = {}", dalpha[i]);
    }
    // A channel outside the window everywhere has dα = +0, not −0.
    assert_eq!(dalpha[3].to_bits(), 0);
}

#[test]
fn half_precision_subtracts_in_f32() {
    // x − α = 1 − 2^-11 is an f32, but rounds to 1 in bf16: lowbit computes
    // it in f32, so the gradient is (1 − u)·2 = 2^-10, not the 0 a bf16
    // subtraction would give.
    let q = rsign();
    let x = [bf16::ONE];
    let alpha = [bf16::from_f32(2f32.powi(-11))];
    let mut dx = [bf16::ZERO];
    let mut dalpha = [bf16::ZERO];
    q.backward_with_thresholds(&x, &alpha, &[bf16::ONE], &[1], &mut dx, &mut dalpha)
        .unwrap();
    assert_eq!(dx[0].to_f32(), 2f32.powi(-10));
    assert_eq!(dalpha[0].to_f32(), -(2f32.powi(-10)));
    // The sign is always the exact difference's: the smallest f16 step.
    let x = [f16::from_bits(0x0001), f16::from_bits(0x0001)];
    let alpha = [f16::from_bits(0x0002), f16::from_bits(0x0001)];
    let mut y = [f16::ZERO; 2];
    q.forward_with_thresholds(&x, &alpha, &[2], &mut y).unwrap();
    assert_eq!(widened(&y), [-1.0, 1.0]);
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let shape = [70_000, 3];
    let n = 210_000;
    let x = values(n, 21, true);
    let alpha = values(3, 22, false);
    let dy = values(n, 23, false);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let (mut dx, mut dalpha) = (vec![0f32; n], [0f32; 3]);
            rsign()
                .backward_with_thresholds(&x, &alpha, &dy, &shape, &mut dx, &mut dalpha)
                .unwrap();
            (
                dx.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                dalpha.map(f32::to_bits),
            )
        })
    };
    let one = run(1);
    assert_eq!(one, run(3));
    assert_eq!(one, run(8));
}

#[test]
fn empty_tensors_write_a_zero_dalpha() {
    let q = rsign();
    // No rows, four channels: dα is an empty sum, +0.
    let mut dalpha = [7f32; 4];
    q.backward_with_thresholds::<f32>(&[], &[1.0; 4], &[], &[0, 4], &mut [], &mut dalpha)
        .unwrap();
    assert_eq!(dalpha.map(f32::to_bits), [0; 4]);
    q.forward_with_thresholds::<f32>(&[], &[1.0; 4], &[0, 4], &mut [])
        .unwrap();
    // No channels.
    q.backward_with_thresholds::<f32>(&[], &[], &[], &[3, 0], &mut [], &mut [])
        .unwrap();
    // A scalar is one channel.
    let mut y = [0f32];
    q.forward_with_thresholds(&[0.5f32], &[1.0], &[], &mut y)
        .unwrap();
    assert_eq!(y, [-1.0]);
}

const SENTINEL: f32 = 42.0;

#[test]
fn plain_calls_refuse_rsign_and_write_nothing() {
    let q = rsign();
    assert!(q.takes_thresholds());
    let x = [0.5f32; 4];
    let mut y = [SENTINEL; 4];
    let needs = Error::NeedsThresholds { quantizer: "rsign" };
    assert_eq!(q.forward(&x, &[4], &mut y), Err(needs.clone()));
    assert_eq!(q.backward(&x, &x, &[4], &mut y), Err(needs.clone()));
    assert_eq!(q.forward_vec(&x, &[4]), Err(needs.clone()));
    let cpu = Backend::new(Device::Cpu).unwrap();
    assert_eq!(cpu.forward(&q, &x, &[4], &mut y), Err(needs.clone()));
    assert_eq!(cpu.backward(&q, &x, &x, &[4], &mut y), Err(needs.clone()));
    assert_eq!(y, [SENTINEL; 4]);
    assert!(
        needs.to_string().contains("forward_with_thresholds"),
        "{needs}"
    );
    // Whatever the shape: the call is wrong before the buffers are.
    assert_eq!(q.forward(&x, &[5], &mut y), Err(needs));
}

#[test]
fn thresholds_are_refused_by_other_quantizers() {
    for name in Quantizer::NAMES {
        let spec = if *name == "noop" {
            "noop(precision=1)".to_string()
        } else {
            name.to_string()
        };
        let q: Quantizer = spec.parse().unwrap();
        assert_eq!(q.takes_thresholds(), *name == "rsign", "{name}");
        if q.takes_thresholds() {
            continue;
        }
        let mut y = [SENTINEL; 2];
        let mut dalpha = [SENTINEL; 2];
        let e = Error::TakesNoThresholds { quantizer: name };
        let x = [0.5f32; 2];
        assert_eq!(
            q.forward_with_thresholds(&x, &x, &[2], &mut y),
            Err(e.clone())
        );
        assert_eq!(
            q.backward_with_thresholds(&x, &x, &x, &[2], &mut y, &mut dalpha),
            Err(e)
        );
        assert_eq!((y, dalpha), ([SENTINEL; 2], [SENTINEL; 2]));
    }
}

#[test]
fn wrong_lengths_are_errors_and_leave_every_output_untouched() {
    let q = rsign();
    let cpu = Backend::new(Device::Cpu).unwrap();
    let x = [0.5f32; 6];
    let shape = [2, 3];
    let alpha_len = |len| Error::ThresholdLength {
        buffer: "alpha",
        channels: 3,
        len,
    };

    let mut y = [SENTINEL; 6];
    assert_eq!(
        q.forward_with_thresholds(&x, &[0.0; 2], &shape, &mut y),
        Err(alpha_len(2))
    );
    assert_eq!(
        cpu.forward_with_thresholds(&q, &x, &[0.0; 6], &shape, &mut y),
        Err(alpha_len(6))
    );
    let e = q
        .forward_with_thresholds(&x, &[0.0; 3], &shape, &mut y[..5])
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::ShapeMismatch {
                buffer: "y",
                len: 5,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(y, [SENTINEL; 6]);

    let mut dx = [SENTINEL; 6];
    let mut dalpha = [SENTINEL; 3];
    // (alpha, dy, dx's length, dα's length, the error)
    type Case<'a> = (&'a [f32], &'a [f32], usize, usize, Error);
    let cases: [Case; 4] = [
        (&[0.0; 4], &x, 6, 3, alpha_len(4)),
        (
            &[0.0; 3],
            &x,
            6,
            2,
            Error::ThresholdLength {
                buffer: "dalpha",
                channels: 3,
                len: 2,
            },
        ),
        (
            &[0.0; 3],
            &x[..5],
            6,
            3,
            Error::ShapeMismatch {
                shape: vec![2, 3],
                expected: 6,
                buffer: "dy",
                len: 5,
            },
        ),
        (
            &[0.0; 3],
            &x,
            4,
            3,
            Error::ShapeMismatch {
                shape: vec![2, 3],
                expected: 6,
                buffer: "dx",
                len: 4,
            },
        ),
    ];
    for (alpha, dy, dx_len, dalpha_len, want) in cases {
        let (dx, dalpha) = (&mut dx[..dx_len], &mut dalpha[..dalpha_len]);
        let got = q.backward_with_thresholds(&x, alpha, dy, &shape, dx, dalpha);
        assert_eq!(got, Err(want.clone()));
        let got = cpu.backward_with_thresholds(&q, &x, alpha, dy, &shape, dx, dalpha);
        assert_eq!(got, Err(want));
    }
    assert_eq!((dx, dalpha), ([SENTINEL; 6], [SENTINEL; 3]));
    let e = alpha_len(2).to_string();
    assert!(e.contains("alpha") && e.contains("channel"), "{e}");
}

#[test]
fn the_spec_round_trips() {
    for spec in ["rsign", "rsign()", " rsign ( ) "] {
        let q: Quantizer = spec.parse().unwrap();
        assert_eq!(q.kind(), Kind::RSign);
        assert_eq!(q.name(), "rsign");
        assert_eq!(q.to_string(), "rsign");
        assert_eq!(q.to_string().parse::<Quantizer>().unwrap(), q);
    }
    assert_eq!(Quantizer::new(Kind::RSign).unwrap().to_string(), "rsign");
    assert!(Quantizer::NAMES.contains(&"rsign"));
    assert!(matches!(
        "rsign(alpha=0.5)".parse::<Quantizer>(),
        Err(Error::UnknownParameter {
            quantizer: "rsign",
            takes: &[],
            ..
        })
    ));
}

fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        4 => prop::collection::vec(1usize..12, 1..=3),
        1 => (30_000usize..70_000).prop_map(|n| vec![n, 1]),
        1 => (1usize..8, 5_000usize..20_000).prop_map(|(r, c)| vec![r, c]),
        1 => (2_000usize..9_000, 1usize..9).prop_map(|(r, c)| vec![r, c]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_shapes_equal_the_scalar_definition(shape in shape(), seed in any::<u32>()) {
        let n: usize = shape.iter().product();
        let channels = *shape.last().unwrap();
        let x = values(n, seed, true);
        let alpha = values(channels, seed ^ 1, true);
        let dy = values(n, seed ^ 2, true);
        check::<f32>(&shape, &x, &alpha, &dy).map_err(TestCaseError::fail)?;
        check::<f16>(&shape, &x, &alpha, &dy).map_err(TestCaseError::fail)?;
        check::<bf16>(&shape, &x, &alpha, &dy).map_err(TestCaseError::fail)?;
    }
}
