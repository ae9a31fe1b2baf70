//! # lowbit
//!
//! The quantizers that train binarized and ternary neural networks, with the
//! numbers larq gives: the sign family with its gradient estimators
//! (`ste_sign`, `approx_sign`, `swish_sign`, `ste_heaviside`), Bi-Real's
//! `magnitude_aware_sign`, ternarization (`ste_tern`, fixed or TWN threshold),
//! DoReFa's k-bit quantizer and `noop`; forward and backward, in `f32`,
//! `half::f16` and `half::bf16`.
//!
//! ```
//! use half::f16;
//! use lowbit::Quantizer;
//!
//! let q: Quantizer = "magnitude_aware_sign(clip_value=1.0)".parse()?;
//! // Two rows of three channels; the scale is each channel's mean |x|.
//! let x: Vec<f16> = [0.5f32, -1.0, 2.0, -1.5, 3.0, -2.0]
//!     .iter().map(|&v| f16::from_f32(v)).collect();
//! let y = q.forward_vec(&x, &[2, 3])?;
//! let y: Vec<f32> = y.iter().map(|v| v.to_f32()).collect();
//! assert_eq!(y, [1.0, -2.0, 2.0, -1.0, 2.0, -2.0]);
//! # Ok::<(), lowbit::Error>(())
//! ```
//!
//! Every quantizer is defined once, element by element, in [`scalar`]; the
//! CPU path maps those functions over slices in parallel.
//!
//! [`bits`] packs binarized tensors into 32-bit words as Larq Compute Engine
//! does (ste_sign's forward and packing in one) and computes larq's
//! `flip_ratio` metric on packed signs.
//!
//! The straight-through estimators can save a 1-bit mask of where their
//! gradient passes instead of their input, for a backward pass with the same
//! bits: [`Quantizer::forward_with_mask`], [`Quantizer::backward_from_mask`].

// Every public item is documented; CI's clippy -D warnings enforces it.
#![warn(missing_docs)]

pub mod scalar;

mod api;
mod backend;
pub mod bits;
mod call;
#[cfg(feature = "candle")]
pub mod candle;
mod cpu;
#[cfg(lowbit_cuda)]
pub mod cuda;
mod element;
mod error;
#[doc(hidden)]
pub mod ffi;
mod mask;
mod op;
mod quantizer;

pub use backend::{Backend, Device};
pub use element::{DType, Element};
pub use error::{Error, Result};
pub use mask::{MASK_BITS, mask_words};
pub use quantizer::{
    DEFAULT_BETA, DEFAULT_CLIP, DEFAULT_K_BIT, DEFAULT_TERN_THRESHOLD, DorefaMode, K_BIT_RANGE,
    Kind, MAX_BETA, Quantizer, WeightScale,
};

// The element types, so users need not depend on `half` themselves.
pub use half::{bf16, f16};

// README.md's examples compile and run as doctests, with README's test
// command (`--features candle`: one example is candle's).
#[cfg(all(doctest, feature = "candle"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
