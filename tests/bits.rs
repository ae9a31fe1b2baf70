//! Bit packing (LCE's layout) and the flip ratio, on the CPU, against
//! definitions written out here independently of the crate.

use lowbit::bits::{self, FlipRatio, Flips};
use lowbit::{Backend, Device, Element, Error, Quantizer, bf16, f16};

/// The layout, bit by bit: word `c / 32` of a row, bit `c % 32`, set where
/// the value is below 0.
fn reference_pack(x: &[f32], channels: usize) -> Vec<u32> {
    let words = channels.div_ceil(32);
    let mut packed = Vec::new();
    for row in x.chunks(channels) {
        let mut out = vec![0u32; words];
        for (c, &v) in row.iter().enumerate() {
            if v < 0.0 {
                out[c / 32] |= 1 << (c % 32);
            }
        }
        packed.extend(out);
    }
    packed
}

/// Values over [-2, 2) with zeros of both signs, infinities and NaNs mixed in.
fn random(n: usize, seed: u32) -> Vec<f32> {
    const EDGES: [f32; 6] = [
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
    ];
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            if s.is_multiple_of(11) {
                EDGES[(s >> 8) as usize % EDGES.len()]
            } else {
                (s >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
            }
        })
        .collect()
}

fn cast<T: Element>(x: &[f32]) -> Vec<T> {
    x.iter().map(|&v| T::from_f32(v)).collect()
}

fn widen<T: Element>(x: &[T]) -> Vec<f32> {
    x.iter().map(|v| v.to_f32()).collect()
}

/// Row lengths around word boundaries: 1, 31, 32, 33, 65 and a long one.
const CHANNELS: [usize; 7] = [1, 31, 32, 33, 64, 65, 1500];

#[test]
fn packing_follows_the_layout_in_every_type() {
    for channels in CHANNELS {
        for rows in [1, 3, 17] {
            let x = random(rows * channels, channels as u32 + rows as u32);
            let shape = [rows, channels];
            let want = reference_pack(&x, channels);
            assert_eq!(bits::pack_vec(&x, &shape).unwrap(), want, "f32 {shape:?}");
            // f16/bf16 keep every sign, zero and NaN, so the bits are the same.
            let h = cast::<f16>(&x);
            assert_eq!(bits::pack_vec(&h, &shape).unwrap(), want, "f16 {shape:?}");
            let b = cast::<bf16>(&x);
            assert_eq!(bits::pack_vec(&b, &shape).unwrap(), want, "bf16 {shape:?}");
        }
    }
}

#[test]
fn a_large_tensor_packs_like_the_reference() {
    // Many parallel tasks, and rows that do not fill their last word.
    for channels in [33, 100_003] {
        let rows = (1 << 20) / channels + 1;
        let x = random(rows * channels, 7);
        let want = reference_pack(&x, channels);
        assert_eq!(bits::pack_vec(&x, &[rows, channels]).unwrap(), want);
    }
}

#[test]
fn padding_bits_are_zero() {
    for channels in CHANNELS {
        let x = vec![-1.0f32; 3 * channels];
        let packed = bits::pack_vec(&x, &[3, channels]).unwrap();
        let words = channels.div_ceil(32);
        for row in packed.chunks(words) {
            let tail = channels % 32;
            let last = if tail == 0 { u32::MAX } else { (1 << tail) - 1 };
            assert!(row[..words - 1].iter().all(|&w| w == u32::MAX));
            assert_eq!(row[words - 1], last, "{channels} channels");
        }
    }
}

#[test]
fn edge_values_pack_as_ste_sign_binarizes_them() {
    let x = [
        -0.0f32,
        0.0,
        f32::NAN,
        -f32::NAN,
        f32::NEG_INFINITY,
        f32::INFINITY,
        -f32::MIN_POSITIVE,
        f32::MIN_POSITIVE,
        -1e-45,
    ];
    let packed = bits::pack_vec(&x, &[x.len()]).unwrap();
    // −inf, −MIN_POSITIVE and the negative subnormal are below 0.
    assert_eq!(packed, [1 << 4 | 1 << 6 | 1 << 8]);
    let y: Vec<f32> = bits::unpack_vec(&packed, &[x.len()], None).unwrap();
    assert_eq!(y, [1.0, 1.0, 1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0]);
}

/// unpack(pack(x)) is ste_sign's forward pass, wherever that is not NaN.
fn round_trip_is_ste_sign<T: Element>() {
    let ste_sign: Quantizer = "ste_sign".parse().unwrap();
    for channels in CHANNELS {
        let shape = [5, channels];
        let x = cast::<T>(&random(5 * channels, 3));
        let packed = bits::pack_vec(&x, &shape).unwrap();
        let y: Vec<T> = bits::unpack_vec(&packed, &shape, None).unwrap();
        let want = ste_sign.forward_vec(&x, &shape).unwrap();
        for (i, (y, w)) in widen(&y).iter().zip(widen(&want)).enumerate() {
            let w = if w.is_nan() { 1.0 } else { w };
            assert_eq!(y.to_bits(), w.to_bits(), "{:?} {shape:?} [{i}]", T::DTYPE);
        }
        // And packing the unpacked tensor gives the same words back.
        assert_eq!(bits::pack_vec(&y, &shape).unwrap(), packed);
    }
}

#[test]
fn round_trips_in_every_type() {
    round_trip_is_ste_sign::<f32>();
    round_trip_is_ste_sign::<f16>();
    round_trip_is_ste_sign::<bf16>();
}

#[test]
fn unpacking_scales_each_channel_and_rounds_once() {
    let shape = [2, 3];
    let packed = bits::pack_vec(&[-1.0f32, 1.0, -1.0, 1.0, -1.0, 1.0], &shape).unwrap();
    let scale = [0.1f32, 2.5, f32::INFINITY];
    let y: Vec<f32> = bits::unpack_vec(&packed, &shape, Some(&scale)).unwrap();
    assert_eq!(y, [-0.1, 2.5, -f32::INFINITY, 0.1, -2.5, f32::INFINITY]);
    let y: Vec<f16> = bits::unpack_vec(&packed, &shape, Some(&scale)).unwrap();
    assert_eq!(y[0], f16::from_f32(-0.1));
    let y: Vec<bf16> = bits::unpack_vec(&packed, &shape, Some(&scale)).unwrap();
    assert_eq!(y[3], bf16::from_f32(0.1));
}

#[test]
fn empty_tensors_pack_into_nothing() {
    for shape in [&[0][..], &[0, 5], &[5, 0], &[3, 0, 7]] {
        assert_eq!(bits::packed_len(shape).unwrap(), 0, "{shape:?}");
        let packed = bits::pack_vec::<f32>(&[], shape).unwrap();
        assert!(packed.is_empty());
        let y: Vec<bf16> = bits::unpack_vec(&[], shape, None).unwrap();
        assert!(y.is_empty());
    }
    // A scalar is one row of one channel.
    assert_eq!(bits::pack_vec(&[-2.0f32], &[]).unwrap(), [1]);
}

#[test]
fn bad_lengths_are_errors_and_write_nothing() {
    let x = [-1.0f32; 6];
    let mut packed = [7u32; 3];
    let e = bits::pack(&x, &[2, 3], &mut packed).unwrap_err();
    assert_eq!(
        e,
        Error::PackedMismatch {
            shape: vec![2, 3],
            expected: 2,
            buffer: "packed",
            len: 3
        }
    );
    assert_eq!(packed, [7; 3]);
    let e = bits::pack(&x[..5], &[2, 3], &mut packed[..2]).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { buffer: "x", .. }), "{e}");
    assert_eq!(packed, [7; 3]);

    let mut y = [9.0f32; 6];
    let e = bits::unpack(&[1, 1, 1], &[2, 3], None, &mut y).unwrap_err();
    assert!(
        matches!(e, Error::PackedMismatch { expected: 2, .. }),
        "{e}"
    );
    let e = bits::unpack(&[1, 1], &[2, 3], None, &mut y[..4]).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { buffer: "y", .. }), "{e}");
    let e = bits::unpack(&[1, 1], &[2, 3], Some(&[1.0; 2]), &mut y).unwrap_err();
    assert_eq!(
        e,
        Error::ScaleMismatch {
            shape: vec![2, 3],
            channels: 3,
            len: 2
        }
    );
    assert_eq!(y, [9.0; 6]);
    assert!(e.to_string().contains("3 channels"));

    let huge = [usize::MAX, 2];
    assert!(matches!(
        bits::packed_len(&huge),
        Err(Error::ShapeOverflow(_))
    ));
    assert!(matches!(
        bits::pack(&x, &huge, &mut packed),
        Err(Error::ShapeOverflow(_))
    ));
}

#[test]
fn the_cpu_backend_packs_like_the_free_functions() {
    let cpu = Backend::new(Device::Cpu).unwrap();
    let shape = [7, 65];
    let x = cast::<f16>(&random(7 * 65, 9));
    let mut packed = vec![0u32; bits::packed_len(&shape).unwrap()];
    cpu.pack(&x, &shape, &mut packed).unwrap();
    assert_eq!(packed, bits::pack_vec(&x, &shape).unwrap());
    let scale: Vec<f32> = (0..65).map(|c| c as f32 / 8.0).collect();
    let mut y = vec![bf16::ZERO; x.len()];
    cpu.unpack(&packed, &shape, Some(&scale), &mut y).unwrap();
    assert_eq!(
        y,
        bits::unpack_vec::<bf16>(&packed, &shape, Some(&scale)).unwrap()
    );
    let mut short = vec![bf16::ZERO; 3];
    assert!(cpu.unpack(&packed, &shape, None, &mut short).is_err());
}

/// larq's FlipRatio as larq/metrics.py writes it, on ±1 values cast to
/// int8, with its f32 variables.
struct LarqFlipRatio {
    previous: Vec<i8>,
    total: f32,
    count: f32,
}

impl LarqFlipRatio {
    fn new(size: usize) -> Self {
        LarqFlipRatio {
            previous: vec![0; size],
            total: 0.0,
            count: 0.0,
        }
    }

    fn update_state(&mut self, values: &[i8]) {
        let unchanged = self
            .previous
            .iter()
            .zip(values)
            .filter(|(a, b)| a == b)
            .count();
        let ratio = 1.0 - (unchanged as f32 / self.previous.len() as f32);
        let sign = if self.count > 0.0 { 1.0 } else { 0.0 };
        self.total += ratio * sign;
        self.count += 1.0;
        self.previous.copy_from_slice(values);
    }

    fn result(&self) -> f32 {
        let d = self.count - 1.0;
        if d == 0.0 { 0.0 } else { self.total / d }
    }

    fn reset_states(&mut self) {
        self.total = 0.0;
        self.count = 0.0;
    }
}

fn cpu_metric(shape: &[usize]) -> FlipRatio {
    FlipRatio::new(&Backend::new(Device::Cpu).unwrap(), shape).unwrap()
}

#[test]
fn flip_ratio_gives_larqs_docstring_numbers() {
    let mut m = cpu_metric(&[2]);
    let f = m.update(&[1.0f32, 1.0]).unwrap();
    assert_eq!(
        f,
        Flips {
            flipped: 0,
            ratio: 0.0,
            running: 0.0
        }
    );
    let f = m.update(&[-1.0f32, -1.0]).unwrap();
    assert_eq!((f.flipped, f.ratio, f.running), (2, 1.0, 1.0));
    let f = m.update(&[1.0f32, -1.0]).unwrap();
    assert_eq!((f.flipped, f.ratio, f.running), (1, 0.5, 0.75));
    assert_eq!(m.result(), 0.75);
}

#[test]
fn flip_ratio_is_larqs_result_bit_for_bit() {
    let shape = [13, 37];
    let size = 13 * 37;
    let mut ours = cpu_metric(&shape);
    let mut larq = LarqFlipRatio::new(size);
    let mut signs = vec![1i8; size];
    for step in 0..40u32 {
        // Flip a varying share of the signs.
        for (i, s) in random(size, step + 1).iter().enumerate() {
            if *s > 1.0 - step as f32 / 20.0 {
                signs[i] = -signs[i];
            }
        }
        if step == 25 {
            ours.reset();
            larq.reset_states();
        }
        let values: Vec<f32> = signs.iter().map(|&s| f32::from(s)).collect();
        let flipped = larq
            .previous
            .iter()
            .zip(&signs)
            .filter(|(a, b)| a != b)
            .count();
        let first = step == 0;
        larq.update_state(&signs);
        let f = ours.update(&cast::<bf16>(&values)).unwrap();
        assert_eq!(f.flipped, if first { 0 } else { flipped as u64 });
        assert_eq!(f.running.to_bits(), larq.result().to_bits(), "step {step}");
        assert_eq!(ours.result().to_bits(), larq.result().to_bits());
    }
}

#[test]
fn flip_ratio_compares_signs_of_latent_weights() {
    let mut m = cpu_metric(&[4]);
    m.update(&[0.3f32, -0.2, 0.0, -0.0]).unwrap();
    // Magnitudes change, signs do not; then one sign does.
    assert_eq!(m.update(&[0.9f32, -1.5, 1.0, 0.0]).unwrap().flipped, 0);
    let f = m.update(&[0.9f32, 1.5, 1.0, 0.0]).unwrap();
    assert_eq!((f.flipped, f.ratio), (1, 0.25));
    assert_eq!(f.running, 0.125);
}

#[test]
fn reset_keeps_the_previous_signs() {
    let mut m = cpu_metric(&[2]);
    m.update(&[1.0f32, 1.0]).unwrap();
    m.update(&[-1.0f32, 1.0]).unwrap();
    m.reset();
    assert_eq!(m.result(), 0.0);
    // Still compared with [-1, 1], but weighted 0 like a first update.
    let f = m.update(&[1.0f32, -1.0]).unwrap();
    assert_eq!((f.flipped, f.ratio, f.running), (2, 1.0, 0.0));
    let f = m.update(&[1.0f32, 1.0]).unwrap();
    assert_eq!((f.flipped, f.ratio, f.running), (1, 0.5, 0.5));
}

#[test]
fn flip_ratio_errors_change_nothing() {
    let mut m = cpu_metric(&[2, 3]);
    m.update(&[1.0f32; 6]).unwrap();
    let e = m.update(&[1.0f32; 5]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::ShapeMismatch {
                buffer: "values",
                ..
            }
        ),
        "{e}"
    );
    let f = m.update(&[-1.0f32, 1.0, 1.0, 1.0, 1.0, 1.0]).unwrap();
    assert_eq!((f.flipped, f.running), (1, 1.0 - 5.0 / 6.0));
    assert!(matches!(
        FlipRatio::new(&Backend::new(Device::Cpu).unwrap(), &[usize::MAX, 3]),
        Err(Error::ShapeOverflow(_))
    ));
}

#[test]
fn flip_ratio_of_an_empty_tensor_is_zero() {
    let mut m = cpu_metric(&[0, 4]);
    for _ in 0..3 {
        let f = m.update::<f16>(&[]).unwrap();
        assert_eq!((f.flipped, f.ratio, f.running), (0, 0.0, 0.0));
    }
}
