//! 1-bit masks for the backward pass: over random shapes (lengths that are not
//! multiples of 32, across the parallel chunks' boundaries), parameters and
//! values piled up on and one ulp (of the tensor's type) either side of every
//! threshold, with NaN and ±inf: the masked forward gives the forward's bits,
//! the mask holds the scalar predicate and nothing past the last element, and
//! the gradient from the mask has the bits of the gradient from `x`.

use lowbit::{
    Backend, Device, DorefaMode, Element, Error, Kind, Quantizer, bf16, f16, mask_words, scalar,
};
use proptest::prelude::*;

/// The element types, with their bits and their ulp steps.
trait Bits: Element {
    fn bits(self) -> u32;
    /// The value `ulps` steps of this type away from `v` (already of this type).
    fn step(v: f32, ulps: i32) -> f32;
}

impl Bits for f32 {
    fn bits(self) -> u32 {
        self.to_bits()
    }
    fn step(v: f32, ulps: i32) -> f32 {
        (0..ulps.abs()).fold(v, |v, _| if ulps > 0 { v.next_up() } else { v.next_down() })
    }
}

macro_rules! half_bits {
    ($t:ty) => {
        impl Bits for $t {
            fn bits(self) -> u32 {
                u32::from(self.to_bits())
            }
            fn step(v: f32, ulps: i32) -> f32 {
                (0..ulps.abs())
                    .fold(<$t>::from_f32(v), |h, _| {
                        // Finite values of either sign, away from zero (edges
                        // are nonzero): one bit step moves one ulp outwards.
                        let outwards = (ulps > 0) == (h.to_f32() > 0.0);
                        let b = h.to_bits();
                        <$t>::from_bits(if outwards { b + 1 } else { b - 1 })
                    })
                    .to_f32()
            }
        }
    };
}
half_bits!(f16);
half_bits!(bf16);

/// Clip values and thresholds the tests pile values on.
const EDGES: [f32; 9] = [1.0, 0.5, 0.3, 0.1, 0.05, 0.2, 0.75, 1.0 / 3.0, 2.0];

/// Values on, and up to two ulps of `T` either side of, each of `edges`
/// (rounded to `T`, as the quantizers round their thresholds), zeros of both
/// signs, non-finite values and plain random ones.
fn value<T: Bits>(edges: Vec<f32>) -> impl Strategy<Value = f32> {
    let near =
        (prop::sample::select(edges), any::<bool>(), -2i32..=2).prop_map(|(e, negative, ulps)| {
            let e = T::round_f32(if negative { -e } else { e });
            T::step(e, ulps)
        });
    prop_oneof![
        5 => -3.0f32..3.0,
        3 => near,
        1 => prop::sample::select(vec![
            0.0f32,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e30,
            -1e30,
        ]),
    ]
}

fn clip() -> impl Strategy<Value = Option<f32>> {
    prop_oneof![
        1 => Just(None),
        3 => prop::sample::select(EDGES.to_vec()).prop_map(Some),
        1 => (0.05f32..3.0).prop_map(Some),
    ]
}

/// Every quantizer that saves a mask.
fn maskable() -> impl Strategy<Value = Kind> {
    prop_oneof![
        clip().prop_map(|clip_value| Kind::SteSign { clip_value }),
        (clip(), any::<bool>()).prop_map(|(clip_value, unipolar)| Kind::SteHeaviside {
            clip_value,
            unipolar
        }),
        clip().prop_map(|clip_value| Kind::MagnitudeAwareSign { clip_value }),
        (prop::sample::select(EDGES.to_vec()), any::<bool>(), clip()).prop_map(
            |(threshold_value, ternary_weight_networks, clip_value)| Kind::SteTern {
                threshold_value,
                ternary_weight_networks,
                clip_value,
            }
        ),
        (1u32..=8).prop_map(|k_bit| Kind::DoReFa {
            k_bit,
            mode: DorefaMode::Activations
        }),
        (1u32..=32).prop_map(|precision| Kind::NoOp { precision }),
    ]
}

/// Shapes of one to three axes; lengths of every residue mod 32, some across
/// one or two parallel chunks (32768 elements), wide and narrow channels.
fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        4 => prop::collection::vec(1usize..12, 1..=3),
        2 => (1usize..400).prop_map(|n| vec![n]),
        1 => (32_700usize..32_840).prop_map(|n| vec![n]),
        1 => (30_000usize..70_000).prop_map(|n| vec![n]),
        1 => (1usize..8, 5_000usize..20_000).prop_map(|(r, c)| vec![r, c]),
        1 => (2_000usize..9_000, 1usize..9).prop_map(|(r, c)| vec![r, c]),
    ]
}

/// A maskable quantizer and a tensor whose values crowd its own clip (and
/// every other edge).
fn case<T: Bits>() -> impl Strategy<Value = (Kind, Vec<usize>, Vec<f32>, Vec<f32>)> {
    (maskable(), shape()).prop_flat_map(|(kind, shape)| {
        let mut edges = EDGES.to_vec();
        if let Kind::SteSign {
            clip_value: Some(c),
        }
        | Kind::SteHeaviside {
            clip_value: Some(c),
            ..
        }
        | Kind::MagnitudeAwareSign {
            clip_value: Some(c),
        }
        | Kind::SteTern {
            clip_value: Some(c),
            ..
        } = kind
        {
            edges.extend([c; 9]);
        }
        let n = shape.iter().product::<usize>();
        let dy = prop_oneof![
            8 => -2.0f32..2.0,
            1 => prop::sample::select(vec![f32::NAN, f32::INFINITY, -0.0]),
        ];
        (
            Just(kind),
            Just(shape),
            prop::collection::vec(value::<T>(edges), n),
            prop::collection::vec(dy, n),
        )
    })
}

/// The predicate the gradient of `kind` selects with, at `x` of type `T`.
fn passes<T: Element>(kind: Kind, x: f32) -> bool {
    match kind {
        Kind::SteHeaviside {
            clip_value,
            unipolar: true,
        } => scalar::ste_unipolar_passes(x, clip_value.map(T::round_f32)),
        Kind::SteSign { clip_value }
        | Kind::SteHeaviside { clip_value, .. }
        | Kind::MagnitudeAwareSign { clip_value }
        | Kind::SteTern { clip_value, .. } => scalar::ste_passes(x, clip_value.map(T::round_f32)),
        Kind::DoReFa { .. } => scalar::dorefa_activations_passes(x),
        Kind::NoOp { .. } => true,
        _ => unreachable!("not maskable: {kind:?}"),
    }
}

fn bit(mask: &[u32], i: usize) -> bool {
    mask[i / 32] >> (i % 32) & 1 != 0
}

fn same_bits<T: Bits>(what: &str, got: &[T], want: &[T]) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        prop_assert!(
            g.bits() == w.bits(),
            "{}[{}]: {:?} where {:?} was expected",
            what,
            i,
            g,
            w
        );
    }
    Ok(())
}

/// A masked forward and backward against the forward and backward from `x`.
fn check<T: Bits>(kind: Kind, shape: &[usize], x: &[f32], dy: &[f32]) -> Result<(), TestCaseError> {
    let q = Quantizer::new(kind).unwrap();
    let x: Vec<T> = x.iter().map(|&v| T::from_f32(v)).collect();
    let dy: Vec<T> = dy.iter().map(|&v| T::from_f32(v)).collect();
    let n = x.len();

    // Garbage in every output: all of it must be overwritten.
    let mut y = vec![T::from_f32(7.0); n];
    let mut mask = vec![0xdead_beef_u32; mask_words(n)];
    let mut scale = vec![T::from_f32(7.0); q.saved_scale_len(shape).unwrap()];
    q.forward_with_mask(&x, shape, &mut y, &mut mask, &mut scale)
        .unwrap();
    same_bits("y", &y, &q.forward_vec(&x, shape).unwrap())?;

    for (i, v) in x.iter().enumerate() {
        let want = passes::<T>(kind, v.to_f32());
        prop_assert_eq!(
            bit(&mask, i),
            want,
            "{} mask bit {} of x = {:e}",
            q,
            i,
            v.to_f32()
        );
    }
    if !n.is_multiple_of(32) {
        prop_assert_eq!(mask[n / 32] >> (n % 32), 0, "{}: bits past the end", q);
    }
    if let Kind::MagnitudeAwareSign { .. } = kind {
        // The saved scale is what the forward multiplied by: y = scale at x ≥ 0.
        let channels = *shape.last().unwrap();
        for (i, (xv, yv)) in x.iter().zip(&y).enumerate() {
            if xv.to_f32() >= 0.0 {
                prop_assert_eq!(scale[i % channels].bits(), yv.bits(), "{} scale", q);
            }
        }
    }

    let mut dx = vec![T::from_f32(7.0); n];
    q.backward_from_mask(&mask, &scale, &dy, shape, &mut dx)
        .unwrap();
    same_bits("dx", &dx, &q.backward_vec(&x, &dy, shape).unwrap())?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn mask_gives_the_bits_of_x_f32((kind, shape, x, dy) in case::<f32>()) {
        check::<f32>(kind, &shape, &x, &dy)?;
    }

    #[test]
    fn mask_gives_the_bits_of_x_f16((kind, shape, x, dy) in case::<f16>()) {
        check::<f16>(kind, &shape, &x, &dy)?;
    }

    #[test]
    fn mask_gives_the_bits_of_x_bf16((kind, shape, x, dy) in case::<bf16>()) {
        check::<bf16>(kind, &shape, &x, &dy)?;
    }
}

fn q(spec: &str) -> Quantizer {
    spec.parse().unwrap()
}

#[test]
fn thresholds_are_rounded_to_the_tensor_type() {
    // f16(0.3) lies just above 0.3: it passes a 0.3 clip only because the
    // clip is cast to f16 as larq casts it; the next f16 up does not pass.
    let on = f16::from_f32(0.3);
    assert!(on.to_f32() > 0.3);
    let above = f16::from_bits(on.to_bits() + 1);
    let x = [on, above, -on, -above];
    let mut y = [f16::ZERO; 4];
    let mut mask = [0u32];
    q("ste_sign(clip_value=0.3)")
        .forward_with_mask(&x, &[4], &mut y, &mut mask, &mut [])
        .unwrap();
    assert_eq!(mask, [0b0101]);
}

#[test]
fn no_clip_passes_everywhere_even_at_nan_and_infinity() {
    let mut x = vec![0.5f32; 33];
    x[0] = f32::NAN;
    x[1] = f32::INFINITY;
    x[32] = f32::NEG_INFINITY;
    let mut y = vec![0.0; 33];
    let mut mask = vec![0u32; 2];
    q("ste_heaviside(clip_value=none)")
        .forward_with_mask(&x, &[33], &mut y, &mut mask, &mut [])
        .unwrap();
    assert_eq!(mask, [u32::MAX, 1]);
}

#[test]
fn noop_passes_everywhere_and_keeps_every_bit() {
    let q = q("noop(precision=8)");
    let nan = f16::from_bits(0x7d01); // a signalling NaN with a payload
    let x = [nan, f16::NEG_ZERO, f16::from_f32(3.0)];
    let (mut y, mut mask) = ([f16::ZERO; 3], [0u32]);
    q.forward_with_mask(&x, &[3], &mut y, &mut mask, &mut [])
        .unwrap();
    assert_eq!(y.map(|v| v.to_bits()), x.map(|v| v.to_bits()));
    assert_eq!(mask, [0b111]);
    let mut dx = [f16::ZERO; 3];
    q.backward_from_mask(&mask, &[], &x, &[3], &mut dx).unwrap();
    assert_eq!(dx.map(|v| v.to_bits()), x.map(|v| v.to_bits()));
}

#[test]
fn the_saved_scale_is_in_the_tensor_type() {
    // Channel means 1/3 and 2/3: not representable, so rounded to bf16.
    let x: Vec<bf16> = [1.0f32, 2.0, 0.0, 0.0, 0.0, 0.0]
        .iter()
        .map(|&v| bf16::from_f32(v))
        .collect();
    let mut scale = [bf16::ZERO; 2];
    let (mut y, mut mask) = ([bf16::ZERO; 6], [0u32]);
    q("magnitude_aware_sign")
        .forward_with_mask(&x, &[3, 2], &mut y, &mut mask, &mut scale)
        .unwrap();
    assert_eq!(
        scale,
        [bf16::from_f32(1.0 / 3.0), bf16::from_f32(2.0 / 3.0)]
    );
}

#[test]
fn masks_do_not_depend_on_the_thread_count() {
    let n = (1 << 17) + 5;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 4001) as f32 / 1000.0 - 2.0)
        .collect();
    for spec in ["ste_sign", "magnitude_aware_sign", "dorefa"] {
        let q = q(spec);
        let shape = [n];
        let run = || {
            let mut y = vec![0.0f32; n];
            let mut mask = vec![0u32; mask_words(n)];
            let mut scale = vec![0.0f32; q.saved_scale_len(&shape).unwrap()];
            q.forward_with_mask(&x, &shape, &mut y, &mut mask, &mut scale)
                .unwrap();
            (
                y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                mask,
                scale,
            )
        };
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(run);
        let many = rayon::ThreadPoolBuilder::new()
            .num_threads(7)
            .build()
            .unwrap()
            .install(run);
        assert!(
            one == many,
            "{spec}: results differ between 1 and 7 threads"
        );
    }
}

#[test]
fn quantizers_that_need_x_are_an_error_and_write_nothing() {
    let backend = Backend::new(Device::Cpu).unwrap();
    for spec in ["approx_sign", "swish_sign", "dorefa(mode=weights)"] {
        let q = q(spec);
        assert!(!q.supports_mask(), "{spec}");
        let (mut y, mut mask, mut dx) = ([7.0f32; 3], [7u32], [7.0f32; 3]);
        let e = q
            .forward_with_mask(&[1.0f32; 3], &[3], &mut y, &mut mask, &mut [])
            .unwrap_err();
        assert!(matches!(e, Error::NotMaskable { .. }), "{spec}: {e}");
        let e = q
            .backward_from_mask(&[1], &[], &[1.0f32; 3], &[3], &mut dx)
            .unwrap_err();
        assert!(matches!(e, Error::NotMaskable { .. }), "{spec}: {e}");
        let e = backend
            .backward_from_mask(&q, &[1], &[], &[1.0f32; 3], &[3], &mut dx)
            .unwrap_err();
        assert!(matches!(e, Error::NotMaskable { .. }), "{spec}: {e}");
        assert_eq!((y, mask, dx), ([7.0; 3], [7], [7.0; 3]), "{spec}");
    }
    for spec in [
        "ste_sign",
        "ste_heaviside",
        "ste_tern(ternary_weight_networks=true)",
        "magnitude_aware_sign",
        "dorefa(k_bit=3)",
        "noop(precision=1)",
    ] {
        assert!(q(spec).supports_mask(), "{spec}");
    }
}

#[test]
fn buffers_of_the_wrong_length_are_an_error_and_write_nothing() {
    let x = [1.0f32; 33];
    let mas = q("magnitude_aware_sign");
    let sign = q("ste_sign");
    let (mut y, mut dx) = ([7.0f32; 33], [7.0f32; 33]);
    let mut mask = [7u32; 3];
    let mut scale = [7.0f32; 4];
    let length = |e: Error| match e {
        Error::BufferLength {
            buffer,
            expected,
            len,
        } => (buffer, expected, len),
        e => panic!("expected a buffer length error, got {e}"),
    };

    // One word too many, one too few.
    let e = sign.forward_with_mask(&x, &[33], &mut y, &mut mask, &mut []);
    assert_eq!(length(e.unwrap_err()), ("mask", 2, 3));
    let e = sign.backward_from_mask(&mask[..1], &[], &x, &[33], &mut dx);
    assert_eq!(length(e.unwrap_err()), ("mask", 2, 1));
    // A scale where there is none, a scale of the wrong channel count.
    let e = sign.forward_with_mask(&x, &[33], &mut y, &mut mask[..2], &mut scale[..1]);
    assert_eq!(length(e.unwrap_err()), ("scale", 0, 1));
    let e = mas.forward_with_mask(&x, &[11, 3], &mut y, &mut mask[..2], &mut scale);
    assert_eq!(length(e.unwrap_err()), ("scale", 3, 4));
    let e = mas.backward_from_mask(&mask[..2], &scale[..2], &x, &[11, 3], &mut dx);
    assert_eq!(length(e.unwrap_err()), ("scale", 3, 2));
    // The tensors against the shape.
    let e = mas.backward_from_mask(&mask[..2], &scale[..3], &x, &[10, 3], &mut dx);
    assert!(matches!(e, Err(Error::ShapeMismatch { .. })), "{e:?}");

    assert_eq!((y, dx), ([7.0; 33], [7.0; 33]));
    assert_eq!((mask, scale), ([7; 3], [7.0; 4]));
}

#[test]
fn empty_tensors_have_empty_masks() {
    let q = q("magnitude_aware_sign");
    let (mut y, mut mask, mut scale) = ([0f32; 0], [0u32; 0], [0f32; 0]);
    q.forward_with_mask(&[], &[0, 0], &mut y, &mut mask, &mut scale)
        .unwrap();
    q.backward_from_mask(&mask, &scale, &[], &[0, 0], &mut y)
        .unwrap();
}

/// A NaN whose payload differs from the one its reduction carries (PyTorch's
/// CPU conversion to bf16 writes 0xffff, and |0xffff| is 0x7fff): where `x`
/// or `dy` and the threshold or scale are both NaN, the masked passes and
/// the plain ones still give the same bits (they once differed in the sign
/// of that NaN, by the order the compiler gave the operands).
#[test]
fn a_nan_with_its_own_payload_gives_the_same_bits_masked_or_not() {
    let shape = [6, 7];
    let n = 42;
    let mut x: Vec<bf16> = (0..n)
        .map(|i| bf16::from_f32((i as f32 - 20.0) / 8.0))
        .collect();
    x[5] = bf16::from_bits(0xffff);
    let mut dy: Vec<bf16> = (0..n)
        .map(|i| bf16::from_f32(0.5 - i as f32 / 64.0))
        .collect();
    dy[5] = bf16::from_bits(0xffff);
    dy[12] = bf16::from_bits(0xffc1);
    for spec in [
        "ste_tern(ternary_weight_networks=true)",
        "magnitude_aware_sign(clip_value=none)",
        "magnitude_aware_sign",
    ] {
        let q = q(spec);
        let mut mask = vec![0u32; mask_words(n)];
        let mut scale = vec![bf16::ZERO; q.saved_scale_len(&shape).unwrap()];
        let mut y = vec![bf16::ZERO; n];
        q.forward_with_mask(&x, &shape, &mut y, &mut mask, &mut scale)
            .unwrap();
        let want = q.forward_vec(&x, &shape).unwrap();
        let bits = |v: &[bf16]| v.iter().map(|h| h.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&y), bits(&want), "{spec}: y");
        let mut dx = vec![bf16::ZERO; n];
        q.backward_from_mask(&mask, &scale, &dy, &shape, &mut dx)
            .unwrap();
        let want = q.backward_vec(&x, &dy, &shape).unwrap();
        assert_eq!(bits(&dx), bits(&want), "{spec}: dx");
    }
}
