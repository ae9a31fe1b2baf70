//! One body per behaviour, run on every backend: the CPU always, CUDA where
//! a device is present. Where CUDA cannot run, its runs are reported as
//! skipped, with the reason, not silently passed.
//!
//! A custom harness (`harness = false`) so that a skip is visible; it ends
//! with the `N passed, N failed, N skipped` line. `LOWBIT_TEST_ELEMENTS`
//! sets the random tensors' length (default 2^20 + 3; the GPU check uses 2^28).

mod common;

mod harness;

// The C ABI's crate (capi/) builds only the C libraries: an rlib of their
// name would collide with lowbit's. Its source is compiled into this test,
// over the same lowbit as the rest of the test.
#[cfg(lowbit_cuda)]
#[allow(dead_code)]
#[path = "../capi/src/lib.rs"]
mod capi;

use lowbit::{Backend, Device, Element, Quantizer, bf16, f16, scalar};

struct On<'a>(&'a Backend);

impl common::Runner for On<'_> {
    fn forward<T: Element>(
        &self,
        q: &Quantizer,
        x: &[T],
        shape: &[usize],
    ) -> Result<Vec<T>, String> {
        let mut y = vec![T::default(); x.len()];
        self.0
            .forward(q, x, shape, &mut y)
            .map_err(|e| e.to_string())?;
        Ok(y)
    }
    fn backward<T: Element>(
        &self,
        q: &Quantizer,
        x: &[T],
        dy: &[T],
        shape: &[usize],
    ) -> Result<Vec<T>, String> {
        let mut dx = vec![T::default(); x.len()];
        self.0
            .backward(q, x, dy, shape, &mut dx)
            .map_err(|e| e.to_string())?;
        Ok(dx)
    }
}

fn larq_reference(b: &Backend) -> Result<(), String> {
    let failures = common::run_all(&On(b));
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} cases failed:\n{}",
            failures.len(),
            common::CASES,
            failures.join("\n")
        ))
    }
}

const SPECS: &[&str] = &[
    "ste_sign",
    "ste_sign(clip_value=none)",
    "approx_sign",
    "swish_sign(beta=5.0)",
    "ste_heaviside(clip_value=0.5)",
    "magnitude_aware_sign",
    "ste_tern(threshold_value=0.1)",
    "ste_tern(ternary_weight_networks=true)",
    "dorefa(k_bit=2)",
    "dorefa(k_bit=4, mode=weights)",
    "noop(precision=32)",
    "ste_heaviside(clip_value=0.5, unipolar=true)",
    "ede(progress=0.6)",
    "progressive_sign(temperature=0.75)",
    "progressive_sign(progress=0.02)",
    "ste_sign(scale=first_axis)",
    "approx_sign(scale=first_axis)",
    "swish_sign(beta=5.0, scale=first_axis)",
];

/// Values over [-3, 3) with every threshold and the infinities mixed in,
/// and NaNs when `nan` (not for the reductions: one NaN makes the whole
/// tensor NaN there, which the reference cases check already).
fn random<T: Element>(n: usize, seed: u32, nan: bool) -> Vec<T> {
    const EDGES: [f32; 12] = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -0.5,
        0.1,
        -0.1,
        2.0,
        f32::INFINITY,
        -f32::INFINITY,
        f32::NAN,
    ];
    let edges = if nan { &EDGES[..] } else { &EDGES[..11] };
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let v = if s.is_multiple_of(97) {
                edges[(s >> 8) as usize % edges.len()]
            } else {
                (s >> 8) as f32 / (1u32 << 24) as f32 * 6.0 - 3.0
            };
            T::from_f32(v)
        })
        .collect()
}

/// Whether the quantizer reduces over the tensor before its elementwise pass.
fn reduces(spec: &str) -> bool {
    spec.starts_with("magnitude_aware_sign")
        || spec.contains("scale=first_axis")
        || spec.contains("ternary_weight_networks=true")
        || spec.contains("weights")
}

/// Where two results may differ: only the per-channel and per-row means
/// (magnitude_aware_sign, XNOR's scale), sums in another order (and then
/// only in their last bits).
fn tolerance(spec: &str, _backward: bool) -> f64 {
    if spec.starts_with("magnitude_aware_sign") || spec.contains("scale=first_axis") {
        1e-5
    } else {
        0.0
    }
}

fn agree<T: Element>(b: &Backend, spec: &str, n: usize) -> Result<(), String> {
    let q: Quantizer = spec.parse().unwrap();
    let shape = [n / 64, 64];
    let n = shape[0] * shape[1];
    let (x, dy) = (random::<T>(n, 1, !reduces(spec)), random::<T>(n, 2, true));
    let mut got = vec![T::default(); n];
    let mut want = vec![T::default(); n];
    for backward in [false, true] {
        if backward {
            b.backward(&q, &x, &dy, &shape, &mut got)
                .map_err(|e| e.to_string())?;
            q.backward(&x, &dy, &shape, &mut want)
                .map_err(|e| e.to_string())?;
        } else {
            b.forward(&q, &x, &shape, &mut got)
                .map_err(|e| e.to_string())?;
            q.forward(&x, &shape, &mut want)
                .map_err(|e| e.to_string())?;
        }
        let tol = tolerance(spec, backward);
        for i in 0..n {
            let (g, w) = (got[i].to_f32(), want[i].to_f32());
            let same = g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan());
            let close = tol > 0.0
                && (f64::from(g) - f64::from(w)).abs() <= tol * (1.0 + f64::from(w).abs());
            // The TWN threshold is a sum in another order: an element within
            // rounding of it may land on the other side.
            let twn_edge =
                spec.contains("ternary_weight_networks=true") && !backward && g.abs() != w.abs();
            if !(same || close || twn_edge && near_threshold(&x, i)) {
                let dir = if backward { "backward" } else { "forward" };
                return Err(format!(
                    "{spec} {:?} {dir}[{i}] x={:e}: {} gives {g:e}, the CPU {w:e}",
                    T::DTYPE,
                    x[i].to_f32(),
                    b.name()
                ));
            }
        }
    }
    Ok(())
}

fn near_threshold<T: Element>(x: &[T], i: usize) -> bool {
    let sum: f64 = x.iter().map(|v| f64::from(v.to_f32().abs())).sum();
    let t = scalar::twn_threshold(sum, x.len());
    (x[i].to_f32().abs() - t).abs() <= 1e-5 * t
}

fn agrees_with_the_cpu_on_random_tensors(b: &Backend) -> Result<(), String> {
    let n = harness::elements();
    for spec in SPECS {
        agree::<f32>(b, spec, n)?;
        agree::<f16>(b, spec, n)?;
        agree::<bf16>(b, spec, n)?;
    }
    Ok(())
}

fn same_input_gives_the_same_bits(b: &Backend) -> Result<(), String> {
    let n = harness::elements();
    for spec in [
        "magnitude_aware_sign",
        "ste_tern(ternary_weight_networks=true)",
        "dorefa(mode=weights)",
    ] {
        let q: Quantizer = spec.parse().unwrap();
        let x = random::<f32>(n / 64 * 64, 3, false);
        let shape = [n / 64, 64];
        let mut first = vec![0f32; x.len()];
        let mut again = vec![0f32; x.len()];
        b.forward(&q, &x, &shape, &mut first)
            .map_err(|e| e.to_string())?;
        b.forward(&q, &x, &shape, &mut again)
            .map_err(|e| e.to_string())?;
        if first
            .iter()
            .zip(&again)
            .any(|(a, b)| a.to_bits() != b.to_bits())
        {
            return Err(format!("{spec}: two runs differ"));
        }
    }
    Ok(())
}

fn bad_input_is_an_error_and_writes_nothing(b: &Backend) -> Result<(), String> {
    let q: Quantizer = "ste_sign".parse().unwrap();
    let mut y = [7.0f32; 3];
    match b.forward(&q, &[1.0f32; 4], &[4], &mut y) {
        Err(lowbit::Error::ShapeMismatch { .. }) if y == [7.0; 3] => Ok(()),
        other => Err(format!(
            "expected a shape error and an untouched y, got {other:?} and {y:?}"
        )),
    }
}

/// The quantizers that save a 1-bit mask for their backward pass.
const MASKED: &[&str] = &[
    "ste_sign",
    "ste_sign(clip_value=none)",
    "ste_heaviside(clip_value=0.5)",
    "ste_heaviside(clip_value=0.5, unipolar=true)",
    "magnitude_aware_sign",
    "magnitude_aware_sign(clip_value=none)",
    "ste_tern(threshold_value=0.1)",
    "ste_tern(ternary_weight_networks=true)",
    "dorefa(k_bit=2)",
    "noop(precision=32)",
];

fn same<T: Element>(a: T, b: T) -> bool {
    let (a, b) = (a.to_f32(), b.to_f32());
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// `(y, mask, scale)` of a masked forward on `b`.
type Masked<T> = (Vec<T>, Vec<u32>, Vec<T>);

fn forward_with_mask<T: Element>(
    b: &Backend,
    q: &Quantizer,
    x: &[T],
    shape: &[usize],
) -> Result<Masked<T>, String> {
    let mut y = vec![T::default(); x.len()];
    let mut mask = vec![0u32; lowbit::mask_words(x.len())];
    let mut scale = vec![T::default(); q.saved_scale_len(shape).unwrap()];
    b.forward_with_mask(q, x, shape, &mut y, &mut mask, &mut scale)
        .map_err(|e| e.to_string())?;
    Ok((y, mask, scale))
}

fn masks_agree<T: Element>(b: &Backend, spec: &str, n: usize) -> Result<(), String> {
    let q: Quantizer = spec.parse().unwrap();
    // Not a whole number of mask words; 61 channels start rows mid-word.
    let shape = if spec.starts_with("magnitude") {
        vec![n / 61, 61]
    } else {
        vec![if n.is_multiple_of(32) { n + 5 } else { n }]
    };
    let (shape, n) = (&shape[..], shape.iter().product());
    let (x, dy) = (random::<T>(n, 7, !reduces(spec)), random::<T>(n, 8, true));
    let fail = |what: &str, i: usize| {
        format!(
            "{spec} {:?} {what}[{i}] x={:e} differs on {}",
            T::DTYPE,
            x[i].to_f32(),
            b.name()
        )
    };

    let (y, mask, scale) = forward_with_mask(b, &q, &x, shape)?;
    let (cpu_y, cpu_mask, cpu_scale) =
        forward_with_mask(&Backend::new(Device::Cpu).unwrap(), &q, &x, shape)?;
    // The bit depends on x and the clip alone: the same on every backend.
    if let Some(i) = (0..n).find(|&i| (mask[i / 32] ^ cpu_mask[i / 32]) >> (i % 32) & 1 != 0) {
        return Err(fail("mask bit", i));
    }
    if mask.last() != cpu_mask.last() {
        return Err(format!("{spec}: trailing bits differ"));
    }
    let tol = tolerance(spec, false);
    let close = |g: T, w: T| {
        let (g, w) = (f64::from(g.to_f32()), f64::from(w.to_f32()));
        (g - w).abs() <= tol * (1.0 + w.abs())
    };
    let twn = spec.contains("ternary_weight_networks=true");
    for i in 0..n {
        if !(same(y[i], cpu_y[i]) || close(y[i], cpu_y[i]) || twn && near_threshold(&x, i)) {
            return Err(fail("y", i));
        }
    }
    if let Some(c) =
        (0..scale.len()).find(|&c| !(same(scale[c], cpu_scale[c]) || close(scale[c], cpu_scale[c])))
    {
        return Err(format!("{spec}: scale[{c}] differs on {}", b.name()));
    }

    // From the same mask and scale every backend gives the same bits, and
    // they are the bits of the gradient from x on that backend.
    let mut dx = vec![T::default(); n];
    b.backward_from_mask(&q, &cpu_mask, &cpu_scale, &dy, shape, &mut dx)
        .map_err(|e| e.to_string())?;
    let want = q.backward_vec(&x, &dy, shape).unwrap();
    if let Some(i) = (0..n).find(|&i| !same(dx[i], want[i])) {
        return Err(fail("dx from the CPU's mask", i));
    }
    b.backward_from_mask(&q, &mask, &scale, &dy, shape, &mut dx)
        .map_err(|e| e.to_string())?;
    let mut want = vec![T::default(); n];
    b.backward(&q, &x, &dy, shape, &mut want)
        .map_err(|e| e.to_string())?;
    if let Some(i) = (0..n).find(|&i| !same(dx[i], want[i])) {
        return Err(fail("dx from its own mask", i));
    }
    Ok(())
}

fn masked_passes_agree_with_the_cpu_and_with_x(b: &Backend) -> Result<(), String> {
    let n = harness::elements();
    for spec in MASKED {
        masks_agree::<f32>(b, spec, n)?;
        masks_agree::<f16>(b, spec, n)?;
        masks_agree::<bf16>(b, spec, n)?;
    }
    Ok(())
}

fn masks_for_quantizers_that_need_x_are_an_error(b: &Backend) -> Result<(), String> {
    let (mut y, mut mask, mut dx) = ([7.0f32; 3], [7u32], [7.0f32; 3]);
    for spec in ["approx_sign", "swish_sign", "dorefa(mode=weights)"] {
        let q: Quantizer = spec.parse().unwrap();
        let fwd = b.forward_with_mask(&q, &[1.0f32; 3], &[3], &mut y, &mut mask, &mut []);
        let bwd = b.backward_from_mask(&q, &mask, &[], &[1.0f32; 3], &[3], &mut dx);
        for r in [fwd, bwd] {
            if !matches!(r, Err(lowbit::Error::NotMaskable { .. })) {
                return Err(format!("{spec}: expected NotMaskable, got {r:?}"));
            }
        }
    }
    if (y, mask, dx) != ([7.0; 3], [7], [7.0; 3]) {
        return Err("an output was written".into());
    }
    Ok(())
}

/// Masked passes through cudarc views offset from their allocations, on a
/// stream of the caller's.
#[cfg(lowbit_cuda)]
fn device_mask_views_offset_by_one(b: &Backend) -> Result<(), String> {
    let Some(cuda) = b.as_cuda() else {
        return Ok(());
    };
    let err = |e: cudarc::driver::DriverError| format!("{e:?}");
    let stream = cuda.context().new_stream().map_err(err)?;
    let (rows, channels) = (157, 64);
    let n = rows * channels - 3;
    for spec in MASKED {
        let q: Quantizer = spec.parse().unwrap();
        let shape = if spec.starts_with("magnitude") {
            vec![rows - 1, channels]
        } else {
            vec![n]
        };
        let n: usize = shape.iter().product();
        let x = random::<bf16>(n + 1, 9, !reduces(spec));
        let dy = random::<bf16>(n + 1, 10, true);
        let words = lowbit::mask_words(n);
        let scales = q.saved_scale_len(&shape).unwrap();
        let xd = stream.clone_htod(&x).map_err(err)?;
        let dyd = stream.clone_htod(&dy).map_err(err)?;
        let mut y = stream.alloc_zeros::<bf16>(n + 1).map_err(err)?;
        let mut mask = stream.alloc_zeros::<u32>(words + 1).map_err(err)?;
        let mut scale = stream.alloc_zeros::<bf16>(scales + 1).map_err(err)?;
        let mut dx = stream.alloc_zeros::<bf16>(n + 2).map_err(err)?;
        let mut ws = lowbit::cuda::Workspace::new();
        let mut scale_view = scale.slice_mut(1..);
        cuda.forward_with_mask(
            &q,
            &stream,
            &xd.slice(1..),
            &shape,
            &mut y.slice_mut(1..),
            &mut mask.slice_mut(1..),
            (scales > 0).then_some(&mut scale_view),
            &mut ws,
        )
        .map_err(|e| e.to_string())?;
        let scale_view = scale.slice(1..);
        cuda.backward_from_mask(
            &q,
            &stream,
            &mask.slice(1..),
            (scales > 0).then_some(&scale_view),
            &dyd.slice(1..),
            &shape,
            &mut dx.slice_mut(2..),
        )
        .map_err(|e| e.to_string())?;
        let got = stream.clone_dtoh(&dx).map_err(err)?;
        let mut want = vec![bf16::ZERO; n];
        b.backward(&q, &x[1..], &dy[1..], &shape, &mut want)
            .map_err(|e| e.to_string())?;
        if let Some(i) = (0..n).find(|&i| !same(got[i + 2], want[i])) {
            return Err(format!(
                "{spec}: dx[{i}] from the mask differs from dx from x"
            ));
        }
        let before = [
            stream.clone_dtoh(&y).map_err(err)?[0].to_f32(),
            stream.clone_dtoh(&scale).map_err(err)?[0].to_f32(),
            got[0].to_f32(),
            got[1].to_f32(),
        ];
        let mask0 = stream.clone_dtoh(&mask).map_err(err)?[0];
        if before != [0.0; 4] || mask0 != 0 {
            return Err(format!("{spec}: wrote before a view"));
        }
    }
    Ok(())
}

/// Backward passes on cudarc views at offsets that move the buffers off
/// the kernels' 16-byte vector boundary, each buffer on its own: x and dy
/// one f16 in and dx two (no two alike), and x and dx aligned alike with dy
/// alone off by one (and the reverse), where a vector access on a buffer
/// the kernel did not check would be misaligned.
#[cfg(lowbit_cuda)]
fn device_views_offset_by_one(b: &Backend) -> Result<(), String> {
    let Some(cuda) = b.as_cuda() else {
        return Ok(());
    };
    let err = |e: cudarc::driver::DriverError| format!("{e:?}");
    let stream = cuda.context().new_stream().map_err(err)?;
    let n = 10_007;
    for (ox, ody, odx) in [(1, 1, 2), (0, 1, 0), (1, 0, 1)] {
        for spec in SPECS {
            let q: Quantizer = spec.parse().unwrap();
            let x = random::<f16>(n + ox, 5, !reduces(spec));
            let dy = random::<f16>(n + ody, 6, true);
            let xd = stream.clone_htod(&x).map_err(err)?;
            let dyd = stream.clone_htod(&dy).map_err(err)?;
            let mut out = stream.alloc_zeros::<f16>(n + odx).map_err(err)?;
            let mut ws = lowbit::cuda::Workspace::new();
            let shape = [n];
            cuda.backward(
                &q,
                &stream,
                &xd.slice(ox..),
                &dyd.slice(ody..),
                &shape,
                &mut out.slice_mut(odx..),
                &mut ws,
            )
            .map_err(|e| e.to_string())?;
            let got = stream.clone_dtoh(&out).map_err(err)?;
            let want = q.backward_vec(&x[ox..], &dy[ody..], &shape).unwrap();
            for i in 0..n {
                let (g, w) = (got[i + odx].to_f32(), want[i].to_f32());
                let close = (g - w).abs() <= tolerance(spec, true) as f32 * (1.0 + w.abs());
                if !(g.to_bits() == w.to_bits() || g.is_nan() && w.is_nan() || close) {
                    return Err(format!(
                        "{spec}, offsets {:?}: dx[{i}] = {g:e}, the CPU gives {w:e}",
                        (ox, ody, odx)
                    ));
                }
            }
            if got[..odx].iter().any(|v| v.to_f32() != 0.0) {
                return Err(format!("{spec}: wrote before the output view"));
            }
        }
    }
    Ok(())
}

/// `rsign` on `shape`: forward, dx and dα from this backend against the
/// CPU, bit for bit (dα too: both sum it over the same partition, in the same
/// order), and dα twice from the same input.
fn rsign_agree<T: Element>(b: &Backend, shape: [usize; 2]) -> Result<(), String> {
    let q: Quantizer = "rsign".parse().unwrap();
    let n = shape[0] * shape[1];
    let x = random::<T>(n, 7, true);
    let alpha = random::<T>(shape[1], 8, false);
    // Finite dy, so that dα is a number to compare, not NaN or inf.
    let dy: Vec<T> = random::<T>(n, 9, false)
        .into_iter()
        .map(|v| {
            if v.to_f32().is_finite() {
                v
            } else {
                T::from_f32(0.5)
            }
        })
        .collect();
    let e = |e: lowbit::Error| e.to_string();
    let mut got = (vec![T::default(); n], vec![T::default(); shape[1]]);
    let mut want = got.clone();
    b.forward_with_thresholds(&q, &x, &alpha, &shape, &mut got.0)
        .map_err(e)?;
    q.forward_with_thresholds(&x, &alpha, &shape, &mut want.0)
        .map_err(e)?;
    let differ = |got: &[T], want: &[T], what: &str| {
        let i = got.iter().zip(want).position(|(g, w)| {
            let (g, w) = (g.to_f32(), w.to_f32());
            !(g.to_bits() == w.to_bits() || g.is_nan() && w.is_nan())
        })?;
        Some(format!(
            "rsign {:?} {shape:?} {what}[{i}]: {} gives {:e}, the CPU {:e}",
            T::DTYPE,
            b.name(),
            got[i].to_f32(),
            want[i].to_f32()
        ))
    };
    if let Some(m) = differ(&got.0, &want.0, "y") {
        return Err(m);
    }
    b.backward_with_thresholds(&q, &x, &alpha, &dy, &shape, &mut got.0, &mut got.1)
        .map_err(e)?;
    q.backward_with_thresholds(&x, &alpha, &dy, &shape, &mut want.0, &mut want.1)
        .map_err(e)?;
    let again = got.1.clone();
    b.backward_with_thresholds(&q, &x, &alpha, &dy, &shape, &mut got.0, &mut got.1)
        .map_err(e)?;
    let failure = differ(&got.0, &want.0, "dx")
        .or_else(|| differ(&got.1, &want.1, "dα"))
        .or_else(|| differ(&again, &got.1, "dα (second run)"));
    failure.map_or(Ok(()), Err)
}

fn rsign_agrees_with_the_cpu(b: &Backend) -> Result<(), String> {
    let n = harness::elements();
    // One channel (dα combined by the lane tree), 64 (tree, fewer rows per
    // group), 3000 (under 32 row groups: combined in group order).
    for channels in [1, 64, 3000] {
        let shape = [n / channels, channels];
        rsign_agree::<f32>(b, shape)?;
        rsign_agree::<f16>(b, shape)?;
        rsign_agree::<bf16>(b, shape)?;
    }
    // No rows: dα is still written, +0.
    rsign_agree::<f32>(b, [0, 5])
}

fn rsign_needs_its_thresholds(b: &Backend) -> Result<(), String> {
    let q: Quantizer = "rsign".parse().unwrap();
    let mut y = [7.0f32; 4];
    let mut dalpha = [7.0f32; 2];
    let plain = b.forward(&q, &[1.0f32; 4], &[2, 2], &mut y);
    let short = b.backward_with_thresholds(
        &q,
        &[1.0f32; 4],
        &[0.0; 2],
        &[1.0; 4],
        &[2, 2],
        &mut y,
        &mut dalpha[..1],
    );
    match (plain, short) {
        (
            Err(lowbit::Error::NeedsThresholds { .. }),
            Err(lowbit::Error::ThresholdLength { .. }),
        ) if y == [7.0; 4] && dalpha == [7.0; 2] => Ok(()),
        other => Err(format!(
            "expected typed errors and untouched outputs, got {other:?}, {y:?}, {dalpha:?}"
        )),
    }
}

/// rsign on views at odd offsets, on a stream of the caller's, with one
/// workspace grown by a larger call and reused by a smaller one.
#[cfg(lowbit_cuda)]
fn rsign_device_views_offset_by_one(b: &Backend) -> Result<(), String> {
    let Some(cuda) = b.as_cuda() else {
        return Ok(());
    };
    let err = |e: cudarc::driver::DriverError| format!("{e:?}");
    let stream = cuda.context().new_stream().map_err(err)?;
    let q: Quantizer = "rsign".parse().unwrap();
    let mut ws = lowbit::cuda::Workspace::new();
    for shape in [[10_007, 3], [2, 5]] {
        let (n, c) = (shape[0] * shape[1], shape[1]);
        let x = random::<f16>(n + 1, 10, true);
        let alpha = random::<f16>(c + 1, 11, false);
        let dy = random::<f16>(n + 1, 12, false);
        let xd = stream.clone_htod(&x).map_err(err)?;
        let ad = stream.clone_htod(&alpha).map_err(err)?;
        let dyd = stream.clone_htod(&dy).map_err(err)?;
        let mut dx = stream.alloc_zeros::<f16>(n + 2).map_err(err)?;
        let mut da = stream.alloc_zeros::<f16>(c + 1).map_err(err)?;
        cuda.backward_with_thresholds(
            &q,
            &stream,
            &xd.slice(1..),
            &ad.slice(1..),
            &dyd.slice(1..),
            &shape,
            &mut dx.slice_mut(2..),
            &mut da.slice_mut(1..),
            &mut ws,
        )
        .map_err(|e| e.to_string())?;
        let got_dx = stream.clone_dtoh(&dx).map_err(err)?;
        let got_da = stream.clone_dtoh(&da).map_err(err)?;
        let mut want_dx = vec![f16::ZERO; n];
        let mut want_da = vec![f16::ZERO; c];
        q.backward_with_thresholds(
            &x[1..],
            &alpha[1..],
            &dy[1..],
            &shape,
            &mut want_dx,
            &mut want_da,
        )
        .unwrap();
        let bits = |v: &[f16]| v.iter().map(|h| h.to_bits()).collect::<Vec<_>>();
        let nan_eq = |a: &[f16], b: &[f16]| {
            a.iter()
                .zip(b)
                .all(|(a, b)| a.to_bits() == b.to_bits() || a.is_nan() && b.is_nan())
        };
        if !nan_eq(&got_dx[2..], &want_dx) || !nan_eq(&got_da[1..], &want_da) {
            return Err(format!("rsign {shape:?}: device views differ from the CPU"));
        }
        if bits(&got_dx[..2]) != [0, 0] || got_da[0].to_bits() != 0 {
            return Err(format!("rsign {shape:?}: wrote before an output view"));
        }
    }
    Ok(())
}

/// The C ABI's device entry points (`lowbit_*_device`, what a C++ stack
/// calls with its own pointers and stream) give the CPU's bits.
#[cfg(lowbit_cuda)]
fn c_abi_on_device_agrees_with_the_cpu(b: &Backend) -> Result<(), String> {
    use crate::capi::*;
    use cudarc::driver::{DevicePtr, DevicePtrMut};
    use std::ffi::{CString, c_void};

    let Some(cuda) = b.as_cuda() else {
        return Ok(());
    };
    let err = |e: cudarc::driver::DriverError| format!("{e:?}");
    let stream = cuda.context().new_stream().map_err(err)?;
    let raw = stream.cu_stream().cast::<c_void>();
    let shape = [1001usize, 24];
    let n = shape[0] * shape[1];
    let x = random::<f16>(n, 21, false);
    let dy = random::<f16>(n, 22, true);
    let check = |what: &str, status: lowbit_status| match status {
        lowbit_status::LOWBIT_OK => Ok(()),
        s => Err(format!("{what}: {s:?}")),
    };
    for spec in [
        "ste_sign",
        "magnitude_aware_sign",
        "ste_tern(ternary_weight_networks=true)",
    ] {
        let q = spec.parse::<Quantizer>().unwrap();
        let mut handle = std::ptr::null_mut();
        let cspec = CString::new(spec).unwrap();
        // SAFETY: a NUL-terminated SPEC and a place for the handle.
        check("new", unsafe {
            lowbit_quantizer_new(cspec.as_ptr(), &mut handle)
        })?;
        let scales = q.saved_scale_len(&shape).unwrap();
        let xd = stream.clone_htod(&x).map_err(err)?;
        let dyd = stream.clone_htod(&dy).map_err(err)?;
        let mut y = stream.alloc_zeros::<f16>(n).map_err(err)?;
        let mut dx = stream.alloc_zeros::<f16>(n).map_err(err)?;
        let mut dxm = stream.alloc_zeros::<f16>(n).map_err(err)?;
        let mut mask = stream
            .alloc_zeros::<u32>(lowbit::mask_words(n))
            .map_err(err)?;
        let mut scale = stream.alloc_zeros::<f16>(scales.max(1)).map_err(err)?;
        {
            let p = |d: u64| d as *mut c_void;
            let (xp, _a) = xd.device_ptr(&stream);
            let (dyp, _b) = dyd.device_ptr(&stream);
            let (yp, _c) = y.device_ptr_mut(&stream);
            let (dxp, _d) = dx.device_ptr_mut(&stream);
            let (dxmp, _e) = dxm.device_ptr_mut(&stream);
            let (mp, _f) = mask.device_ptr_mut(&stream);
            let (scale_ptr, _g) = scale.device_ptr_mut(&stream);
            let sp = match scales {
                0 => std::ptr::null_mut(),
                _ => p(scale_ptr),
            };
            let (s, f) = (shape.as_ptr(), LOWBIT_F16);
            // SAFETY: live device buffers of the shape's sizes, on `raw`.
            unsafe {
                check(
                    "forward",
                    lowbit_forward_device(handle, f, p(xp), p(yp), s, 2, raw),
                )?;
                check(
                    "backward",
                    lowbit_backward_device(handle, f, p(xp), p(dyp), p(dxp), s, 2, raw),
                )?;
                if q.supports_mask() {
                    check(
                        "forward_with_mask",
                        lowbit_forward_with_mask_device(
                            handle,
                            f,
                            p(xp),
                            p(yp),
                            mp as *mut u32,
                            sp,
                            s,
                            2,
                            raw,
                        ),
                    )?;
                    check(
                        "backward_from_mask",
                        lowbit_backward_from_mask_device(
                            handle,
                            f,
                            mp as *const u32,
                            sp,
                            p(dyp),
                            p(dxmp),
                            s,
                            2,
                            raw,
                        ),
                    )?;
                }
                lowbit_quantizer_free(handle);
            }
        }
        stream.synchronize().map_err(err)?;
        let want_y = q.forward_vec(&x, &shape).unwrap();
        let want_dx = q.backward_vec(&x, &dy, &shape).unwrap();
        let got_y = stream.clone_dtoh(&y).map_err(err)?;
        let got_dx = stream.clone_dtoh(&dx).map_err(err)?;
        let got_dxm = stream.clone_dtoh(&dxm).map_err(err)?;
        let differs = |got: &[f16], want: &[f16]| (0..n).find(|&i| !same(got[i], want[i]));
        if let Some(i) = differs(&got_y, &want_y) {
            return Err(format!("{spec}: y[{i}] {} vs {}", got_y[i], want_y[i]));
        }
        if let Some(i) = differs(&got_dx, &want_dx) {
            return Err(format!("{spec}: dx[{i}] {} vs {}", got_dx[i], want_dx[i]));
        }
        if q.supports_mask()
            && let Some(i) = differs(&got_dxm, &want_dx)
        {
            return Err(format!("{spec}: dx[{i}] from the mask {}", got_dxm[i]));
        }
    }

    // rsign through its threshold calls, dα reduced on the device.
    let q: Quantizer = "rsign".parse().unwrap();
    let c = shape[1];
    let alpha = random::<f16>(c, 23, false);
    let mut handle = std::ptr::null_mut();
    let cspec = CString::new("rsign").unwrap();
    // SAFETY: a NUL-terminated SPEC and a place for the handle.
    check("new", unsafe {
        lowbit_quantizer_new(cspec.as_ptr(), &mut handle)
    })?;
    let xd = stream.clone_htod(&x).map_err(err)?;
    let ad = stream.clone_htod(&alpha).map_err(err)?;
    let dyd = stream.clone_htod(&dy).map_err(err)?;
    let mut y = stream.alloc_zeros::<f16>(n).map_err(err)?;
    let mut dx = stream.alloc_zeros::<f16>(n).map_err(err)?;
    let mut da = stream.alloc_zeros::<f16>(c).map_err(err)?;
    {
        let p = |d: u64| d as *mut c_void;
        let (xp, _a) = xd.device_ptr(&stream);
        let (ap, _b) = ad.device_ptr(&stream);
        let (dyp, _c) = dyd.device_ptr(&stream);
        let (yp, _d) = y.device_ptr_mut(&stream);
        let (dxp, _e) = dx.device_ptr_mut(&stream);
        let (dap, _f) = da.device_ptr_mut(&stream);
        let (s, f) = (shape.as_ptr(), LOWBIT_F16);
        // SAFETY: live device buffers of the shape's sizes, on `raw`.
        unsafe {
            check(
                "forward_with_thresholds",
                lowbit_forward_with_thresholds_device(handle, f, p(xp), p(ap), p(yp), s, 2, raw),
            )?;
            check(
                "backward_with_thresholds",
                lowbit_backward_with_thresholds_device(
                    handle,
                    f,
                    p(xp),
                    p(ap),
                    p(dyp),
                    p(dxp),
                    p(dap),
                    s,
                    2,
                    raw,
                ),
            )?;
            lowbit_quantizer_free(handle);
        }
    }
    stream.synchronize().map_err(err)?;
    let (mut want_y, mut want_dx, mut want_da) =
        (vec![f16::ZERO; n], vec![f16::ZERO; n], vec![f16::ZERO; c]);
    q.forward_with_thresholds(&x, &alpha, &shape, &mut want_y)
        .unwrap();
    q.backward_with_thresholds(&x, &alpha, &dy, &shape, &mut want_dx, &mut want_da)
        .unwrap();
    let got_y = stream.clone_dtoh(&y).map_err(err)?;
    let got_dx = stream.clone_dtoh(&dx).map_err(err)?;
    let got_da = stream.clone_dtoh(&da).map_err(err)?;
    let differs = |got: &[f16], want: &[f16]| (0..want.len()).find(|&i| !same(got[i], want[i]));
    if let Some(i) = differs(&got_y, &want_y) {
        return Err(format!("rsign: y[{i}] {} vs {}", got_y[i], want_y[i]));
    }
    if let Some(i) = differs(&got_dx, &want_dx) {
        return Err(format!("rsign: dx[{i}] {} vs {}", got_dx[i], want_dx[i]));
    }
    if let Some(i) = differs(&got_da, &want_da) {
        return Err(format!(
            "rsign: dalpha[{i}] {} vs {}",
            got_da[i], want_da[i]
        ));
    }
    Ok(())
}

fn main() {
    let mut tests: Vec<(&str, harness::Body, bool)> = vec![
        ("larq_reference", larq_reference, false),
        (
            "agrees_with_the_cpu_on_random_tensors",
            agrees_with_the_cpu_on_random_tensors,
            false,
        ),
        (
            "same_input_gives_the_same_bits",
            same_input_gives_the_same_bits,
            false,
        ),
        (
            "bad_input_is_an_error_and_writes_nothing",
            bad_input_is_an_error_and_writes_nothing,
            false,
        ),
        (
            "masked_passes_agree_with_the_cpu_and_with_x",
            masked_passes_agree_with_the_cpu_and_with_x,
            false,
        ),
        (
            "masks_for_quantizers_that_need_x_are_an_error",
            masks_for_quantizers_that_need_x_are_an_error,
            false,
        ),
    ];
    tests.push((
        "rsign_agrees_with_the_cpu",
        rsign_agrees_with_the_cpu,
        false,
    ));
    tests.push((
        "rsign_needs_its_thresholds",
        rsign_needs_its_thresholds,
        false,
    ));
    #[cfg(lowbit_cuda)]
    tests.push((
        "device_views_offset_by_one",
        device_views_offset_by_one,
        true,
    ));
    #[cfg(lowbit_cuda)]
    tests.push((
        "rsign_device_views_offset_by_one",
        rsign_device_views_offset_by_one,
        true,
    ));
    #[cfg(lowbit_cuda)]
    tests.push((
        "device_mask_views_offset_by_one",
        device_mask_views_offset_by_one,
        true,
    ));
    #[cfg(lowbit_cuda)]
    tests.push((
        "c_abi_on_device_agrees_with_the_cpu",
        c_abi_on_device_agrees_with_the_cpu,
        true,
    ));
    harness::run(tests);
}
