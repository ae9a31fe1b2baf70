//! Trains larq's tutorial network, binarized with lowbit's quantizers, on
//! Fashion-MNIST with candle-nn, and beside it the same network in full
//! precision; prints both test accuracies.
//!
//! ```sh
//! cargo run --release --features candle --example train_fashion_mnist
//! cargo run --release --features candle --example train_fashion_mnist -- --recipe larq
//! cargo run --release --features candle --example train_fashion_mnist -- --epochs 1 --limit 6000
//! cargo run --release --features candle --example train_fashion_mnist -- --weights 'ste_tern(ternary_weight_networks=true)'
//! ```

mod conv;
mod idx;
mod net;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use candle_core::Device;
use clap::{Parser, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use lowbit::{Kind, Quantizer};
use net::{Net, Quantizers};
use rand::SeedableRng;
use rand::rngs::StdRng;
use train::{BoxError, Data, Epoch, RECALIBRATION, Recipe};

#[derive(Clone, Copy, ValueEnum)]
enum RecipeName {
    /// 8 epochs, Adam 2e-3 with a cosine decay, a learned scale on the
    /// logits, the test on recomputed batch-norm statistics.
    Default,
    /// larq's tutorial: batch 64, Adam 1e-3, 6 epochs, the test on batch
    /// norm's moving averages.
    Larq,
}

#[derive(Clone, Copy, ValueEnum)]
enum DeviceName {
    Cpu,
    Cuda,
}

#[derive(Parser)]
#[command(about = "Train a binarized CNN on Fashion-MNIST with lowbit's quantizers and candle")]
struct Args {
    /// The quantizer of the kernels and the layers' inputs, in larq's spelling.
    #[arg(long, default_value = "ste_sign")]
    spec: Quantizer,
    /// The kernels' quantizer, if it differs from --spec.
    #[arg(long)]
    weights: Option<Quantizer>,
    /// The inputs' quantizer, if it differs from --spec.
    #[arg(long)]
    activations: Option<Quantizer>,
    #[arg(long, value_enum, default_value = "default")]
    recipe: RecipeName,
    /// Epochs, instead of the recipe's.
    #[arg(long)]
    epochs: Option<usize>,
    /// Train on the first N training images only.
    #[arg(long)]
    limit: Option<usize>,
    /// Test on batch-norm statistics recomputed over this many training
    /// images (0: on the moving averages), instead of the recipe's.
    #[arg(long)]
    recalibration_images: Option<usize>,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceName,
    /// Seeds the initial kernels and the shuffles.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Train the binarized network only.
    #[arg(long)]
    no_baseline: bool,
    /// The directory of the four IDX files.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/fashion-mnist"))]
    data: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    one_thread_per_network();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("train_fashion_mnist: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Gives each network one thread. candle spreads a CPU op over every core
/// through one pool of spinning threads, for which the calls of the two
/// networks trained side by side would queue; and a network trained alone
/// on two threads took 55.5 s an epoch of 20,000 images against 25.4 s on
/// one (`--recipe larq`, 2-core machine). CANDLE_NUM_THREADS or
/// RAYON_NUM_THREADS, when set, stay.
fn one_thread_per_network() {
    for var in ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            // SAFETY: main calls this before any other thread starts.
            unsafe { std::env::set_var(var, "1") };
        }
    }
}

/// One network to train: its name in the output and its quantizers.
struct Job {
    name: &'static str,
    quantizers: Option<Quantizers>,
}

fn run(args: Args) -> Result<(), BoxError> {
    let started = Instant::now();
    let device = match args.device {
        DeviceName::Cpu => Device::Cpu,
        DeviceName::Cuda => Device::new_cuda(0)
            .map_err(|e| format!("--device cuda: {e} (CUDA needs --features candle-cuda)"))?,
    };
    let quantizers = Quantizers {
        kernels: args.weights.unwrap_or(args.spec),
        inputs: args.activations.unwrap_or(args.spec),
    };
    for q in [quantizers.kernels, quantizers.inputs] {
        if matches!(q.kind(), Kind::RSign) {
            return Err("rsign needs learned thresholds, which this network does not have".into());
        }
    }
    let mut recipe = match args.recipe {
        RecipeName::Default => Recipe::better(),
        RecipeName::Larq => Recipe::larq(),
    };
    recipe.epochs = args.epochs.unwrap_or(recipe.epochs);
    recipe.recalibration = args.recalibration_images.unwrap_or(recipe.recalibration);

    let data = train::load(&args.data, args.limit, &device)?;
    println!(
        "Fashion-MNIST: {} training and {} test images of 28x28, on {device:?}",
        data.train.len(),
        data.test.len()
    );
    println!(
        "kernels {}, inputs {}",
        quantizers.kernels, quantizers.inputs
    );
    println!(
        "{} epochs of batch {}, Adam {}{}; tested on {}",
        recipe.epochs,
        recipe.batch,
        recipe.learning_rate,
        match recipe.final_learning_rate {
            Some(end) => format!(" with a cosine decay to {end}"),
            None => String::new(),
        },
        match recipe.recalibration {
            0 => "batch norm's moving averages".to_string(),
            n => format!(
                "batch-norm statistics recomputed over {} training images",
                n.min(data.train.len())
            ),
        }
    );

    let mut jobs = vec![Job {
        name: "binarized",
        quantizers: Some(quantizers),
    }];
    if !args.no_baseline {
        jobs.push(Job {
            name: "full precision",
            quantizers: None,
        });
    }
    // candle's CPU ops run mostly on one core: the two networks train side
    // by side, one thread each.
    let bars = MultiProgress::new();
    let results: Vec<Result<Trained, BoxError>> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|job| {
                let bar = bars.add(ProgressBar::new(0));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>14} [{bar:25}] {pos}/{len} {elapsed:>4}/{duration:4} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(job.name);
                let (bars, data, recipe) = (&bars, &data, &recipe);
                s.spawn(move || train_one(job, data, recipe, args.seed, bars, &bar))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a training thread panicked".into()))
            })
            .collect()
    });

    println!("\ntest accuracy after {} epochs:", recipe.epochs);
    for (job, result) in jobs.iter().zip(results) {
        let Trained {
            epochs,
            recalibrated,
        } = result.map_err(|e| format!("{}: {e}", job.name))?;
        let last = epochs.last().map_or(f64::NAN, |e| e.test_accuracy);
        let trained: f64 = epochs.iter().map(|e| e.seconds).sum();
        let also = match recalibrated {
            Some(a) => format!(
                " on the moving averages, {:.2}% on statistics recomputed over {} images",
                100.0 * a,
                RECALIBRATION.min(data.train.len())
            ),
            None => String::new(),
        };
        println!(
            "  {:<15} {:.2}%{also}  ({:.1} s of training per epoch)",
            job.name,
            100.0 * last,
            trained / epochs.len().max(1) as f64
        );
    }
    let t = started.elapsed().as_secs();
    println!("wall time {} min {} s", t / 60, t % 60);
    Ok(())
}

/// What training a network measured: its epochs, and for a test on the
/// moving averages, the test on recomputed statistics at the end.
struct Trained {
    epochs: Vec<Epoch>,
    recalibrated: Option<f64>,
}

fn train_one(
    job: &Job,
    data: &Data,
    recipe: &Recipe,
    seed: u64,
    bars: &MultiProgress,
    bar: &ProgressBar,
) -> Result<Trained, BoxError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let device = data.train.images.device();
    let net = Net::new(job.quantizers, recipe.scaled_logits, &mut rng, device)?;
    let epochs = train::train(&net, data, recipe, &mut rng, bar, |e| {
        // A line above the bars, which stay at the bottom.
        let line = format!(
            "{:>14} epoch {}/{}: loss {:.4}, training accuracy {:.2}%, test accuracy {:.2}% ({:.1} s, test {:.1} s)",
            job.name,
            e.epoch,
            recipe.epochs,
            e.loss,
            100.0 * e.train_accuracy,
            100.0 * e.test_accuracy,
            e.seconds,
            e.test_seconds
        );
        match bars.is_hidden() {
            true => println!("{line}"),
            false => bars.suspend(|| println!("{line}")),
        }
    })?;
    bar.finish_and_clear();
    // A test on the moving averages is one draw from their swing: the
    // recomputed statistics say what the kernels learned.
    let recalibrated = match recipe.recalibration {
        0 => Some(train::test(&net, data, RECALIBRATION)?),
        _ => None,
    };
    Ok(Trained {
        epochs,
        recalibrated,
    })
}
