//! 1-bit masks for the backward pass.
//!
//! The straight-through estimators' gradient depends on `x` only through one
//! bit per element: whether the gradient passes there. A training stack that
//! keeps `x` alive until the backward pass only for that bit can keep this
//! mask instead: 32× less memory than an `f32` input, 8× less than a `bool`
//! mask. The bit comes from the same scalar predicate the gradient from `x`
//! selects with ([`scalar::ste_passes`](crate::scalar::ste_passes),
//! [`scalar::dorefa_activations_passes`](crate::scalar::dorefa_activations_passes)),
//! so the gradient from the mask has the same bits as the gradient from `x`.
//!
//! Layout: element `i` is bit `i % 32` of word `i / 32` (`u32`), the trailing
//! bits of the last word are 0, and a tensor of `len` elements takes
//! [`mask_words`]`(len)` words.

use crate::api::on_host;
use crate::call::{Call, Host, Pass};
use crate::element::{DType, Element};
use crate::error::Result;
use crate::quantizer::Quantizer;

/// Elements per mask word (`u32`).
pub const MASK_BITS: usize = 32;

/// Words of the mask of a tensor of `len` elements: ⌈len / 32⌉.
///
/// ```
/// assert_eq!(lowbit::mask_words(0), 0);
/// assert_eq!(lowbit::mask_words(32), 1);
/// assert_eq!(lowbit::mask_words(33), 2);
/// ```
pub fn mask_words(len: usize) -> usize {
    len.div_ceil(MASK_BITS)
}

impl Quantizer {
    /// Whether [`forward_with_mask`](Self::forward_with_mask) and
    /// [`backward_from_mask`](Self::backward_from_mask) work for this
    /// quantizer: `ste_sign`, `ste_heaviside`, `ste_tern` (fixed or TWN
    /// threshold), `magnitude_aware_sign`, `dorefa` in activations mode, and
    /// `noop` and `progressive_sign` (whose gradients pass everywhere).
    /// `approx_sign`, `swish_sign`, `ede`, `rsign`, DoReFa weights and the
    /// first-axis scaled signs need more than one bit per element and give
    /// [`Error::NotMaskable`].
    ///
    /// ```
    /// use lowbit::Quantizer;
    ///
    /// assert!("ste_sign".parse::<Quantizer>()?.supports_mask());
    /// assert!(!"dorefa(mode=weights)".parse::<Quantizer>()?.supports_mask());
    /// # Ok::<(), lowbit::Error>(())
    /// ```
    pub fn supports_mask(&self) -> bool {
        Call::new(self, DType::F32, Pass::ForwardWithMask, &[]).is_ok()
    }

    /// Elements of the scale [`forward_with_mask`](Self::forward_with_mask)
    /// saves for a tensor of `shape`: its channel count (the last axis) for
    /// `magnitude_aware_sign`, 0 for the others.
    ///
    /// ```
    /// use lowbit::Quantizer;
    ///
    /// let q: Quantizer = "magnitude_aware_sign".parse()?;
    /// assert_eq!(q.saved_scale_len(&[8, 3, 3, 64])?, 64);
    /// assert_eq!("ste_sign".parse::<Quantizer>()?.saved_scale_len(&[8, 64])?, 0);
    /// # Ok::<(), lowbit::Error>(())
    /// ```
    pub fn saved_scale_len(&self, shape: &[usize]) -> Result<usize> {
        crate::call::check_shape(shape, &[])?;
        // A quantizer that saves no mask saves no scale.
        Ok(Call::new(self, DType::F32, Pass::ForwardWithMask, shape).map_or(0, |c| c.scale_len()))
    }

    /// [`forward`](Self::forward), and the 1-bit mask of where the gradient
    /// passes, so that the backward pass needs neither `x` nor anything of
    /// its size: [`backward_from_mask`](Self::backward_from_mask) gives the
    /// same bits as [`backward`](Self::backward) from `x`.
    ///
    /// `mask` holds [`mask_words`]`(len)` words (every bit is written, the
    /// trailing ones 0). `scale` holds
    /// [`saved_scale_len`](Self::saved_scale_len) elements: for
    /// `magnitude_aware_sign` it receives each channel's scale, in the
    /// tensor's type, which the backward pass needs too; for the others it
    /// is empty. `y` has the same bits as [`forward`](Self::forward) gives.
    ///
    /// Errors: [`Error::NotMaskable`] for a quantizer whose gradient needs
    /// `x` ([`supports_mask`](Self::supports_mask)), a shape or buffer length
    /// that does not fit; then nothing is written.
    ///
    /// ```
    /// use lowbit::{Quantizer, mask_words};
    ///
    /// let q: Quantizer = "ste_sign(clip_value=1.0)".parse()?;
    /// let x = [-1.5f32, -0.0, 0.3, 1.0, f32::NAN];
    /// let (mut y, mut mask) = ([0.0f32; 5], vec![0u32; mask_words(5)]);
    /// q.forward_with_mask(&x, &[5], &mut y, &mut mask, &mut [])?;
    /// assert_eq!(y[..4], [-1.0, 1.0, 1.0, 1.0]);
    /// // |x| ≤ 1 at elements 1, 2 and 3; NaN is outside every window.
    /// assert_eq!(mask, [0b01110]);
    ///
    /// // x may go now: the backward pass needs the mask and dy alone.
    /// let dy = [10.0f32, 20.0, 30.0, 40.0, 50.0];
    /// let mut dx = [0.0f32; 5];
    /// q.backward_from_mask(&mask, &[], &dy, &[5], &mut dx)?;
    /// assert_eq!(dx, [0.0, 20.0, 30.0, 40.0, 0.0]);
    /// # Ok::<(), lowbit::Error>(())
    /// ```
    pub fn forward_with_mask<T: Element>(
        &self,
        x: &[T],
        shape: &[usize],
        y: &mut [T],
        mask: &mut [u32],
        scale: &mut [T],
    ) -> Result<()> {
        on_host(self, shape, Host::forward_with_mask(x, y, mask, scale))
    }

    /// `dx = dq/dx · dy` from the `mask` (and, for `magnitude_aware_sign`,
    /// the `scale`) that [`forward_with_mask`](Self::forward_with_mask) saved
    /// for the same quantizer and shape: the same bits as
    /// [`backward`](Self::backward) from `x`, NaN, ±inf, −0 and values on the
    /// clip included.
    ///
    /// Errors as [`forward_with_mask`](Self::forward_with_mask); on error
    /// `dx` is left untouched.
    ///
    /// ```
    /// use lowbit::{Quantizer, mask_words};
    ///
    /// let q: Quantizer = "magnitude_aware_sign(clip_value=1.0)".parse()?;
    /// let shape = [2, 2];
    /// let x = [0.5f32, -2.0, -1.5, 1.0];
    /// let mut y = [0.0f32; 4];
    /// let mut mask = vec![0u32; mask_words(4)];
    /// let mut scale = vec![0.0f32; q.saved_scale_len(&shape)?];
    /// q.forward_with_mask(&x, &shape, &mut y, &mut mask, &mut scale)?;
    /// assert_eq!(scale, [1.0, 1.5]); // each channel's mean |x|
    ///
    /// let dy = [1.0f32; 4];
    /// let mut dx = [0.0f32; 4];
    /// q.backward_from_mask(&mask, &scale, &dy, &shape, &mut dx)?;
    /// assert_eq!(dx, q.backward_vec(&x, &dy, &shape)?[..]);
    /// assert_eq!(dx, [1.0, 0.0, 0.0, 1.5]);
    /// # Ok::<(), lowbit::Error>(())
    /// ```
    pub fn backward_from_mask<T: Element>(
        &self,
        mask: &[u32],
        scale: &[T],
        dy: &[T],
        shape: &[usize],
        dx: &mut [T],
    ) -> Result<()> {
        on_host(self, shape, Host::backward_from_mask(mask, scale, dy, dx))
    }
}
