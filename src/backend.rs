//! Choosing where the work runs: the CPU, or CUDA when a device exists and
//! the kernels load. The same calls work on either.

use std::fmt;
use std::str::FromStr;
#[cfg(lowbit_cuda)]
use std::sync::Arc;

use crate::call::{Call, Host};
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
        self.run(q, shape, Host::forward(x, y))
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
        self.run(q, shape, Host::backward(x, dy, dx))
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
        self.run(q, shape, Host::forward_with_thresholds(x, alpha, y))
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
        self.run(
            q,
            shape,
            Host::backward_with_thresholds(x, alpha, dy, dx, dalpha),
        )
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
        self.run(q, shape, Host::forward_with_mask(x, y, mask, scale))
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
        self.run(q, shape, Host::backward_from_mask(mask, scale, dy, dx))
    }

    /// Every call on host memory: checked once, then run on the CPU or
    /// staged through the device.
    fn run<T: Element>(&self, q: &Quantizer, shape: &[usize], t: Host<'_, T>) -> Result<()> {
        let call = Call::on_host(q, shape, &t)?;
        match &self.inner {
            Inner::Cpu => crate::cpu::run(&call, t),
            #[cfg(lowbit_cuda)]
            Inner::Cuda(cuda) => cuda.run_staged(&call, t),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.reason)
    }
}
