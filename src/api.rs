//! Forward and backward on host slices: the calls a training loop makes.

use crate::cpu;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::quantizer::{Quantizer, WeightScale};

/// Checks that every buffer holds exactly the elements `shape` describes and
/// returns that element count and the channel count (the last axis; 1 for a
/// scalar).
pub(crate) fn check_shape(
    shape: &[usize],
    buffers: &[(&'static str, usize)],
) -> Result<(usize, usize)> {
    let expected = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| Error::ShapeOverflow(shape.to_vec()))?;
    for &(buffer, len) in buffers {
        if len != expected {
            return Err(Error::ShapeMismatch {
                shape: shape.to_vec(),
                expected,
                buffer,
                len,
            });
        }
    }
    Ok((expected, shape.last().copied().unwrap_or(1)))
}

/// Elements per first-axis index (XNOR-Net's output channel): the whole
/// tensor for a scalar, 0 for an empty tensor.
pub(crate) fn first_axis_inner(shape: &[usize], len: usize) -> usize {
    match shape.first() {
        Some(&rows) if rows > 0 => len / rows,
        Some(_) => 0,
        None => len,
    }
}

impl Quantizer {
    /// Writes `y = q(x)` into `y`. `x` is a contiguous row-major tensor of
    /// `shape`; magnitude_aware_sign reads its last axis as the channels.
    ///
    /// Nothing is allocated per call but the reductions' small partials, and
    /// on error `y` is left untouched.
    ///
    /// ```
    /// use lowbit::Quantizer;
    ///
    /// let q: Quantizer = "ste_sign".parse()?;
    /// let x = [-1.5f32, -0.0, 0.3];
    /// let mut y = [0.0f32; 3];
    /// q.forward(&x, &[3], &mut y)?;
    /// assert_eq!(y, [-1.0, 1.0, 1.0]);
    /// # Ok::<(), lowbit::Error>(())
    /// ```
    pub fn forward<T: Element>(&self, x: &[T], shape: &[usize], y: &mut [T]) -> Result<()> {
        let (len, channels) = check_shape(shape, &[("x", x.len()), ("y", y.len())])?;
        match self.scale() {
            WeightScale::None => cpu::forward(self, x, channels, y),
            WeightScale::FirstAxis => cpu::forward_scaled(x, first_axis_inner(shape, len), y),
        }
        Ok(())
    }

    /// Writes `dx = dq/dx · dy` into `dx`, the gradient larq's estimator gives
    /// for the input `x` and the upstream gradient `dy`.
    ///
    /// ```
    /// use lowbit::Quantizer;
    ///
    /// let q: Quantizer = "ste_sign(clip_value=1.0)".parse()?;
    /// let x = [-1.5f32, 0.5, 1.0];
    /// let dy = [1.0f32, 2.0, 3.0];
    /// let mut dx = [0.0f32; 3];
    /// q.backward(&x, &dy, &[3], &mut dx)?;
    /// assert_eq!(dx, [0.0, 2.0, 3.0]);
    /// # Ok::<(), lowbit::Error>(())
    /// ```
    pub fn backward<T: Element>(
        &self,
        x: &[T],
        dy: &[T],
        shape: &[usize],
        dx: &mut [T],
    ) -> Result<()> {
        let (len, channels) =
            check_shape(shape, &[("x", x.len()), ("dy", dy.len()), ("dx", dx.len())])?;
        match self.scale() {
            WeightScale::None => cpu::backward(self, x, dy, channels, dx),
            WeightScale::FirstAxis => {
                cpu::backward_scaled(self, x, dy, first_axis_inner(shape, len), dx)
            }
        }
        Ok(())
    }

    /// [`forward`](Self::forward) into a new vector.
    pub fn forward_vec<T: Element>(&self, x: &[T], shape: &[usize]) -> Result<Vec<T>> {
        let mut y = vec![T::default(); x.len()];
        self.forward(x, shape, &mut y)?;
        Ok(y)
    }

    /// [`backward`](Self::backward) into a new vector.
    pub fn backward_vec<T: Element>(&self, x: &[T], dy: &[T], shape: &[usize]) -> Result<Vec<T>> {
        let mut dx = vec![T::default(); x.len()];
        self.backward(x, dy, shape, &mut dx)?;
        Ok(dx)
    }
}
