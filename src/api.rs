//! Forward and backward on host slices: the calls a training loop makes.

use crate::cpu::{self, Dims};
use crate::element::{DType, Element};
use crate::error::{Error, Result};
use crate::op::Op;
use crate::quantizer::{Kind, Quantizer};

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

/// Refuses, on the plain calls, a quantizer that needs thresholds.
pub(crate) fn check_plain(q: &Quantizer) -> Result<()> {
    if q.takes_thresholds() {
        return Err(Error::NeedsThresholds {
            quantizer: q.name(),
        });
    }
    Ok(())
}

/// The op of a plain call; `rsign`, which needs thresholds, is refused.
pub(crate) fn plain_op(q: &Quantizer, dtype: DType) -> Result<Op> {
    Op::new(q, dtype).ok_or(Error::NeedsThresholds {
        quantizer: q.name(),
    })
}

/// The dims the CPU reductions read, for a tensor of `shape` holding `len`
/// elements in `channels` channels.
pub(crate) fn dims(shape: &[usize], len: usize, channels: usize) -> Dims {
    Dims {
        channels,
        inner: first_axis_inner(shape, len),
    }
}

/// Checks a call with thresholds: the quantizer takes them, every buffer
/// fits `shape` and every threshold buffer holds one value per channel.
/// Returns the element count and the channel count.
pub(crate) fn check_thresholds(
    q: &Quantizer,
    shape: &[usize],
    buffers: &[(&'static str, usize)],
    thresholds: &[(&'static str, usize)],
) -> Result<(usize, usize)> {
    if !q.takes_thresholds() {
        return Err(Error::TakesNoThresholds {
            quantizer: q.name(),
        });
    }
    let (len, channels) = check_shape(shape, buffers)?;
    for &(buffer, n) in thresholds {
        if n != channels {
            return Err(Error::ThresholdLength {
                buffer,
                channels,
                len: n,
            });
        }
    }
    Ok((len, channels))
}

impl Quantizer {
    /// Whether this quantizer takes per-channel thresholds α (`rsign`) and
    /// so is called through [`forward_with_thresholds`](Self::forward_with_thresholds)
    /// and [`backward_with_thresholds`](Self::backward_with_thresholds)
    /// instead of [`forward`](Self::forward) and [`backward`](Self::backward).
    pub fn takes_thresholds(&self) -> bool {
        matches!(self.kind(), Kind::RSign)
    }

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
        let op = plain_op(self, T::DTYPE)?;
        let (len, channels) = check_shape(shape, &[("x", x.len()), ("y", y.len())])?;
        // With no elements the channel count is unbounded by any buffer
        // (`[0, 1 << 62]` is valid): nothing may be sized from it.
        if len == 0 {
            return Ok(());
        }
        cpu::pool::run(|| cpu::forward(&op, x, dims(shape, len, channels), y))
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
        let op = plain_op(self, T::DTYPE)?;
        let (len, channels) =
            check_shape(shape, &[("x", x.len()), ("dy", dy.len()), ("dx", dx.len())])?;
        if len == 0 {
            return Ok(());
        }
        cpu::pool::run(|| cpu::backward(&op, x, dy, dims(shape, len, channels), dx))
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

/// `rsign`'s calls: the plain ones plus its per-channel thresholds α.
impl Quantizer {
    /// Writes `y = sign(x − α_c)` into `y`, `α_c` being the threshold of
    /// element `i`'s channel `c = i % channels` (channels last): ReActNet's
    /// RSign (Liu et al. 2020, "ReActNet: Towards Precise Binary Neural
    /// Network with Generalized Activation Functions", arXiv:2003.03488).
    ///
    /// `alpha` holds one value per channel, in `x`'s type. `x − α_c` is
    /// computed in `f32` from the widened values (see [`crate::scalar::rsign`]),
    /// so `sign(±0) = +1` happens exactly at `x = α_c`. A quantizer other
    /// than `rsign`, a buffer that does not fit `shape` or an `alpha` of the
    /// wrong length is an error, and `y` is then left untouched.
    ///
    /// ```
    /// use lowbit::Quantizer;
    ///
    /// let q: Quantizer = "rsign".parse()?;
    /// // Two rows of two channels, thresholds 0.5 and −1.
    /// let x = [0.4f32, -0.5, 0.5, -1.5];
    /// let alpha = [0.5f32, -1.0];
    /// let mut y = [0.0f32; 4];
    /// q.forward_with_thresholds(&x, &alpha, &[2, 2], &mut y)?;
    /// assert_eq!(y, [-1.0, 1.0, 1.0, -1.0]);
    /// # Ok::<(), lowbit::Error>(())
    /// ```
    pub fn forward_with_thresholds<T: Element>(
        &self,
        x: &[T],
        alpha: &[T],
        shape: &[usize],
        y: &mut [T],
    ) -> Result<()> {
        let (len, _) = check_thresholds(
            self,
            shape,
            &[("x", x.len()), ("y", y.len())],
            &[("alpha", alpha.len())],
        )?;
        if len == 0 {
            return Ok(());
        }
        cpu::pool::run(|| cpu::rsign::forward(x, alpha, y))
    }

    /// Writes `rsign`'s gradients: `dx = (1 − |u|)·2·dy` where `|u| ≤ 1`,
    /// else `+0`, with `u = x − α_c` (ApproxSign's estimator, shifted), and
    /// `dα_c = −Σ dx` over channel `c` of every row.
    ///
    /// The sum adds the `dx` values as stored in `T`, in `f64`, over a fixed
    /// partition (the CUDA kernels' own, so both backends give the same
    /// bits), and is rounded to `f32` and then to `T`; a channel whose `dx`
    /// are all zero gets `+0`. Errors as in
    /// [`forward_with_thresholds`](Self::forward_with_thresholds), `dalpha`
    /// included; on error neither `dx` nor `dalpha` is touched.
    ///
    /// ```
    /// use lowbit::Quantizer;
    ///
    /// let q: Quantizer = "rsign".parse()?;
    /// let x = [0.75f32, 2.0, 0.0, -1.0];
    /// let alpha = [0.5f32, -1.0];
    /// let dy = [1.0f32; 4];
    /// let (mut dx, mut dalpha) = ([0.0f32; 4], [0.0f32; 2]);
    /// q.backward_with_thresholds(&x, &alpha, &dy, &[2, 2], &mut dx, &mut dalpha)?;
    /// // u = x − α = [0.25, 3.0, −0.5, 0.0]
    /// assert_eq!(dx, [1.5, 0.0, 1.0, 2.0]);
    /// assert_eq!(dalpha, [-2.5, -2.0]);
    /// # Ok::<(), lowbit::Error>(())
    /// ```
    pub fn backward_with_thresholds<T: Element>(
        &self,
        x: &[T],
        alpha: &[T],
        dy: &[T],
        shape: &[usize],
        dx: &mut [T],
        dalpha: &mut [T],
    ) -> Result<()> {
        let (len, _) = check_thresholds(
            self,
            shape,
            &[("x", x.len()), ("dy", dy.len()), ("dx", dx.len())],
            &[("alpha", alpha.len()), ("dalpha", dalpha.len())],
        )?;
        if len == 0 {
            // No rows: each dα is an empty sum (`dalpha` holds one per
            // channel, so it bounds them).
            dalpha.fill(T::from_f32(crate::scalar::rsign_dalpha(0.0)));
            return Ok(());
        }
        cpu::pool::run(|| cpu::rsign::backward(x, alpha, dy, dx, dalpha))
    }
}
