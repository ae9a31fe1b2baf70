//! Choosing where the work runs: the CPU, or CUDA when a device exists and
//! the kernels load. The same calls work on either.

use std::fmt;
use std::str::FromStr;
#[cfg(lowbit_cuda)]
use std::sync::Arc;

use crate::element::Element;
use crate::error::{Error, Result};
use crate::quantizer::Quantizer;

/// Which backend to use: `LOWBIT_DEVICE=auto|cpu|cuda`, or in code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// CUDA when a device exists and the kernels load, else the CPU.
    #[default]
    Auto,
    /// The rayon CPU path.
    Cpu,
    /// CUDA device 0; an error where it cannot run.
    Cuda,
}

impl FromStr for Device {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda),
            _ => Err(Error::UnknownDevice(crate::quantizer::excerpt(s))),
        }
    }
}

#[derive(Debug, Clone)]
enum Inner {
    Cpu,
    #[cfg(lowbit_cuda)]
    Cuda(Arc<crate::cuda::Cuda>),
}

/// A chosen backend and why it was chosen.
///
/// ```
/// use lowbit::{Backend, Device, Quantizer};
///
/// let backend = Backend::new(Device::Cpu)?;
/// assert_eq!(backend.name(), "cpu");
/// let q: Quantizer = "ste_sign".parse()?;
/// let mut y = [0.0f32; 2];
/// backend.forward(&q, &[-0.5f32, 0.5], &[2], &mut y)?;
/// assert_eq!(y, [-1.0, 1.0]);
/// # Ok::<(), lowbit::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Backend {
    inner: Inner,
    reason: String,
}

impl Backend {
    /// The backend `device` asks for. `Auto` never fails: without a usable
    /// GPU it picks the CPU and [`reason`](Self::reason) says why; asking for
    /// `Cuda` where it cannot run is an error that says why.
    pub fn new(device: Device) -> Result<Self> {
        match device {
            Device::Cpu => Ok(Backend::cpu("asked for the CPU")),
            Device::Cuda => Self::cuda(),
            Device::Auto => Ok(Self::cuda().unwrap_or_else(|e| {
                let why = match e {
                    Error::CudaUnavailable(why) => why,
                    e => e.to_string(),
                };
                Backend::cpu(&format!("auto: CUDA unavailable ({why})"))
            })),
        }
    }

    /// The backend `LOWBIT_DEVICE` names (`auto` when unset).
    pub fn from_env() -> Result<Self> {
        let device = match std::env::var("LOWBIT_DEVICE") {
            Ok(v) => v.parse()?,
            Err(_) => Device::Auto,
        };
        Self::new(device)
    }

    fn cpu(reason: &str) -> Self {
        Backend {
            inner: Inner::Cpu,
            reason: reason.to_string(),
        }
    }

    #[cfg(lowbit_cuda)]
    fn cuda() -> Result<Self> {
        let cuda = crate::cuda::Cuda::new(0)?;
        let mut reason = match cuda.device() {
            Ok((name, (major, minor))) => format!("CUDA device 0: {name} (sm_{major}{minor})"),
            Err(_) => "CUDA device 0".to_string(),
        };
        if let Some((major, minor)) = cuda.driver_version() {
            reason += &format!(", driver CUDA {major}.{minor}");
        }
        Ok(Backend {
            inner: Inner::Cuda(Arc::new(cuda)),
            reason,
        })
    }

    #[cfg(not(lowbit_cuda))]
    fn cuda() -> Result<Self> {
        Err(Error::CudaUnavailable(
            "lowbit was built without CUDA kernels (no CUDA compiler at build time)".into(),
        ))
    }

    /// `"cpu"` or `"cuda"`.
    pub fn name(&self) -> &'static str {
        match self.inner {
            Inner::Cpu => "cpu",
            #[cfg(lowbit_cuda)]
            Inner::Cuda(_) => "cuda",
        }
    }

    /// Why this backend was chosen (for `auto`, why CUDA was not).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The CUDA backend, for calls on device buffers and streams.
    #[cfg(lowbit_cuda)]
    pub fn as_cuda(&self) -> Option<&Arc<crate::cuda::Cuda>> {
        match &self.inner {
            Inner::Cuda(c) => Some(c),
            Inner::Cpu => None,
        }
    }

    /// [`Quantizer::forward`] on this backend, from and to host memory. On
    /// CUDA this copies to the device and back and waits: for tests and
    /// tools; training code keeps its tensors on the device and calls
    /// [`crate::cuda::Cuda::forward`].
    pub fn forward<T: Element>(
        &self,
        q: &Quantizer,
        x: &[T],
        shape: &[usize],
        y: &mut [T],
    ) -> Result<()> {
        crate::api::check_plain(q)?;
        match &self.inner {
            Inner::Cpu => q.forward(x, shape, y),
            #[cfg(lowbit_cuda)]
            Inner::Cuda(cuda) => {
                crate::api::check_shape(shape, &[("x", x.len()), ("y", y.len())])?;
                host::run(cuda, q, x, None, shape, y)
            }
        }
    }

    /// [`Quantizer::backward`] on this backend, from and to host memory.
    pub fn backward<T: Element>(
        &self,
        q: &Quantizer,
        x: &[T],
        dy: &[T],
        shape: &[usize],
        dx: &mut [T],
    ) -> Result<()> {
        crate::api::check_plain(q)?;
        match &self.inner {
            Inner::Cpu => q.backward(x, dy, shape, dx),
            #[cfg(lowbit_cuda)]
            Inner::Cuda(cuda) => {
                let buffers = [("x", x.len()), ("dy", dy.len()), ("dx", dx.len())];
                crate::api::check_shape(shape, &buffers)?;
                host::run(cuda, q, x, Some(dy), shape, dx)
            }
        }
    }

    /// [`Quantizer::forward_with_thresholds`] (`rsign`) on this backend,
    /// from and to host memory.
    pub fn forward_with_thresholds<T: Element>(
        &self,
        q: &Quantizer,
        x: &[T],
        alpha: &[T],
        shape: &[usize],
        y: &mut [T],
    ) -> Result<()> {
        crate::api::check_thresholds(
            q,
            shape,
            &[("x", x.len()), ("y", y.len())],
            &[("alpha", alpha.len())],
        )?;
        match &self.inner {
            Inner::Cpu => q.forward_with_thresholds(x, alpha, shape, y),
            #[cfg(lowbit_cuda)]
            Inner::Cuda(cuda) => host::rsign(cuda, q, x, alpha, shape, y, None),
        }
    }

    /// [`Quantizer::backward_with_thresholds`] (`rsign`) on this backend,
    /// from and to host memory: `dx` and `dα`, the same bits on either.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_with_thresholds<T: Element>(
        &self,
        q: &Quantizer,
        x: &[T],
        alpha: &[T],
        dy: &[T],
        shape: &[usize],
        dx: &mut [T],
        dalpha: &mut [T],
    ) -> Result<()> {
        crate::api::check_thresholds(
            q,
            shape,
            &[("x", x.len()), ("dy", dy.len()), ("dx", dx.len())],
            &[("alpha", alpha.len()), ("dalpha", dalpha.len())],
        )?;
        match &self.inner {
            Inner::Cpu => q.backward_with_thresholds(x, alpha, dy, shape, dx, dalpha),
            #[cfg(lowbit_cuda)]
            Inner::Cuda(cuda) => host::rsign(cuda, q, x, alpha, shape, dx, Some((dy, dalpha))),
        }
    }
}

impl Backend {
    /// [`Quantizer::forward_with_mask`] on this backend, from and to host
    /// memory (on CUDA: copies in, runs, copies out and waits, like
    /// [`forward`](Self::forward); training code calls
    /// [`crate::cuda::Cuda::forward_with_mask`] on device buffers).
    ///
    /// ```
    /// use lowbit::{Backend, Device, Quantizer, mask_words};
    ///
    /// let backend = Backend::new(Device::Cpu)?;
    /// let q: Quantizer = "dorefa(k_bit=2)".parse()?;
    /// let x = [-0.5f32, 0.0, 0.4, 1.0, 1.5];
    /// let (mut y, mut mask) = ([0.0f32; 5], vec![0u32; mask_words(5)]);
    /// backend.forward_with_mask(&q, &x, &[5], &mut y, &mut mask, &mut [])?;
    /// assert_eq!(mask, [0b01110]); // 0 ≤ x ≤ 1
    /// # Ok::<(), lowbit::Error>(())
    /// ```
    pub fn forward_with_mask<T: Element>(
        &self,
        q: &Quantizer,
        x: &[T],
        shape: &[usize],
        y: &mut [T],
        mask: &mut [u32],
        scale: &mut [T],
    ) -> Result<()> {
        let tensors = [("x", x.len()), ("y", y.len())];
        crate::mask::check(q, T::DTYPE, shape, &tensors, mask.len(), scale.len())?;
        match &self.inner {
            Inner::Cpu => q.forward_with_mask(x, shape, y, mask, scale),
            #[cfg(lowbit_cuda)]
            Inner::Cuda(cuda) => host::forward_with_mask(cuda, q, x, shape, y, mask, scale),
        }
    }

    /// [`Quantizer::backward_from_mask`] on this backend, from and to host
    /// memory.
    pub fn backward_from_mask<T: Element>(
        &self,
        q: &Quantizer,
        mask: &[u32],
        scale: &[T],
        dy: &[T],
        shape: &[usize],
        dx: &mut [T],
    ) -> Result<()> {
        let tensors = [("dy", dy.len()), ("dx", dx.len())];
        crate::mask::check(q, T::DTYPE, shape, &tensors, mask.len(), scale.len())?;
        match &self.inner {
            Inner::Cpu => q.backward_from_mask(mask, scale, dy, shape, dx),
            #[cfg(lowbit_cuda)]
            Inner::Cuda(cuda) => host::backward_from_mask(cuda, q, mask, scale, dy, shape, dx),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.reason)
    }
}

/// Host-memory calls on the CUDA backend: copy in, run, copy out, wait.
#[cfg(lowbit_cuda)]
mod host {
    use crate::cuda::driver;
    use crate::cuda::{Cuda, Workspace};
    use crate::element::Element;
    use crate::error::Result;
    use crate::quantizer::Quantizer;

    /// `q`'s forward (`dy` is `None`) or backward pass on host memory.
    pub(super) fn run<T: Element>(
        cuda: &Cuda,
        q: &Quantizer,
        x: &[T],
        dy: Option<&[T]>,
        shape: &[usize],
        out: &mut [T],
    ) -> Result<()> {
        if x.is_empty() {
            return Ok(());
        }
        let stream = cuda.context().default_stream();
        let xd = stream.clone_htod(x).map_err(driver("cuMemcpyHtoDAsync"))?;
        // SAFETY: every element is written by the kernel before the copy back.
        let mut od = unsafe { stream.alloc::<T>(x.len()) }.map_err(driver("cuMemAllocAsync"))?;
        let mut ws = Workspace::new();
        match dy {
            None => cuda.forward(
                q,
                &stream,
                &xd.as_view(),
                shape,
                &mut od.as_view_mut(),
                &mut ws,
            )?,
            Some(dy) => {
                let dyd = stream.clone_htod(dy).map_err(driver("cuMemcpyHtoDAsync"))?;
                let dy = dyd.as_view();
                cuda.backward(
                    q,
                    &stream,
                    &xd.as_view(),
                    &dy,
                    shape,
                    &mut od.as_view_mut(),
                    &mut ws,
                )?
            }
        }
        stream
            .memcpy_dtoh(&od, out)
            .map_err(driver("cuMemcpyDtoHAsync"))?;
        stream.synchronize().map_err(driver("cuStreamSynchronize"))
    }

    /// `rsign`'s forward (`grad` is `None`) or backward pass (`grad` holds
    /// `dy` and `dα`) on host memory.
    pub(super) fn rsign<T: Element>(
        cuda: &Cuda,
        q: &Quantizer,
        x: &[T],
        alpha: &[T],
        shape: &[usize],
        out: &mut [T],
        grad: Option<(&[T], &mut [T])>,
    ) -> Result<()> {
        if x.is_empty() {
            // No rows: dα is an empty sum, which the kernels would also give.
            if let Some((_, dalpha)) = grad {
                dalpha.fill(T::from_f32(crate::scalar::rsign_dalpha(0.0)));
            }
            return Ok(());
        }
        let stream = cuda.context().default_stream();
        let xd = stream.clone_htod(x).map_err(driver("cuMemcpyHtoDAsync"))?;
        let ad = stream
            .clone_htod(alpha)
            .map_err(driver("cuMemcpyHtoDAsync"))?;
        // SAFETY: every element is written by the kernels before the copy back.
        let mut od = unsafe { stream.alloc::<T>(x.len()) }.map_err(driver("cuMemAllocAsync"))?;
        match grad {
            None => {
                cuda.forward_with_thresholds(
                    q,
                    &stream,
                    &xd.as_view(),
                    &ad.as_view(),
                    shape,
                    &mut od.as_view_mut(),
                )?;
                stream
                    .memcpy_dtoh(&od, out)
                    .map_err(driver("cuMemcpyDtoHAsync"))?;
            }
            Some((dy, dalpha)) => {
                let dyd = stream.clone_htod(dy).map_err(driver("cuMemcpyHtoDAsync"))?;
                // SAFETY: as `od`.
                let mut dad =
                    unsafe { stream.alloc::<T>(alpha.len()) }.map_err(driver("cuMemAllocAsync"))?;
                let mut ws = Workspace::new();
                cuda.backward_with_thresholds(
                    q,
                    &stream,
                    &xd.as_view(),
                    &ad.as_view(),
                    &dyd.as_view(),
                    shape,
                    &mut od.as_view_mut(),
                    &mut dad.as_view_mut(),
                    &mut ws,
                )?;
                stream
                    .memcpy_dtoh(&od, out)
                    .map_err(driver("cuMemcpyDtoHAsync"))?;
                stream
                    .memcpy_dtoh(&dad, dalpha)
                    .map_err(driver("cuMemcpyDtoHAsync"))?;
            }
        }
        stream.synchronize().map_err(driver("cuStreamSynchronize"))
    }

    /// [`Cuda::forward_with_mask`] on host memory; the buffers are checked.
    pub(super) fn forward_with_mask<T: Element>(
        cuda: &Cuda,
        q: &Quantizer,
        x: &[T],
        shape: &[usize],
        y: &mut [T],
        mask: &mut [u32],
        scale: &mut [T],
    ) -> Result<()> {
        if x.is_empty() {
            // Shape [0, c]: no elements, and c channels whose mean is 0.
            scale.fill(T::from_f32(0.0));
            return Ok(());
        }
        let stream = cuda.context().default_stream();
        let xd = stream.clone_htod(x).map_err(driver("cuMemcpyHtoDAsync"))?;
        // SAFETY: the kernels write every element before the copies back.
        let mut yd = unsafe { stream.alloc::<T>(y.len()) }.map_err(driver("cuMemAllocAsync"))?;
        let mut md =
            unsafe { stream.alloc::<u32>(mask.len()) }.map_err(driver("cuMemAllocAsync"))?;
        let mut sd = match scale.len() {
            0 => None,
            n => Some(unsafe { stream.alloc::<T>(n) }.map_err(driver("cuMemAllocAsync"))?),
        };
        cuda.forward_with_mask(
            q,
            &stream,
            &xd.as_view(),
            shape,
            &mut yd.as_view_mut(),
            &mut md.as_view_mut(),
            sd.as_mut().map(|s| s.as_view_mut()).as_mut(),
            &mut Workspace::new(),
        )?;
        stream
            .memcpy_dtoh(&yd, y)
            .map_err(driver("cuMemcpyDtoHAsync"))?;
        stream
            .memcpy_dtoh(&md, mask)
            .map_err(driver("cuMemcpyDtoHAsync"))?;
        if let Some(sd) = &sd {
            stream
                .memcpy_dtoh(sd, scale)
                .map_err(driver("cuMemcpyDtoHAsync"))?;
        }
        stream.synchronize().map_err(driver("cuStreamSynchronize"))
    }

    /// [`Cuda::backward_from_mask`] on host memory; the buffers are checked.
    pub(super) fn backward_from_mask<T: Element>(
        cuda: &Cuda,
        q: &Quantizer,
        mask: &[u32],
        scale: &[T],
        dy: &[T],
        shape: &[usize],
        dx: &mut [T],
    ) -> Result<()> {
        if dy.is_empty() {
            return Ok(());
        }
        let stream = cuda.context().default_stream();
        let md = stream
            .clone_htod(mask)
            .map_err(driver("cuMemcpyHtoDAsync"))?;
        let sd = match scale.len() {
            0 => None,
            _ => Some(
                stream
                    .clone_htod(scale)
                    .map_err(driver("cuMemcpyHtoDAsync"))?,
            ),
        };
        let dyd = stream.clone_htod(dy).map_err(driver("cuMemcpyHtoDAsync"))?;
        // SAFETY: the kernel writes every element before the copy back.
        let mut dxd = unsafe { stream.alloc::<T>(dx.len()) }.map_err(driver("cuMemAllocAsync"))?;
        cuda.backward_from_mask(
            q,
            &stream,
            &md.as_view(),
            sd.as_ref().map(|s| s.as_view()).as_ref(),
            &dyd.as_view(),
            shape,
            &mut dxd.as_view_mut(),
        )?;
        stream
            .memcpy_dtoh(&dxd, dx)
            .map_err(driver("cuMemcpyDtoHAsync"))?;
        stream.synchronize().map_err(driver("cuStreamSynchronize"))
    }
}
