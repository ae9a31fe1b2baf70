//! Calls on host memory with a CUDA backend: copy in, run, copy out, wait.
//! For tests and tools ([`crate::Backend`], [`crate::bits`]'s host calls,
//! [`crate::bits::FlipRatio`]); training code keeps its tensors on the
//! device and makes the calls on device buffers.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DeviceRepr};

use super::{Cuda, Workspace, driver};
use crate::call::{Buffers, Call, Host, Pass};
use crate::element::Element;
use crate::error::Result;

/// Device copies of host buffers on the context's default stream. A buffer
/// with no elements has no copy (nothing to allocate) and address 0.
pub(crate) struct Staging {
    stream: Arc<CudaStream>,
}

/// A staged buffer.
pub(crate) type Staged<E> = Option<CudaSlice<E>>;

impl Staging {
    pub(crate) fn new(cuda: &Cuda) -> Self {
        Staging {
            stream: cuda.context().default_stream(),
        }
    }

    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// A device copy of `host`.
    pub(crate) fn upload<E: DeviceRepr>(&self, host: &[E]) -> Result<Staged<E>> {
        if host.is_empty() {
            return Ok(None);
        }
        let copy = self.stream.clone_htod(host);
        copy.map(Some).map_err(driver("cuMemcpyHtoDAsync"))
    }

    /// Room on the device for an output of `len` elements.
    ///
    /// # Safety
    /// The work staged writes every element before [`download`](Self::download)
    /// reads it back.
    pub(crate) unsafe fn output<E: DeviceRepr>(&self, len: usize) -> Result<Staged<E>> {
        if len == 0 {
            return Ok(None);
        }
        // SAFETY: the caller's contract.
        let room = unsafe { self.stream.alloc::<E>(len) };
        room.map(Some).map_err(driver("cuMemAllocAsync"))
    }

    /// A staged buffer's device address. The work is ordered on the one
    /// stream that staged it, so the address outlives the guard.
    pub(crate) fn address<E>(&self, staged: &Staged<E>) -> u64 {
        staged.as_ref().map_or(0, |s| s.device_ptr(&self.stream).0)
    }

    /// Copies an output back into `host`, which it fits.
    pub(crate) fn download<E: DeviceRepr>(&self, staged: &Staged<E>, host: &mut [E]) -> Result<()> {
        match staged {
            Some(s) => self
                .stream
                .memcpy_dtoh(s, host)
                .map_err(driver("cuMemcpyDtoHAsync")),
            None => Ok(()),
        }
    }

    /// Waits for everything staged: the host buffers hold the results.
    pub(crate) fn finish(self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(driver("cuStreamSynchronize"))
    }
}

impl Cuda {
    /// A checked call on host buffers, staged through the device.
    pub(crate) fn run_staged<T: Element>(&self, call: &Call, t: Host<'_, T>) -> Result<()> {
        if call.len == 0 {
            call.fill_empty(t.scale_out, t.dalpha);
            return Ok(());
        }
        let s = Staging::new(self);
        let (x, alpha, dy) = (s.upload(t.x)?, s.upload(t.alpha)?, s.upload(t.dy)?);
        let (mask_in, scale_in) = (s.upload(t.mask)?, s.upload(t.scale)?);
        // SAFETY: a call's plan writes every element of its outputs.
        let (out, dalpha, mask_out, scale_out) = unsafe {
            (
                s.output::<T>(t.out.len())?,
                s.output::<T>(t.dalpha.len())?,
                s.output::<u32>(t.mask_out.len())?,
                s.output::<T>(t.scale_out.len())?,
            )
        };
        // The mask and the scale are inputs or outputs, by pass.
        let saves = call.pass == Pass::ForwardWithMask;
        let (mask, scale) = match saves {
            true => (s.address(&mask_out), s.address(&scale_out)),
            false => (s.address(&mask_in), s.address(&scale_in)),
        };
        let at = Buffers {
            x: s.address(&x),
            alpha: s.address(&alpha),
            dy: s.address(&dy),
            mask,
            scale,
            out: s.address(&out),
            dalpha: s.address(&dalpha),
        };
        self.enqueue(call, s.stream(), &at, &mut Workspace::new())?;
        s.download(&out, t.out)?;
        s.download(&dalpha, t.dalpha)?;
        s.download(&mask_out, t.mask_out)?;
        s.download(&scale_out, t.scale_out)?;
        s.finish()
    }
}
