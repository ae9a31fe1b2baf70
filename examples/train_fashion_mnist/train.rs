//! The data, the recipes and the training loop.

use std::error::Error;
use std::path::Path;
use std::time::Instant;

use candle_core::{D, DType, Device, Result, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, loss};
use indicatif::ProgressBar;

use crate::idx::Labelled;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::net::{MOMENTUM, Net, Norm};

/// The errors of a run: candle's, the data's.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// Images (N, 1, 28, 28) scaled to [−1, 1] as larq's tutorial scales them,
/// and their labels (N) as u32.
#[derive(Clone)]
pub struct Split {
    pub images: Tensor,
    pub labels: Tensor,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.elem_count()
    }

    fn from_labelled(set: Labelled, limit: Option<usize>, device: &Device) -> Result<Split> {
        let n = limit.map_or(set.count, |l| l.min(set.count));
        let side = set.rows * set.cols;
        let pixels: Vec<f32> = set.pixels[..n * side]
            .iter()
            .map(|&p| f32::from(p) / 127.5 - 1.0)
            .collect();
        let labels: Vec<u32> = set.labels[..n].iter().map(|&l| u32::from(l)).collect();
        Ok(Split {
            images: Tensor::from_vec(pixels, (n, 1, set.rows, set.cols), device)?,
            labels: Tensor::from_vec(labels, n, device)?,
        })
    }

    /// Images `start..start + len` and their labels.
    fn slice(&self, start: usize, len: usize) -> Result<(Tensor, Tensor)> {
        Ok((
            self.images.narrow(0, start, len)?,
            self.labels.narrow(0, start, len)?,
        ))
    }
}

/// Fashion-MNIST's training and test splits.
#[derive(Clone)]
pub struct Data {
    pub train: Split,
    pub test: Split,
}

/// Reads the four IDX files of `dir`; `limit` keeps the first training
/// images only.
pub fn load(
    dir: &Path,
    limit: Option<usize>,
    device: &Device,
) -> std::result::Result<Data, BoxError> {
    let read = |set: &str| {
        Labelled::read(
            &dir.join(format!("{set}-images-idx3-ubyte.gz")),
            &dir.join(format!("{set}-labels-idx1-ubyte.gz")),
            10,
        )
    };
    let (train, test) = (read("train")?, read("t10k")?);
    if (train.rows, train.cols) != (28, 28) || (test.rows, test.cols) != (28, 28) {
        return Err(format!(
            "{}: the images are {}x{} (training) and {}x{} (test), not 28x28",
            dir.display(),
            train.rows,
            train.cols,
            test.rows,
            test.cols
        )
        .into());
    }
    Ok(Data {
        train: Split::from_labelled(train, limit, device)?,
        test: Split::from_labelled(test, None, device)?,
    })
}

/// The training images batch-norm statistics are recomputed over for a
/// test (the default recipe; the end of a run on the moving averages).
pub const RECALIBRATION: usize = 5_000;

/// How a network is trained and tested.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub epochs: usize,
    pub batch: usize,
    /// Adam's learning rate at the first step.
    pub learning_rate: f64,
    /// Where a cosine decay takes it at the last step; `None`: constant.
    pub final_learning_rate: Option<f64>,
    /// A learned scale on the logits' batch norm.
    pub scaled_logits: bool,
    /// Test on batch-norm statistics recomputed over this many training
    /// images ([`Net::recalibrated`]); 0: on the moving averages, as Keras.
    pub recalibration: usize,
}

impl Recipe {
    /// larq's tutorial exactly: batch 64, Adam at Keras's defaults, 6
    /// epochs, the test on the moving averages.
    pub fn larq() -> Recipe {
        Recipe {
            epochs: 6,
            batch: 64,
            learning_rate: 1e-3,
            final_learning_rate: None,
            scaled_logits: false,
            recalibration: 0,
        }
    }

    /// This example's default.
    pub fn better() -> Recipe {
        Recipe {
            epochs: 8,
            batch: 64,
            learning_rate: 2e-3,
            final_learning_rate: Some(2e-5),
            scaled_logits: true,
            recalibration: RECALIBRATION,
        }
    }

    /// The learning rate at step `t` of `steps`.
    fn learning_rate(&self, t: usize, steps: usize) -> f64 {
        match self.final_learning_rate {
            None => self.learning_rate,
            Some(end) => {
                let done = t as f64 / steps.saturating_sub(1).max(1) as f64;
                end + (self.learning_rate - end) * 0.5 * (1.0 + (std::f64::consts::PI * done).cos())
            }
        }
    }
}

/// What an epoch measured.
#[derive(Debug, Clone)]
pub struct Epoch {
    pub epoch: usize,
    /// The mean training loss and accuracy over the epoch's batches.
    pub loss: f64,
    pub train_accuracy: f64,
    pub test_accuracy: f64,
    /// Training time, then the test's (recalibration included).
    pub seconds: f64,
    pub test_seconds: f64,
}

/// The batch size of the test and of the recalibration passes.
const EVAL_BATCH: usize = 1000;

/// Trains `net` by `recipe`, shuffling with `rng`; `bar` shows each epoch's
/// steps and `report` gets each epoch's numbers.
pub fn train(
    net: &Net,
    data: &Data,
    recipe: &Recipe,
    rng: &mut StdRng,
    bar: &ProgressBar,
    mut report: impl FnMut(&Epoch),
) -> Result<Vec<Epoch>> {
    // Keras's Adam: epsilon 1e-7, no weight decay.
    let params = ParamsAdamW {
        lr: recipe.learning_rate,
        eps: 1e-7,
        weight_decay: 0.0,
        ..ParamsAdamW::default()
    };
    let mut adam = AdamW::new(net.trained(), params)?;
    let n = data.train.len();
    let per_epoch = n.div_ceil(recipe.batch);
    let steps = per_epoch * recipe.epochs;
    let device = data.train.images.device();
    let mut epochs = Vec::new();
    for epoch in 1..=recipe.epochs {
        let start = Instant::now();
        bar.reset();
        bar.set_length(per_epoch as u64);
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.shuffle(rng);
        let (mut loss_sum, mut hits) = (0.0, 0);
        for (i, chunk) in order.chunks(recipe.batch).enumerate() {
            adam.set_learning_rate(recipe.learning_rate(per_epoch * (epoch - 1) + i, steps));
            let idx = Tensor::from_slice(chunk, chunk.len(), device)?;
            let x = data.train.images.index_select(&idx, 0)?;
            let y = data.train.labels.index_select(&idx, 0)?;
            let logits = net.forward(&x, Norm::Train(1.0 - MOMENTUM))?;
            let loss = loss::cross_entropy(&logits, &y)?;
            adam.backward_step(&loss)?;
            net.clip_kernels()?;

            loss_sum += f64::from(loss.to_scalar::<f32>()?) * chunk.len() as f64;
            hits += count_hits(&logits.detach(), &y)?;
            let seen = (i * recipe.batch + chunk.len()) as f64;
            bar.set_message(format!(
                "loss {:.4}, accuracy {:.1}%",
                loss_sum / seen,
                100.0 * hits as f64 / seen
            ));
            bar.inc(1);
        }
        let seconds = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let test_accuracy = test(net, data, recipe.recalibration)?;
        let e = Epoch {
            epoch,
            loss: loss_sum / n as f64,
            train_accuracy: hits as f64 / n as f64,
            test_accuracy,
            seconds,
            test_seconds: start.elapsed().as_secs_f64(),
        };
        report(&e);
        epochs.push(e);
    }
    Ok(epochs)
}

fn count_hits(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let hits = logits.argmax(D::Minus1)?.eq(labels)?.to_dtype(DType::U32)?;
    Ok(hits.sum_all()?.to_scalar::<u32>()? as usize)
}

/// The test accuracy: on batch-norm statistics recomputed over the first
/// `recalibration` training images, or on the moving averages if 0.
pub fn test(net: &Net, data: &Data, recalibration: usize) -> Result<f64> {
    let recalibrated;
    let net = match recalibration.min(data.train.len()) {
        0 => net,
        n => {
            let batches = (0..n)
                .step_by(EVAL_BATCH)
                .map(|s| Ok(data.train.slice(s, EVAL_BATCH.min(n - s))?.0))
                .collect::<Result<Vec<_>>>()?;
            recalibrated = net.recalibrated(&batches)?;
            &recalibrated
        }
    };
    let n = data.test.len();
    let mut hits = 0;
    for s in (0..n).step_by(EVAL_BATCH) {
        let (x, y) = data.test.slice(s, EVAL_BATCH.min(n - s))?;
        hits += count_hits(&net.forward(&x, Norm::Eval)?, &y)?;
    }
    Ok(hits as f64 / n as f64)
}
