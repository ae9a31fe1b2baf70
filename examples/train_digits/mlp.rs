//! A small binarized MLP on the UCI digits, trained with lowbit's quantizers.
//!
//! Shared by the `train_digits` example and `tests/training.rs`, so the test
//! trains exactly the network a user runs.
//!
//! The network is larq's classic BNN recipe for dense layers: every layer
//! multiplies by quantized weights (`W_q = q_w(W)`, latent real-valued `W`
//! kept for the optimizer and clipped to [−1, 1]), batch-normalizes, and every
//! hidden layer quantizes its output (`a = q_a(h)`), so the hidden layers see
//! only ±1 activations. The pixels themselves enter the first layer as they
//! are (scaled to [−1, 1]): binarizing the data set is a different problem,
//! and larq's models leave the first layer's input real too.
//!
//! Both quantizers run through lowbit's public API on the chosen [`Backend`]:
//! forward for `W_q` and `a`, backward for their gradients. The matrix
//! products run beside them (`dense.rs`): `matrixmultiply` on the CPU, cuBLAS
//! on a CUDA backend.

use std::io::Read;

use lowbit::{Backend, Quantizer};

use crate::dense::{Products, Saved};

/// The data set, shipped with the project (see `examples/data/README.md`).
const DIGITS_CSV_GZ: &[u8] = include_bytes!("../data/digits.csv.gz");

pub const PIXELS: usize = 64;
pub const CLASSES: usize = 10;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Images as rows of 64 pixels scaled to [−1, 1], and their labels.
#[derive(Clone)]
pub struct Data {
    pub x: Vec<f32>,
    pub labels: Vec<u8>,
}

impl Data {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    fn subset(&self, rows: &[usize]) -> Data {
        let mut x = Vec::with_capacity(rows.len() * PIXELS);
        for &r in rows {
            x.extend_from_slice(&self.x[r * PIXELS..(r + 1) * PIXELS]);
        }
        Data {
            x,
            labels: rows.iter().map(|&r| self.labels[r]).collect(),
        }
    }
}

/// Reads the 1,797 digits: 64 pixels 0..16 and a label per CSV row.
pub fn load_digits() -> Result<Data, BoxError> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(DIGITS_CSV_GZ).read_to_string(&mut text)?;
    let mut data = Data {
        x: Vec::new(),
        labels: Vec::new(),
    };
    for (i, line) in text.lines().enumerate() {
        let fields: Vec<f32> = line
            .split(',')
            .map(|f| f.trim().parse::<f32>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("digits.csv line {}: {e}", i + 1))?;
        let Some((&label, pixels)) = fields.split_last() else {
            continue;
        };
        if pixels.len() != PIXELS || !(0.0..CLASSES as f32).contains(&label) {
            return Err(format!("digits.csv line {}: not 64 pixels and a label", i + 1).into());
        }
        data.x.extend(pixels.iter().map(|p| p / 8.0 - 1.0));
        data.labels.push(label as u8);
    }
    Ok(data)
}

/// A fixed split: the same shuffled 20% of the images are the test set on
/// every run, whatever seed trains the network.
pub fn split(data: &Data) -> (Data, Data) {
    let mut rows: Vec<usize> = (0..data.len()).collect();
    Rng::new(0x5EED_D161).shuffle(&mut rows);
    let test = data.len() / 5;
    (data.subset(&rows[test..]), data.subset(&rows[..test]))
}

/// SplitMix64: a seeded, dependency-free generator, enough for shuffling
/// and initialization.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [−1, 1).
    fn symmetric(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// Where the network runs: lowbit's backend for the quantizers, and the
/// matrix products beside it.
pub struct Engine {
    pub backend: Backend,
    pub products: Products,
    /// Where the products run, and why, in words.
    pub products_reason: String,
}

impl Engine {
    pub fn new(backend: Backend) -> Self {
        let (products, products_reason) = Products::for_backend(&backend);
        Engine {
            backend,
            products,
            products_reason,
        }
    }
}

/// What the hidden layers apply to their batch-normalized outputs.
#[derive(Clone, Debug)]
pub enum Activation {
    /// A lowbit quantizer, its gradient from lowbit's backward.
    Quantized(Quantizer),
    /// The full-precision baseline: clip to [−1, 1], gradient 1 inside.
    HardTanh,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// The weight quantizer; `None` trains full-precision weights.
    pub weights: Option<Quantizer>,
    pub activations: Activation,
    pub hidden: Vec<usize>,
    pub epochs: usize,
    pub batch: usize,
    pub learning_rate: f32,
    pub seed: u64,
}

impl Config {
    /// The binarized network: `spec` for weights and activations.
    pub fn binarized(spec: Quantizer) -> Self {
        Config {
            weights: Some(spec),
            activations: Activation::Quantized(spec),
            ..Self::full_precision()
        }
    }

    /// The same network with real weights and hard-tanh activations.
    pub fn full_precision() -> Self {
        Config {
            weights: None,
            activations: Activation::HardTanh,
            hidden: vec![256, 256],
            epochs: 30,
            batch: 32,
            learning_rate: 0.005,
            seed: 1,
        }
    }
}

/// One parameter tensor with its gradient and Adam's moments.
struct Param {
    value: Vec<f32>,
    grad: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Param {
    fn new(value: Vec<f32>) -> Self {
        let n = value.len();
        Param {
            value,
            grad: vec![0.0; n],
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    /// Adam (β₁ = 0.9, β₂ = 0.999, ε = 1e−7 as Keras), step `t` from 1.
    fn adam(&mut self, lr: f32, t: i32) {
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-7f32);
        let lr_t = lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
        for i in 0..self.value.len() {
            let g = self.grad[i];
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g;
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g * g;
            self.value[i] -= lr_t * self.m[i] / (self.v[i].sqrt() + eps);
        }
    }
}

/// Dense layer (no bias: batch norm's β is the bias) followed by batch norm.
struct Layer {
    inputs: usize,
    outputs: usize,
    w: Param,
    gamma: Param,
    beta: Param,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
    // Saved by the training forward for the backward.
    products: Option<Saved>,
    xhat: Vec<f32>,
    inv_std: Vec<f32>,
    h: Vec<f32>,
}

const BN_EPS: f32 = 1e-3;
const BN_MOMENTUM: f32 = 0.9;

impl Layer {
    fn new(inputs: usize, outputs: usize, rng: &mut Rng) -> Self {
        // Glorot uniform, Keras' default.
        let limit = (6.0 / (inputs + outputs) as f32).sqrt();
        let w = (0..inputs * outputs)
            .map(|_| rng.symmetric() * limit)
            .collect();
        Layer {
            inputs,
            outputs,
            w: Param::new(w),
            gamma: Param::new(vec![1.0; outputs]),
            beta: Param::new(vec![0.0; outputs]),
            running_mean: vec![0.0; outputs],
            running_var: vec![1.0; outputs],
            products: None,
            xhat: Vec::new(),
            inv_std: Vec::new(),
            h: Vec::new(),
        }
    }

    fn params(&mut self) -> [&mut Param; 3] {
        [&mut self.w, &mut self.gamma, &mut self.beta]
    }

    /// `h = BN(x · q_w(W))`, with batch statistics when training.
    fn forward(
        &mut self,
        x: &[f32],
        rows: usize,
        cfg: &Config,
        engine: &Engine,
        train: bool,
    ) -> Result<Vec<f32>, BoxError> {
        let (k, n) = (self.inputs, self.outputs);
        let q = cfg.weights.as_ref();
        let (z, saved) =
            engine
                .products
                .forward(q, &engine.backend, x, &self.w.value, rows, k, n)?;

        let (mean, var) = if train {
            let (mean, var) = column_moments(&z, n);
            for j in 0..n {
                self.running_mean[j] =
                    BN_MOMENTUM * self.running_mean[j] + (1.0 - BN_MOMENTUM) * mean[j];
                self.running_var[j] =
                    BN_MOMENTUM * self.running_var[j] + (1.0 - BN_MOMENTUM) * var[j];
            }
            (mean, var)
        } else {
            (self.running_mean.clone(), self.running_var.clone())
        };
        let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v + BN_EPS).sqrt()).collect();
        let mut xhat = z;
        let mut h = vec![0.0; rows * n];
        for (xr, hr) in xhat.chunks_mut(n).zip(h.chunks_mut(n)) {
            for j in 0..n {
                xr[j] = (xr[j] - mean[j]) * inv_std[j];
                hr[j] = self.gamma.value[j] * xr[j] + self.beta.value[j];
            }
        }
        if train {
            self.products = Some(saved);
            self.xhat = xhat;
            self.inv_std = inv_std;
            self.h = h.clone();
        }
        Ok(h)
    }

    /// Takes `dL/dh`, sets the parameters' gradients, returns `dL/dx`.
    fn backward(
        &mut self,
        dh: &[f32],
        rows: usize,
        cfg: &Config,
        engine: &Engine,
    ) -> Result<Vec<f32>, BoxError> {
        let (k, n) = (self.inputs, self.outputs);
        let r = rows as f32;
        let mut sum_dxhat = vec![0.0f32; n];
        let mut sum_dxhat_xhat = vec![0.0f32; n];
        self.gamma.grad.fill(0.0);
        self.beta.grad.fill(0.0);
        for (dr, xr) in dh.chunks(n).zip(self.xhat.chunks(n)) {
            for j in 0..n {
                self.beta.grad[j] += dr[j];
                self.gamma.grad[j] += dr[j] * xr[j];
                let dxhat = dr[j] * self.gamma.value[j];
                sum_dxhat[j] += dxhat;
                sum_dxhat_xhat[j] += dxhat * xr[j];
            }
        }
        let mut dz = vec![0.0; rows * n];
        for ((zr, dr), xr) in dz.chunks_mut(n).zip(dh.chunks(n)).zip(self.xhat.chunks(n)) {
            for j in 0..n {
                let dxhat = dr[j] * self.gamma.value[j];
                zr[j] =
                    self.inv_std[j] / r * (r * dxhat - sum_dxhat[j] - xr[j] * sum_dxhat_xhat[j]);
            }
        }

        let saved = self
            .products
            .as_ref()
            .ok_or("backward without a training forward")?;
        let q = cfg.weights.as_ref();
        let (dw, dx) =
            engine
                .products
                .backward(q, &engine.backend, saved, &self.w.value, &dz, rows, k, n)?;
        self.w.grad = dw;
        Ok(dx)
    }
}

/// Per-column mean and (biased) variance of a row-major matrix.
fn column_moments(z: &[f32], n: usize) -> (Vec<f32>, Vec<f32>) {
    let rows = (z.len() / n) as f32;
    let mut mean = vec![0.0f32; n];
    for row in z.chunks(n) {
        for j in 0..n {
            mean[j] += row[j];
        }
    }
    mean.iter_mut().for_each(|m| *m /= rows);
    let mut var = vec![0.0f32; n];
    for row in z.chunks(n) {
        for j in 0..n {
            var[j] += (row[j] - mean[j]).powi(2);
        }
    }
    var.iter_mut().for_each(|v| *v /= rows);
    (mean, var)
}

/// Loss and accuracy over one epoch, and the test accuracy after it.
#[derive(Clone, Copy, Debug)]
pub struct EpochStats {
    pub epoch: usize,
    pub loss: f32,
    pub train_accuracy: f32,
    pub test_accuracy: f32,
}

pub struct Mlp {
    cfg: Config,
    layers: Vec<Layer>,
    step: i32,
}

impl Mlp {
    pub fn new(cfg: Config) -> Self {
        let mut rng = Rng::new(cfg.seed);
        let mut sizes = vec![PIXELS];
        sizes.extend(&cfg.hidden);
        sizes.push(CLASSES);
        let layers = sizes
            .windows(2)
            .map(|io| Layer::new(io[0], io[1], &mut rng))
            .collect();
        Mlp {
            cfg,
            layers,
            step: 0,
        }
    }

    /// Logits for `rows` images; hidden activations through the quantizer.
    fn forward(
        &mut self,
        x: &[f32],
        rows: usize,
        engine: &Engine,
        train: bool,
    ) -> Result<Vec<f32>, BoxError> {
        let mut a = x.to_vec();
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let h = layer.forward(&a, rows, &self.cfg, engine, train)?;
            a = if i == last {
                h
            } else {
                activate(&self.cfg.activations, &h, layer.outputs, &engine.backend)?
            };
        }
        Ok(a)
    }

    fn backward(
        &mut self,
        dlogits: Vec<f32>,
        rows: usize,
        engine: &Engine,
    ) -> Result<(), BoxError> {
        let mut grad = dlogits;
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter_mut().enumerate().rev() {
            if i != last {
                grad = activate_grad(
                    &self.cfg.activations,
                    &layer.h,
                    &grad,
                    layer.outputs,
                    &engine.backend,
                )?;
            }
            grad = layer.backward(&grad, rows, &self.cfg, engine)?;
        }
        Ok(())
    }

    /// One pass over `train` in shuffled mini-batches, then the test accuracy.
    /// `on_batch` is called after every batch (for a progress bar).
    pub fn train_epoch(
        &mut self,
        epoch: usize,
        train: &Data,
        test: &Data,
        engine: &Engine,
        mut on_batch: impl FnMut(),
    ) -> Result<EpochStats, BoxError> {
        let mut order: Vec<usize> = (0..train.len()).collect();
        Rng::new(self.cfg.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9)).shuffle(&mut order);
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        for rows in order.chunks(self.cfg.batch) {
            let batch = train.subset(rows);
            let logits = self.forward(&batch.x, rows.len(), engine, true)?;
            let (loss, hits, dlogits) = softmax_cross_entropy(&logits, &batch.labels);
            loss_sum += loss as f64 * rows.len() as f64;
            correct += hits;
            self.backward(dlogits, rows.len(), engine)?;
            self.step += 1;
            let clip = self.cfg.weights.is_some();
            for layer in &mut self.layers {
                for p in layer.params() {
                    p.adam(self.cfg.learning_rate, self.step);
                }
                // larq's weight_clip: latent weights outside [−1, 1] would
                // get no gradient through a clipped estimator again.
                if clip {
                    layer
                        .w
                        .value
                        .iter_mut()
                        .for_each(|w| *w = w.clamp(-1.0, 1.0));
                }
            }
            on_batch();
        }
        Ok(EpochStats {
            epoch,
            loss: (loss_sum / train.len() as f64) as f32,
            train_accuracy: correct as f32 / train.len() as f32,
            test_accuracy: self.accuracy(test, engine)?,
        })
    }

    /// Fraction of `data` classified right, batch norm on running statistics.
    pub fn accuracy(&mut self, data: &Data, engine: &Engine) -> Result<f32, BoxError> {
        let logits = self.forward(&data.x, data.len(), engine, false)?;
        let (_, hits, _) = softmax_cross_entropy(&logits, &data.labels);
        Ok(hits as f32 / data.len() as f32)
    }

    pub fn epochs(&self) -> usize {
        self.cfg.epochs
    }

    pub fn batches_per_epoch(&self, train: &Data) -> usize {
        train.len().div_ceil(self.cfg.batch)
    }
}

fn activate(
    act: &Activation,
    h: &[f32],
    n: usize,
    backend: &Backend,
) -> Result<Vec<f32>, BoxError> {
    let mut a = vec![0.0; h.len()];
    match act {
        Activation::Quantized(q) => backend.forward(q, h, &[h.len() / n, n], &mut a)?,
        Activation::HardTanh => a
            .iter_mut()
            .zip(h)
            .for_each(|(a, &h)| *a = h.clamp(-1.0, 1.0)),
    }
    Ok(a)
}

fn activate_grad(
    act: &Activation,
    h: &[f32],
    da: &[f32],
    n: usize,
    backend: &Backend,
) -> Result<Vec<f32>, BoxError> {
    let mut dh = vec![0.0; h.len()];
    match act {
        Activation::Quantized(q) => backend.backward(q, h, da, &[h.len() / n, n], &mut dh)?,
        Activation::HardTanh => {
            for ((d, &h), &g) in dh.iter_mut().zip(h).zip(da) {
                *d = if h.abs() <= 1.0 { g } else { 0.0 };
            }
        }
    }
    Ok(dh)
}

/// Mean loss, number of correct argmax predictions, and `dL/dlogits`.
fn softmax_cross_entropy(logits: &[f32], labels: &[u8]) -> (f32, usize, Vec<f32>) {
    let rows = labels.len();
    let mut grad = vec![0.0; logits.len()];
    let (mut loss, mut hits) = (0.0f32, 0);
    for ((row, g), &label) in logits
        .chunks(CLASSES)
        .zip(grad.chunks_mut(CLASSES))
        .zip(labels)
    {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
        let label = label as usize;
        loss += sum.ln() - (row[label] - max);
        let best = (0..CLASSES).fold(0, |b, j| if row[j] > row[b] { j } else { b });
        hits += usize::from(best == label);
        for j in 0..CLASSES {
            let p = (row[j] - max).exp() / sum;
            g[j] = (p - f32::from(j == label)) / rows as f32;
        }
    }
    (loss / rows as f32, hits, grad)
}
