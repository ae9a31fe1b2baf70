//! The main job end to end: the `train_digits` example's network, trained
//! briefly through lowbit's quantizers, must learn the digits, on every
//! backend present (on CUDA with cuBLAS for the matrix products, where
//! libcublas loads). A broken forward, gradient or product fails here.
//!
//! A custom harness (`harness = false`, `tests/harness`) so that a backend
//! that cannot run is reported as skipped, not silently passed.

#[path = "../examples/train_digits/dense.rs"]
#[allow(dead_code)]
mod dense;
mod harness;
#[path = "../examples/train_digits/mlp.rs"]
#[allow(dead_code)]
mod mlp;

use dense::{ColumnMajor, Products, column_major, matmul};
use lowbit::{Backend, Quantizer};
use mlp::{Config, Engine, Mlp};

/// Trains `cfg` for 10 epochs on `backend` and returns the test accuracy.
fn train(mut cfg: Config, backend: &Backend) -> Result<f32, String> {
    cfg.epochs = 10;
    let data = mlp::load_digits().map_err(|e| e.to_string())?;
    let (train, test) = mlp::split(&data);
    if (train.len(), test.len()) != (1438, 359) {
        return Err(format!("split {} / {}", train.len(), test.len()));
    }
    let engine = Engine::new(backend.clone());
    let mut net = Mlp::new(cfg);
    let mut accuracy = 0.0;
    for epoch in 1..=net.epochs() {
        let stats = net
            .train_epoch(epoch, &train, &test, &engine, || {})
            .map_err(|e| format!("epoch {epoch}: {e}"))?;
        if !stats.loss.is_finite() {
            return Err(format!("epoch {epoch}: loss {}", stats.loss));
        }
        accuracy = stats.test_accuracy;
    }
    Ok(accuracy)
}

// The bar: with every hidden layer's gradient cut (activations'
// clip_value=1e-30), only the last layer learns, on random binary features,
// and reaches 88–92.5% after 10 epochs over seeds 1–6; the working network
// reaches 95.3–96.9% (measured on the 2-core CI machine).
const BAR: f32 = 0.94;

fn spec(s: &str) -> Quantizer {
    s.parse().expect("a valid SPEC")
}

fn above_bar(what: &str, accuracy: f32) -> Result<(), String> {
    match accuracy >= BAR {
        true => Ok(()),
        false => Err(format!("{what} test accuracy {accuracy} < {BAR}")),
    }
}

fn binarized_mlp_learns_the_digits(b: &Backend) -> Result<(), String> {
    above_bar("binarized", train(Config::binarized(spec("ste_sign")), b)?)
}

fn ternary_weights_learn_the_digits(b: &Backend) -> Result<(), String> {
    let mut cfg = Config::binarized(spec("ste_sign"));
    cfg.weights = Some(spec("ste_tern(ternary_weight_networks=true)"));
    above_bar("ternary-weight", train(cfg, b)?)
}

fn cut_hidden_gradients_stay_below_the_bar(b: &Backend) -> Result<(), String> {
    // The bar means something only if a broken gradient misses it.
    let mut cfg = Config::binarized(spec("ste_sign"));
    cfg.activations = mlp::Activation::Quantized(spec("ste_sign(clip_value=1e-30)"));
    match train(cfg, b)? {
        a if a < BAR => Ok(()),
        a => Err(format!("cut-gradient test accuracy {a} reaches the bar")),
    }
}

/// `(m, k, n)`: vectors, odd sizes, and the network's own layers.
const SHAPES: [(usize, usize, usize); 5] = [
    (1, 1, 1),
    (3, 5, 7),
    (7, 1, 3),
    (32, 64, 256),
    (359, 256, 10),
];

/// Operands in {−1, −½, 0, ½, 1}: every product is a multiple of ¼ and every
/// sum of up to 2^22 of them is exact in `f32`, so any summation order (a
/// blocked CPU kernel, cuBLAS, FMA or not) gives the same bits, and a wrong
/// index or transpose cannot hide inside a tolerance.
fn operands(m: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
    let a = (0..m * k).map(|i| ((i * 7 + 3) % 5) as f32 * 0.5 - 1.0);
    let b = (0..k * n).map(|i| ((i * 3 + 1) % 5) as f32 * 0.5 - 1.0);
    (a.collect(), b.collect())
}

/// A BLAS gemm taken literally: column-major, leading dimensions, op().
fn blas_reference(g: ColumnMajor, a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut c = vec![0.0; g.ldc * g.n];
    for j in 0..g.n {
        for i in 0..g.m {
            let dot: f64 = (0..g.k)
                .map(|l| {
                    let av = if g.trans_a {
                        a[l + i * g.lda]
                    } else {
                        a[i + l * g.lda]
                    };
                    let bv = if g.trans_b {
                        b[j + l * g.ldb]
                    } else {
                        b[l + j * g.ldb]
                    };
                    av as f64 * bv as f64
                })
                .sum();
            c[i + j * g.ldc] = dot as f32;
        }
    }
    c
}

/// Exactly equal, but for the sign of a zero: an accumulator that starts at
/// +0 turns a sum of −0 products into +0.
fn equal(what: &str, got: &[f32], want: &[f32]) -> Result<(), String> {
    match got.iter().zip(want).position(|(g, w)| g != w) {
        None if got.len() == want.len() => Ok(()),
        None => Err(format!("{what}: {} values, want {}", got.len(), want.len())),
        Some(i) => Err(format!("{what}: [{i}] = {}, want {}", got[i], want[i])),
    }
}

/// The products the network uses on this backend agree with a literal
/// row-major product: on the CPU, `matmul`, and the BLAS call cuBLAS gets
/// for it (`column_major`) run by a reference gemm; on CUDA, cuBLAS itself.
fn matrix_products_are_right(b: &Backend) -> Result<(), String> {
    let engine = Engine::new(b.clone());
    for (m, k, n) in SHAPES {
        for (a_t, b_t) in [(false, false), (true, false), (false, true), (true, true)] {
            let what = format!("{m}×{k}·{k}×{n} (a_t {a_t}, b_t {b_t})");
            let (x, y) = operands(m, k, n);
            let mut want = vec![0.0; m * n];
            matmul(m, k, n, &x, a_t, &y, b_t, &mut want);
            match &engine.products {
                Products::Cpu if b.name() == "cpu" => {
                    let g = column_major(m, k, n, a_t, b_t);
                    equal(&what, &blas_reference(g, &y, &x), &want)?;
                }
                Products::Cpu => return harness::skip_without("cuBLAS", &engine.products_reason),
                #[cfg(lowbit_cuda)]
                Products::Cublas(blas) => {
                    let got = (|| -> Result<Vec<f32>, mlp::BoxError> {
                        let s = blas.stream();
                        let (xd, yd) = (s.clone_htod(&x)?, s.clone_htod(&y)?);
                        let mut zd = s.alloc_zeros::<f32>(m * n)?;
                        blas.matmul(m, k, n, &xd, a_t, &yd, b_t, &mut zd)?;
                        let z = s.clone_dtoh(&zd)?;
                        s.synchronize()?;
                        Ok(z)
                    })()
                    .map_err(|e| format!("{what}: {e}"))?;
                    equal(&what, &got, &want)?;
                }
            }
        }
    }
    Ok(())
}

fn main() {
    harness::run(vec![
        (
            "matrix_products_are_right",
            matrix_products_are_right,
            false,
        ),
        (
            "binarized_mlp_learns_the_digits",
            binarized_mlp_learns_the_digits,
            false,
        ),
        (
            "ternary_weights_learn_the_digits",
            ternary_weights_learn_the_digits,
            false,
        ),
        (
            "cut_hidden_gradients_stay_below_the_bar",
            cut_hidden_gradients_stay_below_the_bar,
            false,
        ),
    ]);
}
