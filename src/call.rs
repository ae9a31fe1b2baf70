//! One description of every call on a tensor, checked once.
//!
//! The six calls (forward, backward, forward with a mask, backward from a
//! mask, and `rsign`'s two with thresholds) differ only in which buffers
//! they touch and what those must hold. A [`Call`] is the quantizer
//! resolved for the call's dtype and the shape's counts; [`Call::check`]
//! holds every buffer to its length, in one order for every backend. The
//! CPU driver, the CUDA planner and the C ABI all start from a `Call`, so a
//! call is refused for the same reason, with the same message, wherever it
//! runs.

use crate::cpu::Dims;
use crate::element::{DType, Element};
use crate::error::{Error, Result};
use crate::mask::mask_words;
use crate::op::{Direction, Op, not_maskable};
use crate::quantizer::Quantizer;

/// Which call on a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// `y = q(x)`.
    Forward,
    /// `dx` from `x` and `dy`.
    Backward,
    /// `y`, the mask and the scale.
    ForwardWithMask,
    /// `dx` from the mask, the scale and `dy`.
    BackwardFromMask,
    /// `rsign`'s `y` from `x` and α.
    ForwardWithThresholds,
    /// `rsign`'s `dx` and `dα`.
    BackwardWithThresholds,
}

impl Pass {
    pub(crate) fn direction(self) -> Direction {
        match self {
            Pass::Forward | Pass::ForwardWithMask | Pass::ForwardWithThresholds => {
                Direction::Forward
            }
            Pass::Backward | Pass::BackwardFromMask | Pass::BackwardWithThresholds => {
                Direction::Backward
            }
        }
    }

    /// Which buffers the call reads or writes.
    fn uses(self) -> Buffers<bool> {
        let none = Buffers::default();
        match self {
            Pass::Forward => Buffers {
                x: true,
                out: true,
                ..none
            },
            Pass::Backward => Buffers {
                x: true,
                dy: true,
                out: true,
                ..none
            },
            Pass::ForwardWithMask => Buffers {
                x: true,
                out: true,
                mask: true,
                scale: true,
                ..none
            },
            Pass::BackwardFromMask => Buffers {
                dy: true,
                out: true,
                mask: true,
                scale: true,
                ..none
            },
            Pass::ForwardWithThresholds => Buffers {
                x: true,
                alpha: true,
                out: true,
                ..none
            },
            Pass::BackwardWithThresholds => Buffers {
                x: true,
                alpha: true,
                dy: true,
                out: true,
                dalpha: true,
                ..none
            },
        }
    }
}

/// Something per buffer of a call, by role: their lengths
/// (`Buffers<usize>`), their device addresses (`Buffers<u64>`), whether a
/// call uses them (`Buffers<bool>`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Buffers<T> {
    pub x: T,
    /// `rsign`'s per-channel thresholds.
    pub alpha: T,
    pub dy: T,
    /// The 1-bit mask: written by the masked forward, read by the backward.
    pub mask: T,
    /// magnitude_aware_sign's saved per-channel scale, with the mask.
    pub scale: T,
    /// `y` or `dx`.
    pub out: T,
    /// `rsign`'s threshold gradient.
    pub dalpha: T,
}

/// A call, resolved and checked against its shape.
#[derive(Debug, Clone)]
pub(crate) struct Call<'s> {
    pub(crate) pass: Pass,
    // Read by the CUDA planner only.
    #[cfg_attr(not(lowbit_cuda), allow(dead_code))]
    pub(crate) dtype: DType,
    /// The computation; `None` for `rsign`, which has its own kernels.
    pub(crate) op: Option<Op>,
    pub(crate) shape: &'s [usize],
    /// Elements.
    pub(crate) len: usize,
    /// The last axis (1 for a scalar).
    pub(crate) channels: usize,
    /// Elements per first-axis index (XNOR-Net's output channel).
    pub(crate) inner: usize,
}

impl<'s> Call<'s> {
    /// Resolves `q` for `pass` on a tensor of `dtype` and `shape`: refuses a
    /// quantizer the call cannot run (`rsign` without thresholds, a
    /// threshold call of another quantizer, a mask where the gradient needs
    /// `x`) and a shape whose element count overflows.
    pub(crate) fn new(q: &Quantizer, dtype: DType, pass: Pass, shape: &'s [usize]) -> Result<Self> {
        let op = match pass {
            Pass::Forward | Pass::Backward => Some(plain_op(q, dtype)?),
            Pass::ForwardWithMask | Pass::BackwardFromMask => Some(
                Op::new(q, dtype)
                    .filter(|op| op.window.is_some())
                    .ok_or_else(|| not_maskable(q))?,
            ),
            Pass::ForwardWithThresholds | Pass::BackwardWithThresholds => {
                if !q.takes_thresholds() {
                    return Err(Error::TakesNoThresholds {
                        quantizer: q.name(),
                    });
                }
                None
            }
        };
        let (len, channels) = check_shape(shape, &[])?;
        Ok(Call {
            pass,
            dtype,
            op,
            shape,
            len,
            channels,
            inner: first_axis_inner(shape, len),
        })
    }

    /// The length each buffer must have; 0 for those the call does not use.
    pub(crate) fn lengths(&self) -> Buffers<usize> {
        let uses = self.pass.uses();
        let need = |used: bool, n: usize| if used { n } else { 0 };
        Buffers {
            x: need(uses.x, self.len),
            alpha: need(uses.alpha, self.channels),
            dy: need(uses.dy, self.len),
            mask: need(uses.mask, mask_words(self.len)),
            scale: need(uses.scale, self.scale_len()),
            out: need(uses.out, self.len),
            dalpha: need(uses.dalpha, self.channels),
        }
    }

    /// Holds every buffer the call uses to its length, before anything is
    /// read or written: the tensors, then the thresholds, then the mask
    /// and the scale.
    pub(crate) fn check(&self, have: &Buffers<usize>) -> Result<()> {
        let (uses, need, out) = (self.pass.uses(), self.lengths(), self.out_name());
        for (used, buffer, len) in [
            (uses.x, "x", have.x),
            (uses.dy, "dy", have.dy),
            (uses.out, out, have.out),
        ] {
            if used && len != self.len {
                return Err(Error::ShapeMismatch {
                    shape: self.shape.to_vec(),
                    expected: self.len,
                    buffer,
                    len,
                });
            }
        }
        for (used, buffer, len) in [
            (uses.alpha, "alpha", have.alpha),
            (uses.dalpha, "dalpha", have.dalpha),
        ] {
            if used && len != self.channels {
                return Err(Error::ThresholdLength {
                    buffer,
                    channels: self.channels,
                    len,
                });
            }
        }
        for (used, buffer, expected, len) in [
            (uses.mask, "mask", need.mask, have.mask),
            (uses.scale, "scale", need.scale, have.scale),
        ] {
            if used && len != expected {
                return Err(Error::BufferLength {
                    buffer,
                    expected,
                    len,
                });
            }
        }
        Ok(())
    }

    /// Refuses a null address where the call needs elements: the raw calls
    /// know no lengths, but a missing buffer they can tell.
    #[cfg_attr(not(lowbit_cuda), allow(dead_code))]
    pub(crate) fn check_addresses(&self, addresses: &Buffers<u64>) -> Result<()> {
        let need = self.lengths();
        for (buffer, expected, address) in [
            ("x", need.x, addresses.x),
            ("alpha", need.alpha, addresses.alpha),
            ("dy", need.dy, addresses.dy),
            ("mask", need.mask, addresses.mask),
            ("scale", need.scale, addresses.scale),
            (self.out_name(), need.out, addresses.out),
            ("dalpha", need.dalpha, addresses.dalpha),
        ] {
            if expected > 0 && address == 0 {
                return Err(Error::BufferLength {
                    buffer,
                    expected,
                    len: 0,
                });
            }
        }
        Ok(())
    }

    /// What the output is called: `y` or `dx`.
    fn out_name(&self) -> &'static str {
        match self.pass.direction() {
            Direction::Forward => "y",
            Direction::Backward => "dx",
        }
    }

    /// The call's op; only `rsign`'s calls have none.
    pub(crate) fn op(&self) -> Option<&Op> {
        self.op.as_ref()
    }

    /// Elements of the scale a masked call saves ([`Op::saves_scale`]).
    pub(crate) fn scale_len(&self) -> usize {
        match &self.op {
            Some(op) if op.saves_scale() => self.channels,
            _ => 0,
        }
    }

    /// The dims the CPU reductions read.
    pub(crate) fn dims(&self) -> Dims {
        Dims {
            channels: self.channels,
            inner: self.inner,
        }
    }

    /// What a call on a tensor with no elements writes, on every backend:
    /// the scales of its channels (a mean over nothing, 0) and `rsign`'s dα
    /// (an empty sum). The other outputs are empty. `scale` and `dalpha`
    /// have been checked to hold one value per channel, so they bound the
    /// channel count, which no tensor does here.
    pub(crate) fn fill_empty<T: Element>(&self, scale: &mut [T], dalpha: &mut [T]) {
        debug_assert_eq!(self.len, 0);
        match self.pass {
            Pass::ForwardWithMask => scale.fill(T::from_f32(0.0)),
            Pass::BackwardWithThresholds => {
                dalpha.fill(T::from_f32(crate::scalar::rsign_dalpha(0.0)))
            }
            _ => {}
        }
    }
}

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

/// The op of a plain call; `rsign`, which needs thresholds, is refused.
pub(crate) fn plain_op(q: &Quantizer, dtype: DType) -> Result<Op> {
    Op::new(q, dtype).ok_or(Error::NeedsThresholds {
        quantizer: q.name(),
    })
}

/// A call in host memory: which pass, and its buffers (those it does not
/// use are empty). The mask and the scale are outputs of the masked
/// forward and inputs of the backward from the mask, hence two slots each.
/// Made by one constructor per pass, so that the Rust calls on slices
/// (`Quantizer`'s, `Backend`'s) each name their buffers once.
#[derive(Debug)]
pub(crate) struct Host<'a, T> {
    pub pass: Pass,
    pub x: &'a [T],
    pub alpha: &'a [T],
    pub dy: &'a [T],
    pub mask: &'a [u32],
    pub scale: &'a [T],
    pub out: &'a mut [T],
    pub dalpha: &'a mut [T],
    pub mask_out: &'a mut [u32],
    pub scale_out: &'a mut [T],
}

impl<'a, T> Host<'a, T> {
    fn new(pass: Pass) -> Self {
        Host {
            pass,
            x: &[],
            alpha: &[],
            dy: &[],
            mask: &[],
            scale: &[],
            out: &mut [],
            dalpha: &mut [],
            mask_out: &mut [],
            scale_out: &mut [],
        }
    }

    pub(crate) fn forward(x: &'a [T], y: &'a mut [T]) -> Self {
        Host {
            x,
            out: y,
            ..Self::new(Pass::Forward)
        }
    }

    pub(crate) fn backward(x: &'a [T], dy: &'a [T], dx: &'a mut [T]) -> Self {
        Host {
            x,
            dy,
            out: dx,
            ..Self::new(Pass::Backward)
        }
    }

    pub(crate) fn forward_with_mask(
        x: &'a [T],
        y: &'a mut [T],
        mask: &'a mut [u32],
        scale: &'a mut [T],
    ) -> Self {
        Host {
            x,
            out: y,
            mask_out: mask,
            scale_out: scale,
            ..Self::new(Pass::ForwardWithMask)
        }
    }

    pub(crate) fn backward_from_mask(
        mask: &'a [u32],
        scale: &'a [T],
        dy: &'a [T],
        dx: &'a mut [T],
    ) -> Self {
        Host {
            mask,
            scale,
            dy,
            out: dx,
            ..Self::new(Pass::BackwardFromMask)
        }
    }

    pub(crate) fn forward_with_thresholds(x: &'a [T], alpha: &'a [T], y: &'a mut [T]) -> Self {
        Host {
            x,
            alpha,
            out: y,
            ..Self::new(Pass::ForwardWithThresholds)
        }
    }

    pub(crate) fn backward_with_thresholds(
        x: &'a [T],
        alpha: &'a [T],
        dy: &'a [T],
        dx: &'a mut [T],
        dalpha: &'a mut [T],
    ) -> Self {
        Host {
            x,
            alpha,
            dy,
            out: dx,
            dalpha,
            ..Self::new(Pass::BackwardWithThresholds)
        }
    }

    /// Their lengths, by role.
    pub(crate) fn lengths(&self) -> Buffers<usize> {
        Buffers {
            x: self.x.len(),
            alpha: self.alpha.len(),
            dy: self.dy.len(),
            // One slot of each pair is empty.
            mask: self.mask.len() + self.mask_out.len(),
            scale: self.scale.len() + self.scale_out.len(),
            out: self.out.len(),
            dalpha: self.dalpha.len(),
        }
    }
}

impl<'s> Call<'s> {
    /// The call `t` makes of `q` on a tensor of `shape`, resolved and
    /// checked ([`Call::new`], [`Call::check`]).
    pub(crate) fn on_host<T: Element>(
        q: &Quantizer,
        shape: &'s [usize],
        t: &Host<'_, T>,
    ) -> Result<Self> {
        let call = Call::new(q, T::DTYPE, t.pass, shape)?;
        call.check(&t.lengths())?;
        Ok(call)
    }
}
