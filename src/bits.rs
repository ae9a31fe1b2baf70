//! Binarized tensors as bits, laid out as Larq Compute Engine (LCE) packs
//! them, and larq's `flip_ratio` metric computed on those bits.
//!
//! # Layout
//!
//! A tensor of shape `[..., channels]` is a stack of rows of `channels`
//! values (the rows are all the other axes, row-major; a scalar is one row
//! of one channel). Each row packs into `ceil(channels / 32)` 32-bit words,
//! rows one after the other:
//!
//! - bit `j` of word `w` of a row holds channel `32·w + j`, least
//!   significant bit first;
//! - the bit is 1 where the value is −1 (`x < 0`) and 0 for +1, so `+0`,
//!   `−0` and NaN pack to 0 (see [`scalar::sign_bit`]);
//! - the bits past the last channel of a row (the padding of its last word)
//!   are 0.
//!
//! This is LCE's `bitpack_matrix` (larq/compute-engine,
//! `larq_compute_engine/core/bitpacking/bitpack.h`): `bitpack_bitfield`
//! sets bitfield member `b<i>` of a word from `fptr[i] < 0`, a short row is
//! padded with zeros (which give 0 bits), and `unpack_bitfield` reads
//! element `i` back as `in & (1 << i)`, least significant bit first, with
//! `unpack_matrix` mapping a 0 bit to +1 and a 1 bit to −1. LCE's words are
//! `TBitpacked = std::int32_t` (`core/types.h`): the same 32 bits as
//! lowbit's `u32`.
//!
//! ```
//! use lowbit::bits;
//!
//! // Two rows of 35 channels: each row needs two words, the second holding
//! // channels 32..35 in bits 0..3 and 29 bits of zero padding.
//! let mut x = vec![0.5f32; 70];
//! x[0] = -0.5; //  row 0, channel 0:  word 0, bit 0
//! x[1] = -0.0; //  −0 is not below 0: a 0 bit, like +0
//! x[2] = -3.0; //  row 0, channel 2:  word 0, bit 2
//! x[33] = -1.0; // row 0, channel 33: word 1, bit 1
//! x[35..].fill(-2.0); // row 1: every channel negative
//! let packed = bits::pack_vec(&x, &[2, 35])?;
//! assert_eq!(bits::packed_len(&[2, 35])?, 4);
//! assert_eq!(packed, [0b101, 0b10, 0xFFFF_FFFF, 0b111]);
//!
//! // Unpacking gives ste_sign(x): ±1, or ±scale[c] with a per-channel scale.
//! let y: Vec<f32> = bits::unpack_vec(&packed, &[2, 35], None)?;
//! assert_eq!(y[..4], [-1.0, 1.0, -1.0, 1.0]);
//! assert_eq!(y[35..], [-1.0; 35]);
//! # Ok::<(), lowbit::Error>(())
//! ```
//!
//! # Packing is ste_sign's forward pass
//!
//! [`pack`] of a real-valued tensor is the fused quantize-and-pack forward
//! of `ste_sign`: the bits of `ste_sign(x)`, with no `±1` tensor in
//! between. Its gradient is `ste_sign`'s straight-through estimator,
//! [`Quantizer::backward`](crate::Quantizer::backward) with `ste_sign`, which
//! reads `x` and `dy` only, never the bits. The one value a bit cannot hold
//! is NaN: `ste_sign` gives NaN for NaN, the bit is 0 (+1), as in LCE.
//!
//! # Flip ratio
//!
//! [`FlipRatio`] is larq's `flip_ratio` metric: the fraction of weights whose
//! sign changed since the previous update, averaged over updates. It keeps
//! the previous signs packed as above, 1 bit per weight, where the weights
//! are (host or GPU memory).

use crate::backend::Backend;
use crate::call::check_shape;
use crate::cpu;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::scalar::{self, WORD_BITS};

/// 32-bit words one row of `channels` values packs into:
/// `ceil(channels / 32)`.
///
/// ```
/// assert_eq!(lowbit::bits::words_per_row(32), 1);
/// assert_eq!(lowbit::bits::words_per_row(33), 2);
/// assert_eq!(lowbit::bits::words_per_row(0), 0);
/// ```
pub fn words_per_row(channels: usize) -> usize {
    channels.div_ceil(WORD_BITS)
}

/// Words a tensor of `shape` packs into: its rows (every axis but the last)
/// times [`words_per_row`] of its last axis. An error only when the shape's
/// element count overflows.
///
/// ```
/// assert_eq!(lowbit::bits::packed_len(&[4, 3, 65])?, 12 * 3);
/// assert_eq!(lowbit::bits::packed_len(&[])?, 1); // a scalar is one row of one channel
/// # Ok::<(), lowbit::Error>(())
/// ```
pub fn packed_len(shape: &[usize]) -> Result<usize> {
    Ok(Rows::of(shape)?.packed_len())
}

/// A tensor seen as rows of channels, and the words each row packs into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rows {
    pub rows: usize,
    pub channels: usize,
    pub words: usize,
}

impl Rows {
    fn of(shape: &[usize]) -> Result<Rows> {
        let (len, channels) = check_shape(shape, &[])?;
        Ok(Rows {
            // With no channels there is nothing to pack, whatever the rows.
            rows: len.checked_div(channels).unwrap_or(0),
            channels,
            words: words_per_row(channels),
        })
    }

    /// Values in the unpacked tensor.
    pub fn len(&self) -> usize {
        self.rows * self.channels
    }

    /// Words in the packed tensor.
    pub fn packed_len(&self) -> usize {
        self.rows * self.words
    }
}

/// Checks an unpacked buffer against `shape` and a packed one against the
/// words `shape` packs into.
pub(crate) fn check(
    shape: &[usize],
    values: (&'static str, usize),
    packed: (&'static str, usize),
) -> Result<Rows> {
    check_shape(shape, &[values])?;
    check_packed(shape, packed)
}

/// Checks a packed buffer against the words `shape` packs into.
fn check_packed(shape: &[usize], packed: (&'static str, usize)) -> Result<Rows> {
    let rows = Rows::of(shape)?;
    let (buffer, len) = packed;
    if len != rows.packed_len() {
        return Err(Error::PackedMismatch {
            shape: shape.to_vec(),
            expected: rows.packed_len(),
            buffer,
            len,
        });
    }
    Ok(rows)
}

/// Checks that a scale, if any, has one value per channel.
pub(crate) fn check_scale(shape: &[usize], rows: Rows, scale: Option<usize>) -> Result<()> {
    match scale {
        Some(len) if len != rows.channels => Err(Error::ScaleMismatch {
            shape: shape.to_vec(),
            channels: rows.channels,
            len,
        }),
        _ => Ok(()),
    }
}

/// Packs `x`, a row-major tensor of `shape`, into `packed` as described in
/// the [module documentation](self): 1 bit per value, 1 where `x < 0`.
/// `packed` holds exactly [`packed_len`]`(shape)` words; on error it is
/// left untouched.
///
/// This is `ste_sign`'s forward pass and packing in one (see the module
/// documentation for its gradient).
///
/// ```
/// let x = [-1.0f32, 2.0, -0.0, -4.0];
/// let mut packed = [0u32; 2];
/// lowbit::bits::pack(&x, &[2, 2], &mut packed)?;
/// assert_eq!(packed, [0b01, 0b10]);
/// # Ok::<(), lowbit::Error>(())
/// ```
pub fn pack<T: Element>(x: &[T], shape: &[usize], packed: &mut [u32]) -> Result<()> {
    let rows = check(shape, ("x", x.len()), ("packed", packed.len()))?;
    cpu::pool::run(|| cpu::bits::pack(x, rows, packed))
}

/// [`pack`] into a new vector.
pub fn pack_vec<T: Element>(x: &[T], shape: &[usize]) -> Result<Vec<u32>> {
    // `x` first: the words are allocated only for a shape it holds.
    check_shape(shape, &[("x", x.len())])?;
    let mut packed = vec![0; packed_len(shape)?];
    pack(x, shape, &mut packed)?;
    Ok(packed)
}

/// Unpacks `packed`, a tensor of `shape` packed as [`pack`] does, into `y`:
/// −1 for a 1 bit, +1 for a 0 bit, each times its channel's `scale` when one
/// is given (`scale[c]` for the last-axis index `c`; the product is rounded
/// once to `T`). Padding bits are not read. On error `y` is left untouched.
///
/// ```
/// use lowbit::f16;
///
/// let packed = [0b01u32, 0b10];
/// let mut y = [f16::ZERO; 4];
/// lowbit::bits::unpack(&packed, &[2, 2], Some(&[0.5, 3.0]), &mut y)?;
/// assert_eq!(y.map(f32::from), [-0.5, 3.0, 0.5, -3.0]);
/// # Ok::<(), lowbit::Error>(())
/// ```
pub fn unpack<T: Element>(
    packed: &[u32],
    shape: &[usize],
    scale: Option<&[f32]>,
    y: &mut [T],
) -> Result<()> {
    let rows = check(shape, ("y", y.len()), ("packed", packed.len()))?;
    check_scale(shape, rows, scale.map(<[f32]>::len))?;
    cpu::pool::run(|| cpu::bits::unpack(packed, rows, scale, y))
}

/// [`unpack`] into a new vector.
pub fn unpack_vec<T: Element>(
    packed: &[u32],
    shape: &[usize],
    scale: Option<&[f32]>,
) -> Result<Vec<T>> {
    // The words and the scale first: `y` is allocated only for a shape
    // that `packed` holds.
    let rows = check_packed(shape, ("packed", packed.len()))?;
    check_scale(shape, rows, scale.map(<[f32]>::len))?;
    let mut y = vec![T::default(); rows.len()];
    unpack(packed, shape, scale, &mut y)?;
    Ok(y)
}

impl Backend {
    /// [`bits::pack`](pack) on this backend, from and to host memory. On CUDA
    /// this copies to the device and back and waits; training code keeps
    /// its tensors on the device and calls
    /// [`Cuda::pack`](crate::cuda::Cuda::pack).
    ///
    /// ```
    /// use lowbit::{Backend, Device};
    ///
    /// let backend = Backend::new(Device::Cpu)?;
    /// let mut packed = [0u32; 1];
    /// backend.pack(&[-1.0f32, 1.0, -1.0], &[3], &mut packed)?;
    /// assert_eq!(packed, [0b101]);
    /// # Ok::<(), lowbit::Error>(())
    /// ```
    pub fn pack<T: Element>(&self, x: &[T], shape: &[usize], packed: &mut [u32]) -> Result<()> {
        let rows = check(shape, ("x", x.len()), ("packed", packed.len()))?;
        #[cfg(lowbit_cuda)]
        if let Some(cuda) = self.as_cuda() {
            return host::pack(cuda, x, shape, packed);
        }
        cpu::pool::run(|| cpu::bits::pack(x, rows, packed))
    }

    /// [`bits::unpack`](unpack) on this backend, from and to host memory.
    pub fn unpack<T: Element>(
        &self,
        packed: &[u32],
        shape: &[usize],
        scale: Option<&[f32]>,
        y: &mut [T],
    ) -> Result<()> {
        let rows = check(shape, ("y", y.len()), ("packed", packed.len()))?;
        check_scale(shape, rows, scale.map(<[f32]>::len))?;
        #[cfg(lowbit_cuda)]
        if let Some(cuda) = self.as_cuda() {
            return host::unpack(cuda, packed, shape, scale, y);
        }
        cpu::pool::run(|| cpu::bits::unpack(packed, rows, scale, y))
    }
}

/// What one [`FlipRatio`] update found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flips {
    /// Weights whose sign changed since the previous update; 0 on the first
    /// update, which has nothing to compare with.
    pub flipped: u64,
    /// This update's flip ratio, `1 − unchanged / size` in `f32` as larq
    /// computes it; 0 on the first update and for an empty tensor.
    pub ratio: f32,
    /// The running value, larq's `result()`: the mean of the ratios of the
    /// updates since the first (or since [`FlipRatio::reset`]), the first
    /// being weighted 0.
    pub running: f32,
}

/// larq's `FlipRatio` bookkeeping, apart from the signs themselves (which
/// live on the host or on a GPU).
#[derive(Debug, Clone)]
pub(crate) struct Tracker {
    shape: Vec<usize>,
    rows: Rows,
    /// Whether previous signs are stored: false until the first update.
    has_previous: bool,
    /// larq's `total` and `count`, `f32` variables in larq.
    total: f32,
    count: f32,
}

impl Tracker {
    pub fn new(shape: &[usize]) -> Result<Self> {
        Ok(Tracker {
            shape: shape.to_vec(),
            rows: Rows::of(shape)?,
            has_previous: false,
            total: 0.0,
            count: 0.0,
        })
    }

    pub fn rows(&self) -> Rows {
        self.rows
    }

    pub fn has_previous(&self) -> bool {
        self.has_previous
    }

    /// Checks the length of an update's values against the shape.
    pub fn check(&self, len: usize) -> Result<()> {
        check_shape(&self.shape, &[("values", len)]).map(|_| ())
    }

    /// Counts an update that found `flipped` changed signs, as larq's
    /// `update_state` does.
    pub fn record(&mut self, flipped: u64) -> Flips {
        let ratio = if self.has_previous {
            scalar::flip_ratio(flipped, self.rows.len() as u64)
        } else {
            0.0
        };
        // larq: total += ratio · tf.sign(count), then count += 1. count ≥ 0,
        // so the sign is 0 for the first update after a reset and 1 after.
        let weight = if self.count > 0.0 { 1.0 } else { 0.0 };
        self.total += ratio * weight;
        self.count += 1.0;
        self.has_previous = true;
        Flips {
            flipped,
            ratio,
            running: self.result(),
        }
    }

    /// larq's `result()`: `div_no_nan(total, count − 1)`.
    pub fn result(&self) -> f32 {
        let updates = self.count - 1.0;
        if updates == 0.0 {
            0.0
        } else {
            self.total / updates
        }
    }

    /// larq's `reset_states`: zero the total and count, keep the signs.
    pub fn reset(&mut self) {
        self.total = 0.0;
        self.count = 0.0;
    }
}

/// larq's `flip_ratio` metric on a tensor of fixed shape: each update
/// compares the signs of the new values with those of the previous update
/// and returns the share that flipped, plus the running mean larq reports.
///
/// The previous signs are kept packed, 1 bit per weight, on the backend it
/// was made for: on CUDA the comparison runs on the device and only the
/// count of flips comes back.
///
/// ```
/// use lowbit::{Backend, Device, bits::FlipRatio};
///
/// // larq's docstring example, with signs: its 1s and 2s become +1 and −1.
/// let mut m = FlipRatio::new(&Backend::new(Device::Cpu)?, &[2])?;
/// assert_eq!(m.update(&[1.0f32, 1.0])?.running, 0.0); // nothing to compare with yet
/// let flips = m.update(&[-1.0f32, -1.0])?;
/// assert_eq!((flips.flipped, flips.ratio, flips.running), (2, 1.0, 1.0));
/// let flips = m.update(&[1.0f32, -1.0])?;
/// assert_eq!((flips.flipped, flips.ratio, flips.running), (1, 0.5, 0.75));
/// assert_eq!(m.result(), 0.75);
/// # Ok::<(), lowbit::Error>(())
/// ```
///
/// # How it follows larq
///
/// larq's `FlipRatio` (`larq/metrics.py`) keeps the previous values (cast to
/// `int8`) and, per update, computes `ratio = 1 − unchanged / size`, adds
/// `ratio · sign(count)` to `total`, adds 1 to `count`, and reports
/// `result() = div_no_nan(total, count − 1)`; `reset_states` zeroes
/// `total` and `count` but keeps the previous values. lowbit does the same
/// arithmetic, in `f32` and in the same order, so [`Flips::running`] and
/// [`result`](Self::result) are larq's `result()` bit for bit when the
/// values compared are the same. The differences:
///
/// - lowbit compares signs (`x < 0` or not, as [`pack`] does), larq compares
///   `int8` casts. For what larq's binarizing quantizers feed it (±1) they
///   are the same, and passing the latent weights instead of `ste_sign` of
///   them gives the same signs. For other values they differ: larq counts
///   1 → 2 as a change, lowbit does not.
/// - The first update has no previous signs: lowbit reports `flipped = 0`
///   and `ratio = 0`; larq compares with its zero-initialized variable (a
///   ratio of 1 for ±1 values) and weights it 0. Either way the running
///   value after the first update is 0.
/// - NaN counts as +1 (its bit is 0, see [`scalar::sign_bit`]); larq casts
///   NaN to `int8`, which TensorFlow leaves unspecified.
/// - An empty tensor gives a ratio of 0, where larq divides 0 by 0.
#[derive(Debug)]
pub struct FlipRatio {
    inner: Inner,
}

// The packed signs are allocated at the first update, once its values have
// been checked against the shape: `new` has only the shape, and a shape
// alone (`[1 << 40]`) must not size an allocation.
#[derive(Debug)]
enum Inner {
    Cpu {
        tracker: Tracker,
        previous: Vec<u32>,
    },
    #[cfg(lowbit_cuda)]
    Cuda {
        cuda: std::sync::Arc<crate::cuda::Cuda>,
        /// The bookkeeping until the first update makes `state`, which
        /// then keeps its own.
        pending: Tracker,
        state: Option<crate::cuda::DeviceFlipRatio>,
    },
}

impl FlipRatio {
    /// A metric for tensors of `shape` on `backend`. The previous signs
    /// (on CUDA, with a counter, on the device) are allocated once, at the
    /// first update, whose values show that the shape is real.
    pub fn new(backend: &Backend, shape: &[usize]) -> Result<Self> {
        let tracker = Tracker::new(shape)?;
        #[cfg(lowbit_cuda)]
        if let Some(cuda) = backend.as_cuda() {
            return Ok(FlipRatio {
                inner: Inner::Cuda {
                    cuda: cuda.clone(),
                    pending: tracker,
                    state: None,
                },
            });
        }
        // Without CUDA built in, every backend is the CPU.
        let _ = backend;
        Ok(FlipRatio {
            inner: Inner::Cpu {
                tracker,
                previous: Vec::new(),
            },
        })
    }

    /// Compares the signs of `values` (a tensor of the shape given to
    /// [`new`](Self::new)) with those of the previous update, stores them
    /// for the next, and returns this update's flips and the running value.
    /// On error nothing changes.
    pub fn update<T: Element>(&mut self, values: &[T]) -> Result<Flips> {
        match &mut self.inner {
            Inner::Cpu { tracker, previous } => {
                tracker.check(values.len())?;
                let rows = tracker.rows();
                let flipped = if tracker.has_previous() {
                    cpu::pool::run(|| cpu::bits::pack_counting_flips(values, rows, previous))?
                } else {
                    let mut first = vec![0; rows.packed_len()];
                    cpu::pool::run(|| cpu::bits::pack(values, rows, &mut first))?;
                    *previous = first;
                    0
                };
                Ok(tracker.record(flipped))
            }
            #[cfg(lowbit_cuda)]
            Inner::Cuda {
                cuda,
                pending,
                state,
            } => {
                let state = match state {
                    Some(state) => state,
                    None => {
                        pending.check(values.len())?;
                        let stream = cuda.context().default_stream();
                        let made =
                            crate::cuda::DeviceFlipRatio::with_tracker(&stream, pending.clone())?;
                        state.insert(made)
                    }
                };
                host::update(cuda, state, values)
            }
        }
    }

    /// larq's `result()`: the running mean of the updates' flip ratios, the
    /// first update weighted 0 (so 0 until the second update).
    pub fn result(&self) -> f32 {
        self.tracker().result()
    }

    /// larq's `reset_states`: starts a new mean but keeps the previous signs,
    /// so the next update still counts flips (and is weighted 0).
    pub fn reset(&mut self) {
        match &mut self.inner {
            Inner::Cpu { tracker, .. } => tracker.reset(),
            #[cfg(lowbit_cuda)]
            Inner::Cuda { pending, state, .. } => match state {
                Some(state) => state.reset(),
                None => pending.reset(),
            },
        }
    }

    fn tracker(&self) -> &Tracker {
        match &self.inner {
            Inner::Cpu { tracker, .. } => tracker,
            #[cfg(lowbit_cuda)]
            Inner::Cuda { pending, state, .. } => {
                state.as_ref().map_or(pending, |state| &state.tracker)
            }
        }
    }
}

/// Host-memory calls on the CUDA backend, staged through the device.
#[cfg(lowbit_cuda)]
mod host {
    use super::Flips;
    use crate::cuda::staging::Staging;
    use crate::cuda::{Cuda, DeviceFlipRatio};
    use crate::element::Element;
    use crate::error::Result;

    pub(super) fn pack<T: Element>(
        cuda: &Cuda,
        x: &[T],
        shape: &[usize],
        packed: &mut [u32],
    ) -> Result<()> {
        let s = Staging::new(cuda);
        // SAFETY: the kernel writes every word.
        let (xd, mut pd) = (s.upload(x)?, unsafe { s.output::<u32>(packed.len())? });
        // No words (no channels) is nothing to do.
        let (Some(xv), Some(pv)) = (&xd, &mut pd) else {
            return Ok(());
        };
        cuda.pack(s.stream(), &xv.as_view(), shape, &mut pv.as_view_mut())?;
        s.download(&pd, packed)?;
        s.finish()
    }

    pub(super) fn unpack<T: Element>(
        cuda: &Cuda,
        packed: &[u32],
        shape: &[usize],
        scale: Option<&[f32]>,
        y: &mut [T],
    ) -> Result<()> {
        let s = Staging::new(cuda);
        let (pd, sd) = (s.upload(packed)?, scale.map(|v| s.upload(v)).transpose()?);
        // SAFETY: the kernel writes every element.
        let mut yd = unsafe { s.output::<T>(y.len())? };
        // An empty tensor is nothing to do.
        let (Some(pv), Some(yv)) = (&pd, &mut yd) else {
            return Ok(());
        };
        let sd = sd.flatten();
        let sv = sd.as_ref().map(|sd| sd.as_view());
        cuda.unpack(
            s.stream(),
            &pv.as_view(),
            shape,
            sv.as_ref(),
            &mut yv.as_view_mut(),
        )?;
        s.download(&yd, y)?;
        s.finish()
    }

    pub(super) fn update<T: Element>(
        cuda: &Cuda,
        state: &mut DeviceFlipRatio,
        values: &[T],
    ) -> Result<Flips> {
        state.tracker.check(values.len())?;
        let s = Staging::new(cuda);
        match s.upload(values)? {
            // Waits for the count of flips itself.
            Some(vd) => cuda.update_flip_ratio(s.stream(), &vd.as_view(), state),
            None => Ok(state.tracker.record(0)),
        }
    }
}
