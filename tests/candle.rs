//! lowbit's quantizers as candle ops (`lowbit::candle`, feature `candle`):
//! values and gradients through candle's autograd are lowbit's own calls,
//! bit for bit, on every backend present; larq's reference cases pass
//! through candle; a small graph's gradients are the calls composed by hand;
//! layouts candle makes (transposes, offsets, broadcast gradients) are read
//! right; bad input is an error.
//!
//! The custom harness of `tests/harness`: the CUDA runs need candle's CUDA
//! backend (feature `candle-cuda`) and are skipped, with the reason,
//! without it.

mod common;
mod harness;

use std::error::Error;

use candle_core::{D, DType, Device, Tensor, Var, WithDType};
use lowbit::candle::{QuantizeExt, quantize_with_thresholds};
use lowbit::{Backend, Element, Quantizer, bf16, f16};

type R<T = ()> = Result<T, Box<dyn Error>>;

/// Runs a body that needs candle's device, mapping its errors to text.
fn on(b: &Backend, body: fn(&Backend, &Device) -> R) -> Result<(), String> {
    let device = harness::candle_device(b)?;
    body(b, &device).map_err(|e| e.to_string())
}

const SPECS: &[&str] = &[
    "ste_sign",
    "ste_sign(clip_value=none)",
    "approx_sign",
    "swish_sign(beta=5.0)",
    "ste_heaviside(clip_value=0.5)",
    "ste_heaviside(clip_value=0.5, unipolar=true)",
    "magnitude_aware_sign",
    "ste_tern(threshold_value=0.1)",
    "ste_tern(ternary_weight_networks=true)",
    "dorefa(k_bit=2)",
    "dorefa(k_bit=4, mode=weights)",
    "noop(precision=32)",
    "ede(progress=0.6)",
    "progressive_sign(temperature=0.75)",
    "ste_sign(scale=first_axis)",
    "swish_sign(beta=5.0, scale=first_axis)",
];

/// Values over [-3, 3) with the thresholds, zeros and infinities mixed in
/// (no NaN: a reduction makes a whole tensor NaN from one).
fn random<T: Element>(n: usize, seed: u32) -> Vec<T> {
    const EDGES: [f32; 9] = [0.0, -0.0, 1.0, -1.0, 0.5, -0.1, 0.1, f32::INFINITY, -2.0];
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let v = if s.is_multiple_of(31) {
                EDGES[(s >> 8) as usize % EDGES.len()]
            } else {
                (s >> 8) as f32 / (1u32 << 24) as f32 * 6.0 - 3.0
            };
            T::from_f32(v)
        })
        .collect()
}

fn bits<T: Element>(v: &[T]) -> Vec<u32> {
    v.iter().map(|v| v.to_f32().to_bits()).collect()
}

/// The first element where `got` and `want` differ, if any.
fn same_bits<T: Element>(what: &str, got: &[T], want: &[T]) -> R {
    if got.len() != want.len() {
        return Err(format!("{what}: {} elements, want {}", got.len(), want.len()).into());
    }
    let (g, w) = (bits(got), bits(want));
    match g.iter().zip(&w).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(i) => Err(format!(
            "{what}[{i}]: candle gives {:e}, lowbit {:e}",
            got[i].to_f32(),
            want[i].to_f32()
        )
        .into()),
    }
}

fn flat<T: WithDType>(t: &Tensor) -> R<Vec<T>> {
    Ok(t.flatten_all()?.to_vec1::<T>()?)
}

/// candle's autograd adds each gradient to a zero tensor: `v + 0`, which is
/// `v` but for −0, which becomes +0.
fn accumulated<T: Element>(v: &[T]) -> Vec<T> {
    v.iter().map(|v| T::from_f32(v.to_f32() + 0.0)).collect()
}

/// `y = q(x)` through candle and `dx` from `sum(y · dy)`'s backward, against
/// lowbit's calls on `b`. The gradient reaching the op at `y` is `dy`
/// accumulated, and the op's `dx` is accumulated again on its way to `x`.
fn agrees<T: Element + WithDType>(b: &Backend, device: &Device, spec: &str, shape: &[usize]) -> R {
    let q: Quantizer = spec.parse()?;
    let n = shape.iter().product();
    let (x, dy) = (random::<T>(n, 1), random::<T>(n, 2));
    let xv = Var::from_tensor(&Tensor::from_slice(&x, shape, device)?)?;
    let dyt = Tensor::from_slice(&dy, shape, device)?;
    let y = xv.quantize(&q)?;
    let grads = (&y * &dyt)?.sum_all()?.backward()?;
    let dx = grads.get(&xv).ok_or("no gradient for x")?;

    let (mut want_y, mut want_dx) = (vec![T::default(); n], vec![T::default(); n]);
    b.forward(&q, &x, shape, &mut want_y)?;
    b.backward(&q, &x, &accumulated(&dy), shape, &mut want_dx)?;
    let want_dx = accumulated(&want_dx);
    let what = format!("{spec} {:?} {shape:?}", <T as Element>::DTYPE);
    same_bits(&format!("{what} y"), &flat::<T>(&y)?, &want_y)?;
    same_bits(&format!("{what} dx"), &flat::<T>(dx)?, &want_dx)
}

fn values_and_gradients_are_lowbits(b: &Backend) -> Result<(), String> {
    on(b, |b, device| {
        for spec in SPECS {
            for shape in [&[3usize, 5, 7, 8][..], &[1000], &[64, 33]] {
                agrees::<f32>(b, device, spec, shape)?;
                agrees::<f16>(b, device, spec, shape)?;
                agrees::<bf16>(b, device, spec, shape)?;
            }
        }
        Ok(())
    })
}

/// larq's reference through candle: tensors made from the case's values,
/// read back widened to `f32` (exact), compared with each case's tolerance.
struct Through(Device);

impl Through {
    fn tensor<T: Element>(&self, v: &[T], shape: &[usize]) -> R<Tensor> {
        let wide: Vec<f32> = v.iter().map(|v| v.to_f32()).collect();
        let dtype = match T::DTYPE {
            lowbit::DType::F32 => DType::F32,
            lowbit::DType::F16 => DType::F16,
            lowbit::DType::BF16 => DType::BF16,
        };
        Ok(Tensor::from_slice(&wide, shape, &self.0)?.to_dtype(dtype)?)
    }

    fn back<T: Element>(t: &Tensor) -> R<Vec<T>> {
        let wide = flat::<f32>(&t.to_dtype(DType::F32)?)?;
        Ok(wide.into_iter().map(T::from_f32).collect())
    }

    fn run<T: Element>(
        &self,
        q: &Quantizer,
        x: &[T],
        dy: Option<&[T]>,
        shape: &[usize],
    ) -> R<Vec<T>> {
        let xv = Var::from_tensor(&self.tensor(x, shape)?)?;
        let y = xv.quantize(q)?;
        match dy {
            None => Self::back(&y),
            Some(dy) => {
                let grads = (&y * self.tensor(dy, shape)?)?.sum_all()?.backward()?;
                Self::back(grads.get(&xv).ok_or("no gradient for x")?)
            }
        }
    }
}

impl common::Runner for Through {
    fn forward<T: Element>(
        &self,
        q: &Quantizer,
        x: &[T],
        shape: &[usize],
    ) -> Result<Vec<T>, String> {
        self.run(q, x, None, shape).map_err(|e| e.to_string())
    }
    fn backward<T: Element>(
        &self,
        q: &Quantizer,
        x: &[T],
        dy: &[T],
        shape: &[usize],
    ) -> Result<Vec<T>, String> {
        self.run(q, x, Some(dy), shape).map_err(|e| e.to_string())
    }
    fn keeps_negative_zero_gradients(&self) -> bool {
        false
    }
}

fn larq_reference_through_candle(b: &Backend) -> Result<(), String> {
    let failures = common::run_all(&Through(harness::candle_device(b)?));
    match failures.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "{} of {} cases failed:\n{}",
            failures.len(),
            common::CASES,
            failures.join("\n")
        )),
    }
}

/// `loss = Σ (sign(x) · W_q)²` with `W_q = magnitude_aware_sign(W)` and
/// `x` quantized twice (its gradients add up), differentiated by candle and
/// by hand: the same candle ops without autograd, lowbit's backward calls
/// on host slices in between.
fn a_graph_differentiates_as_by_hand(_b: &Backend) -> Result<(), String> {
    on(_b, |_, device| {
        let act: Quantizer = "ste_sign(clip_value=1.0)".parse()?;
        let kernel: Quantizer = "magnitude_aware_sign".parse()?;
        let (xs, ws) = (random::<f32>(4 * 6, 7), random::<f32>(6 * 3, 8));
        let x = Var::from_tensor(&(Tensor::from_slice(&xs, (4, 6), device)? * 0.5)?)?;
        let w = Var::from_tensor(&Tensor::from_slice(&ws, (6, 3), device)?)?;

        let (qx, qw) = (x.quantize(&act)?, w.quantize(&kernel)?);
        let z = (qx.matmul(&qw)? + (qx.matmul(&qw)? * 0.25)?)?;
        let grads = z.sqr()?.sum_all()?.backward()?;

        // By hand: dz = 2z, then each product's and quantizer's gradient.
        let dz = (z.detach() * 2.0)?;
        let dqx = (dz.matmul(&qw.t()?)? + (dz.matmul(&qw.t()?)? * 0.25)?)?;
        let dqw = (qx.t()?.matmul(&dz)? + (qx.t()?.matmul(&dz)? * 0.25)?)?;
        let host = |t: &Tensor| flat::<f32>(t);
        let dx = act.backward_vec(&host(&x)?, &host(&dqx)?, &[4, 6])?;
        let dw = kernel.backward_vec(&host(&w)?, &host(&dqw)?, &[6, 3])?;

        let got = |v: &Var| grads.get(v).ok_or("no gradient").map(host);
        same_bits("dx", &got(&x)??, &dx)?;
        same_bits("dw", &got(&w)??, &dw)?;
        if dx.iter().all(|&v| v == 0.0) || dw.iter().all(|&v| v == 0.0) {
            return Err("a gradient that is all zero proves nothing".into());
        }
        Ok(())
    })
}

/// rsign's two gradients through candle: `dx` and `dα` as
/// `backward_with_thresholds` gives them, with α broadcast-free.
fn rsign_gives_both_gradients(b: &Backend) -> Result<(), String> {
    on(b, |b, device| {
        let q: Quantizer = "rsign".parse()?;
        let shape = [9, 4, 16];
        let n = shape.iter().product();
        let (x, dy) = (random::<f32>(n, 3), random::<f32>(n, 4));
        let alpha: Vec<f32> = random::<f32>(16, 5).iter().map(|a| a * 0.3).collect();
        let xv = Var::from_tensor(&Tensor::from_slice(&x, &shape[..], device)?)?;
        let av = Var::from_tensor(&Tensor::from_slice(&alpha, 16, device)?)?;
        let y = xv.quantize_with_thresholds(&av, &q)?;
        let dyt = Tensor::from_slice(&dy, &shape[..], device)?;
        let grads = (&y * dyt)?.sum_all()?.backward()?;

        let mut want_y = vec![0f32; n];
        let (mut want_dx, mut want_da) = (vec![0f32; n], vec![0f32; 16]);
        b.forward_with_thresholds(&q, &x, &alpha, &shape, &mut want_y)?;
        b.backward_with_thresholds(&q, &x, &alpha, &dy, &shape, &mut want_dx, &mut want_da)?;
        same_bits("y", &flat::<f32>(&y)?, &want_y)?;
        same_bits(
            "dx",
            &flat::<f32>(grads.get(&xv).ok_or("no dx")?)?,
            &want_dx,
        )?;
        let da = grads.get(&av).ok_or("no dα")?;
        if da.dims() != [16] {
            return Err(format!("dα has shape {:?}", da.dims()).into());
        }
        same_bits("dα", &flat::<f32>(da)?, &want_da)
    })
}

/// A transposed input (strided) is copied to row-major first, so the
/// channels are the view's last axis; its gradient comes back in the
/// original layout. A narrowed one (an offset) is read in place.
fn views_are_read_as_what_they_show(b: &Backend) -> Result<(), String> {
    on(b, |_, device| {
        let q: Quantizer = "magnitude_aware_sign".parse()?;
        let xs = random::<f32>(5 * 8, 9);
        let x = Var::from_tensor(&Tensor::from_slice(&xs, (5, 8), device)?)?;
        let xt = x.t()?;
        let dy = Tensor::from_slice(&random::<f32>(40, 10), (8, 5), device)?;
        let y = xt.quantize(&q)?;
        let grads = (&y * &dy)?.sum_all()?.backward()?;

        let row_major = flat::<f32>(&xt.contiguous()?)?;
        let want_y = q.forward_vec(&row_major, &[8, 5])?;
        same_bits("y", &flat::<f32>(&y)?, &want_y)?;
        let want_dx = q.backward_vec(&row_major, &flat::<f32>(&dy)?, &[8, 5])?;
        let dx = grads.get(&x).ok_or("no dx")?.t()?.contiguous()?;
        same_bits("dx", &flat::<f32>(&dx)?, &want_dx)?;

        let rows = x.narrow(0, 2, 3)?;
        let want = q.forward_vec(&xs[16..], &[3, 8])?;
        same_bits("narrowed", &flat::<f32>(&rows.quantize(&q)?)?, &want)?;
        // A gradient candle broadcasts (the mean's) has stride 0.
        let g = rows
            .quantize(&q)?
            .mean_keepdim(D::Minus1)?
            .sum_all()?
            .backward()?;
        let want = q.backward_vec(&xs[16..], &[1.0 / 8.0; 24], &[3, 8])?;
        same_bits(
            "broadcast dy",
            &flat::<f32>(&g.get(&x).ok_or("no dx")?.narrow(0, 2, 3)?)?,
            &want,
        )
    })
}

fn empty_and_scalar_tensors(b: &Backend) -> Result<(), String> {
    on(b, |_, device| {
        for spec in [
            "ste_sign",
            "magnitude_aware_sign",
            "ste_tern(ternary_weight_networks=true)",
        ] {
            let q: Quantizer = spec.parse()?;
            let empty = Var::from_tensor(&Tensor::zeros((0, 4), DType::F32, device)?)?;
            let y = empty.quantize(&q)?;
            if y.dims() != [0, 4] {
                return Err(format!("{spec}: an empty tensor became {:?}", y.dims()).into());
            }
            let g = y.sum_all()?.backward()?;
            if g.get(&empty).ok_or("no gradient")?.dims() != [0, 4] {
                return Err(format!("{spec}: the empty gradient's shape").into());
            }
            let scalar = Tensor::new(-0.25f32, device)?;
            let y = scalar.quantize(&q)?;
            let want = q.forward_vec(&[-0.25f32], &[])?;
            same_bits(spec, &[y.to_scalar::<f32>()?], &want)?;
        }
        Ok(())
    })
}

/// Each refused for its reason, as an error value, with lowbit's message.
fn bad_input_is_an_error(b: &Backend) -> Result<(), String> {
    on(b, |_, device| {
        let sign: Quantizer = "ste_sign".parse()?;
        let rsign: Quantizer = "rsign".parse()?;
        let x = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.0, 1.0, -3.0], (2, 3), device)?;
        let expect = |what: &str, r: candle_core::Result<Tensor>, says: &str| -> R {
            match r {
                Ok(_) => Err(format!("{what}: accepted").into()),
                Err(e) if e.to_string().contains(says) => Ok(()),
                Err(e) => Err(format!("{what}: `{e}` does not say `{says}`").into()),
            }
        };
        let ints = Tensor::from_slice(&[1u8, 2, 3], 3, device)?;
        expect(
            "u8",
            ints.quantize(&sign),
            "f32, f16 and bf16 tensors, not u8",
        )?;
        let wide = x.to_dtype(DType::F64)?;
        expect("f64", wide.quantize(&sign), "not f64")?;
        expect("rsign alone", x.quantize(&rsign), "thresholds")?;
        let alpha = Tensor::from_slice(&[0.0f32, 1.0], 2, device)?;
        expect(
            "α of 2 for 3 channels",
            x.quantize_with_thresholds(&alpha, &rsign),
            "one value per channel",
        )?;
        let alpha16 = Tensor::from_slice(&[0.0f32; 3], 3, device)?.to_dtype(DType::F16)?;
        expect(
            "α in f16",
            quantize_with_thresholds(&x, &alpha16, &rsign),
            "dtypes differ",
        )?;
        let alpha3 = Tensor::from_slice(&[0.0f32; 3], 3, device)?;
        expect(
            "thresholds for ste_sign",
            x.quantize_with_thresholds(&alpha3, &sign),
            "takes no thresholds",
        )?;
        Ok(())
    })
}

fn main() {
    harness::run(vec![
        (
            "values_and_gradients_are_lowbits",
            values_and_gradients_are_lowbits,
            false,
        ),
        (
            "larq_reference_through_candle",
            larq_reference_through_candle,
            false,
        ),
        (
            "a_graph_differentiates_as_by_hand",
            a_graph_differentiates_as_by_hand,
            false,
        ),
        (
            "rsign_gives_both_gradients",
            rsign_gives_both_gradients,
            false,
        ),
        (
            "views_are_read_as_what_they_show",
            views_are_read_as_what_they_show,
            false,
        ),
        ("empty_and_scalar_tensors", empty_and_scalar_tensors, false),
        ("bad_input_is_an_error", bad_input_is_an_error, false),
    ]);
}
