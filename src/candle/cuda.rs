//! The ops on candle's CUDA tensors: lowbit's kernels on the tensor
//! device's own stream, reading the inputs where they lie and writing an
//! output allocated through candle.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::{CudaDType, CudaStorage};
use candle_core::{DType, Layout, Shape};

use super::{Op, Pass, contiguous, same_dtype};

impl Op {
    /// The op on CUDA storages: the dtype dispatched once, as on the CPU.
    pub(super) fn cuda(
        &self,
        args: &[(&CudaStorage, &Layout)],
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dtype = same_dtype(self, args.iter().map(|(s, _)| s.dtype()))?;
        let layouts: Vec<&Layout> = args.iter().map(|(_, l)| *l).collect();
        let shape = self.out_shape(&layouts);
        let storage = match dtype {
            DType::F32 => self.cuda_typed::<f32>(args, shape.elem_count())?,
            DType::F16 => self.cuda_typed::<half::f16>(args, shape.elem_count())?,
            DType::BF16 => self.cuda_typed::<half::bf16>(args, shape.elem_count())?,
            other => return Err(self.error(format!("no {} kernels", other.as_str()))),
        };
        Ok((storage, shape))
    }

    #[cfg(lowbit_cuda)]
    fn cuda_typed<T>(
        &self,
        args: &[(&CudaStorage, &Layout)],
        out_len: usize,
    ) -> candle_core::Result<CudaStorage>
    where
        T: crate::Element + CudaDType + cudarc::driver::DeviceRepr,
    {
        use std::sync::PoisonError;

        let Some(((first, x_layout), _)) = args.split_first() else {
            return Err(self.error("no inputs"));
        };
        let device = &first.device;
        let stream = device.cuda_stream();
        let mut views = Vec::with_capacity(args.len());
        for (storage, layout) in args {
            let (start, end) = contiguous(self, layout)?;
            views.push(storage.as_cuda_slice::<T>()?.slice(start..end));
        }
        let (cuda, ws) = crate::ffi::for_stream(&stream).map_err(|e| self.error(e))?;
        let mut ws = ws.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: every element is written by the call below before the
        // tensor is read (in stream order), or the tensor is dropped.
        let mut out = unsafe { device.alloc::<T>(out_len)? };
        let (q, shape) = (&self.q, x_layout.dims());
        let done = match (self.pass, views.as_slice()) {
            (Pass::Forward, [x]) => {
                cuda.forward(q, &stream, x, shape, &mut out.slice_mut(..), &mut ws)
            }
            (Pass::Backward, [x, dy]) => {
                cuda.backward(q, &stream, x, dy, shape, &mut out.slice_mut(..), &mut ws)
            }
            (Pass::ForwardWithThresholds, [x, alpha]) => {
                cuda.forward_with_thresholds(q, &stream, x, alpha, shape, &mut out.slice_mut(..))
            }
            (Pass::BackwardWithThresholds, [x, alpha, dy]) => {
                let (mut dx, mut dalpha) = out.split_at_mut(x.len());
                cuda.backward_with_thresholds(
                    q,
                    &stream,
                    x,
                    alpha,
                    dy,
                    shape,
                    &mut dx,
                    &mut dalpha,
                    &mut ws,
                )
            }
            _ => return Err(self.error(format!("{} inputs", args.len()))),
        };
        done.map_err(|e| self.error(e))?;
        Ok(CudaStorage::wrap_cuda_slice(out, device.clone()))
    }

    #[cfg(not(lowbit_cuda))]
    fn cuda_typed<T>(
        &self,
        _args: &[(&CudaStorage, &Layout)],
        _out_len: usize,
    ) -> candle_core::Result<CudaStorage> {
        Err(self
            .error("lowbit was built without its CUDA kernels (no CUDA compiler at build time)"))
    }
}
