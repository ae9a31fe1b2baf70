//! Forward and backward on host slices: the calls a training loop makes.

use crate::call::{Call, Host};
use crate::cpu;
use crate::element::Element;
use crate::error::Result;
use crate::quantizer::{Kind, Quantizer};

/// Runs the call `t` makes of `q` on the CPU: resolved, checked, mapped.
pub(crate) fn on_host<T: Element>(q: &Quantizer, shape: &[usize], t: Host<'_, T>) -> Result<()> {
    cpu::run(&Call::on_host(q, shape, &t)?, t)
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
        on_host(self, shape, Host::forward(x, y))
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
        on_host(self, shape, Host::backward(x, dy, dx))
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
        on_host(self, shape, Host::forward_with_thresholds(x, alpha, y))
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
        on_host(
            self,
            shape,
            Host::backward_with_thresholds(x, alpha, dy, dx, dalpha),
        )
    }
}
