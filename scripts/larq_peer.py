#!/usr/bin/env python3
"""larq's own tutorial network, trained with larq's recipe on the
repository's Fashion-MNIST files: the peer of

    cargo run --release --features candle --example train_fashion_mnist -- --recipe larq --no-baseline

(--epochs and --limit as there). Prints each epoch's training loss and
accuracy, the test accuracy (on batch norm's moving averages, as Keras
evaluates) and the seconds of training.

It runs in a venv kept outside the repository (about 2 GB):

    python3 -m venv ~/.cache/lowbit/larq-venv
    ~/.cache/lowbit/larq-venv/bin/pip install larq==0.14.0 tensorflow-cpu==2.21.0 tf-keras==2.21.0
    ~/.cache/lowbit/larq-venv/bin/python scripts/larq_peer.py

The network and the recipe are those of larq's "Introduction to BNNs with
Larq" (docs.larq.dev): batch 64, Adam at Keras's defaults, 6 epochs.
"""

import argparse
import gzip
import os
import struct
import sys
import time
from pathlib import Path

# larq 0.14 builds on Keras 2 (tf-keras); TensorFlow 2.16 and later default
# to Keras 3 unless told otherwise, before TensorFlow is imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import larq as lq  # noqa: E402
import tensorflow as tf  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def read_idx(path):
    """An IDX file of unsigned bytes (gzipped), as a numpy array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        sys.exit(f"{path}: not an IDX file of unsigned bytes")
    rank = data[3]
    dims = struct.unpack(f">{rank}I", data[4 : 4 + 4 * rank])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank)
    if body.size != int(np.prod(dims)):
        sys.exit(f"{path}: dims {dims} do not match {body.size} bytes of data")
    return body.reshape(dims)


def load(data_dir):
    def split(name):
        images = read_idx(data_dir / f"{name}-images-idx3-ubyte.gz")
        labels = read_idx(data_dir / f"{name}-labels-idx1-ubyte.gz")
        # As larq's tutorial: channels last, pixels scaled to [-1, 1].
        images = images.reshape((-1, 28, 28, 1)).astype("float32") / 127.5 - 1
        return images, labels.astype("int64")

    return split("train"), split("t10k")


def tutorial_model():
    """larq's tutorial network, verbatim."""
    kwargs = dict(
        input_quantizer="ste_sign",
        kernel_quantizer="ste_sign",
        kernel_constraint="weight_clip",
    )
    model = tf.keras.models.Sequential()
    # In the first layer only the weights are quantized, not the input.
    model.add(
        lq.layers.QuantConv2D(
            32,
            (3, 3),
            kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip",
            use_bias=False,
            input_shape=(28, 28, 1),
        )
    )
    model.add(tf.keras.layers.MaxPooling2D((2, 2)))
    model.add(tf.keras.layers.BatchNormalization(scale=False))
    model.add(lq.layers.QuantConv2D(64, (3, 3), use_bias=False, **kwargs))
    model.add(tf.keras.layers.MaxPooling2D((2, 2)))
    model.add(tf.keras.layers.BatchNormalization(scale=False))
    model.add(lq.layers.QuantConv2D(64, (3, 3), use_bias=False, **kwargs))
    model.add(tf.keras.layers.BatchNormalization(scale=False))
    model.add(tf.keras.layers.Flatten())
    model.add(lq.layers.QuantDense(64, use_bias=False, **kwargs))
    model.add(tf.keras.layers.BatchNormalization(scale=False))
    model.add(lq.layers.QuantDense(10, use_bias=False, **kwargs))
    model.add(tf.keras.layers.BatchNormalization(scale=False))
    model.add(tf.keras.layers.Activation("softmax"))
    return model


class EpochReport(tf.keras.callbacks.Callback):
    """Times each epoch's training, then tests on the moving averages
    outside that time. The test is a plain inference pass, not `evaluate`,
    which would disturb the training metrics that `fit` reports."""

    def __init__(self, test, epochs):
        super().__init__()
        self.test, self.epochs, self.seconds = test, epochs, []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.start
        self.seconds.append(seconds)
        images, labels = self.test
        t = time.perf_counter()
        predicted = np.argmax(self.model.predict(images, batch_size=1000, verbose=0), axis=1)
        accuracy = float(np.mean(predicted == labels))
        print(
            f"larq epoch {epoch + 1}/{self.epochs}: loss {logs['loss']:.4f}, "
            f"training accuracy {100 * logs['accuracy']:.2f}%, test accuracy {100 * accuracy:.2f}% "
            f"({seconds:.1f} s, test {time.perf_counter() - t:.1f} s)",
            flush=True,
        )
        self.accuracy = accuracy


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO / "examples/data/fashion-mnist")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--limit", type=int, help="train on the first N training images only")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    tf.keras.utils.set_random_seed(args.seed)
    (train_images, train_labels), test = load(args.data)
    train_images, train_labels = train_images[: args.limit], train_labels[: args.limit]
    print(
        f"larq {lq.__version__}, TensorFlow {tf.__version__}, "
        f"{len(train_labels)} training and {len(test[1])} test images, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    model = tutorial_model()
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    report = EpochReport(test, args.epochs)
    model.fit(
        train_images,
        train_labels,
        batch_size=64,
        epochs=args.epochs,
        verbose=0,
        callbacks=[report],
    )
    s = report.seconds
    print(
        f"larq test accuracy after {args.epochs} epochs: {100 * report.accuracy:.2f}%; "
        f"{sum(s) / len(s):.1f} s of training per epoch ({min(s):.1f}-{max(s):.1f})"
    )


if __name__ == "__main__":
    main()
