//! Trains a binarized MLP (binary weights, binary activations) on the UCI
//! handwritten digits with lowbit's quantizers, then the same network in full
//! precision, and prints both test accuracies.
//!
//! ```sh
//! cargo run --release --example train_digits
//! cargo run --release --example train_digits -- --spec 'ste_tern(threshold_value=0.3)'
//! cargo run --release --example train_digits -- --weights magnitude_aware_sign --epochs 10
//! ```

mod dense;
mod mlp;

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use lowbit::{Backend, Device, Quantizer};
use mlp::{BoxError, Config, Data, Engine, Mlp};

#[derive(Parser)]
#[command(about = "Train a binarized MLP on the UCI digits with lowbit")]
struct Args {
    /// The quantizer for weights and activations, in larq's spelling.
    #[arg(long, default_value = "ste_sign")]
    spec: Quantizer,
    /// The weight quantizer, if it differs from --spec.
    #[arg(long)]
    weights: Option<Quantizer>,
    /// The activation quantizer, if it differs from --spec.
    #[arg(long)]
    activations: Option<Quantizer>,
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Hidden layer widths, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "256,256")]
    hidden: Vec<usize>,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 0.005)]
    learning_rate: f32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the quantizers run: auto, cpu or cuda.
    #[arg(long, default_value = "auto")]
    device: Device,
    /// Skip the full-precision baseline.
    #[arg(long)]
    no_baseline: bool,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("train_digits: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), BoxError> {
    let backend = Backend::new(args.device)?;
    println!("lowbit backend: {} ({})", backend.name(), backend.reason());
    let engine = Engine::new(backend);
    println!("matrix products: {}", engine.products_reason);

    let data = mlp::load_digits()?;
    let (train, test) = mlp::split(&data);
    println!(
        "UCI digits: {} training and {} test images of 8x8 pixels",
        train.len(),
        test.len()
    );

    let mut binary = Config::binarized(args.spec);
    if let Some(w) = args.weights {
        binary.weights = Some(w);
    }
    if let Some(a) = args.activations {
        binary.activations = mlp::Activation::Quantized(a);
    }
    let mut full = Config::full_precision();
    for cfg in [&mut binary, &mut full] {
        cfg.hidden = args.hidden.clone();
        cfg.epochs = args.epochs;
        cfg.batch = args.batch;
        cfg.learning_rate = args.learning_rate;
        cfg.seed = args.seed;
    }

    let (w, a) = (describe(&binary.weights), describe_act(&binary.activations));
    println!("\nbinarized: weights {w}, activations {a}");
    let (binary_acc, binary_time) = train_and_report(binary, &train, &test, &engine)?;
    let baseline = if args.no_baseline {
        None
    } else {
        println!("\nfull precision: real weights, hard-tanh activations");
        Some(train_and_report(full, &train, &test, &engine)?)
    };

    println!("\ntest accuracy");
    println!(
        "  binarized       {:5.1}%  ({binary_time:.1} s)",
        binary_acc * 100.0
    );
    if let Some((acc, time)) = baseline {
        println!("  full precision  {:5.1}%  ({time:.1} s)", acc * 100.0);
    }
    Ok(())
}

/// Trains for the configured epochs with a progress bar per epoch; returns
/// the final test accuracy and the seconds it took.
fn train_and_report(
    cfg: Config,
    train: &Data,
    test: &Data,
    engine: &Engine,
) -> Result<(f32, f64), BoxError> {
    let mut net = Mlp::new(cfg);
    let epochs = net.epochs();
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} batches")?
        .progress_chars("=> ");
    let start = Instant::now();
    let mut accuracy = 0.0;
    for epoch in 1..=epochs {
        let bar = ProgressBar::new(net.batches_per_epoch(train) as u64)
            .with_style(style.clone())
            .with_prefix(format!("epoch {epoch:>3}/{epochs}"));
        let stats = net.train_epoch(epoch, train, test, engine, || bar.inc(1))?;
        bar.finish_and_clear();
        println!(
            "epoch {:>3}/{epochs}  loss {:.4}  train {:5.1}%  test {:5.1}%",
            stats.epoch,
            stats.loss,
            stats.train_accuracy * 100.0,
            stats.test_accuracy * 100.0
        );
        accuracy = stats.test_accuracy;
    }
    Ok((accuracy, start.elapsed().as_secs_f64()))
}

fn describe(q: &Option<Quantizer>) -> String {
    q.as_ref().map_or("real".into(), |q| q.to_string())
}

fn describe_act(a: &mlp::Activation) -> String {
    match a {
        mlp::Activation::Quantized(q) => q.to_string(),
        mlp::Activation::HardTanh => "hard tanh".into(),
    }
}
