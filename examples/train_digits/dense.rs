//! The matrix products of a dense layer with quantized weights, and their
//! gradients:
//!
//! ```text
//! z  = x · q(W)
//! dW = dq/dW ⊙ (xᵀ · dz)      (lowbit's backward)
//! dx = dz · q(W)ᵀ
//! ```
//!
//! On the CPU with `matrixmultiply`; on the GPU the way a CUDA training stack
//! does it: lowbit quantizes the weights on the device, cuBLAS (through
//! cudarc) multiplies, both on one stream, with nothing copied or
//! synchronized between them. The layer's input comes from, and its outputs
//! go back to, host memory, where the rest of this small network lives.

use lowbit::{Backend, Quantizer};

use crate::mlp::BoxError;

/// Where the products run.
pub enum Products {
    /// `matrixmultiply` on the CPU; the quantizers on the chosen backend.
    Cpu,
    /// lowbit's device API and cuBLAS on the CUDA backend's device.
    #[cfg(lowbit_cuda)]
    Cublas(gpu::Cublas),
}

/// What a layer's forward keeps for its backward.
pub enum Saved {
    Cpu {
        x: Vec<f32>,
        wq: Vec<f32>,
    },
    #[cfg(lowbit_cuda)]
    Cuda(gpu::Saved),
}

impl Products {
    /// cuBLAS when `backend` is CUDA and libcublas loads, else the CPU; and
    /// a line that says which and why.
    pub fn for_backend(backend: &Backend) -> (Self, String) {
        #[cfg(lowbit_cuda)]
        if let Some(cuda) = backend.as_cuda() {
            return match gpu::Cublas::new(cuda.clone()) {
                Ok(blas) => (Products::Cublas(blas), "cuBLAS on the CUDA device".into()),
                Err(e) => (Products::Cpu, format!("the CPU (matrixmultiply): {e}")),
            };
        }
        let _ = backend;
        (Products::Cpu, "the CPU (matrixmultiply)".into())
    }

    /// `z = x · q(W)` for `x` of `rows × k` and `W` of `k × n` (`q` is
    /// `None` for real weights).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        q: Option<&Quantizer>,
        backend: &Backend,
        x: &[f32],
        w: &[f32],
        rows: usize,
        k: usize,
        n: usize,
    ) -> Result<(Vec<f32>, Saved), BoxError> {
        match self {
            Products::Cpu => {
                let mut wq = vec![0.0; k * n];
                match q {
                    Some(q) => backend.forward(q, w, &[k, n], &mut wq)?,
                    None => wq.copy_from_slice(w),
                }
                let mut z = vec![0.0; rows * n];
                matmul(rows, k, n, x, false, &wq, false, &mut z);
                Ok((z, Saved::Cpu { x: x.to_vec(), wq }))
            }
            #[cfg(lowbit_cuda)]
            Products::Cublas(blas) => blas.forward(q, x, w, rows, k, n),
        }
    }

    /// `(dW, dx)` from `dz` (`rows × n`) and what the forward saved.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        q: Option<&Quantizer>,
        backend: &Backend,
        saved: &Saved,
        w: &[f32],
        dz: &[f32],
        rows: usize,
        k: usize,
        n: usize,
    ) -> Result<(Vec<f32>, Vec<f32>), BoxError> {
        match (self, saved) {
            (Products::Cpu, Saved::Cpu { x, wq }) => {
                let mut dwq = vec![0.0; k * n];
                matmul(k, rows, n, x, true, dz, false, &mut dwq);
                let dw = match q {
                    Some(q) => {
                        let mut dw = vec![0.0; k * n];
                        backend.backward(q, w, &dwq, &[k, n], &mut dw)?;
                        dw
                    }
                    None => dwq,
                };
                let mut dx = vec![0.0; rows * k];
                matmul(rows, n, k, dz, false, wq, true, &mut dx);
                Ok((dw, dx))
            }
            #[cfg(lowbit_cuda)]
            (Products::Cublas(blas), Saved::Cuda(saved)) => blas.backward(q, saved, dz, rows, k, n),
            #[cfg(lowbit_cuda)]
            _ => Err("backward on other products than the forward's".into()),
        }
    }
}

/// `c[m×n] = a[m×k] · b[k×n]`, row-major, each operand optionally
/// transposed (read through strides, never copied).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    a_t: bool,
    b: &[f32],
    b_t: bool,
    c: &mut [f32],
) {
    let (rsa, csa) = if a_t {
        (1, m as isize)
    } else {
        (k as isize, 1)
    };
    let (rsb, csb) = if b_t {
        (1, k as isize)
    } else {
        (n as isize, 1)
    };
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    // SAFETY: the assert above keeps every index the strides reach in bounds.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// A BLAS gemm call (column-major, `C = op(A) · op(B)`, `C` of `m × n`).
// Used by the cuBLAS path and tested on the CPU: dead in a CPU-only example.
#[cfg_attr(not(lowbit_cuda), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColumnMajor {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
}

/// The BLAS call that computes [`matmul`]'s row-major product. A row-major
/// matrix is its transpose in column-major order, so it computes
/// `cᵀ = op(b)ᵀ · op(a)ᵀ` with `b`'s buffer as BLAS's `A` and `a`'s as `B`.
#[cfg_attr(not(lowbit_cuda), allow(dead_code))]
pub fn column_major(m: usize, k: usize, n: usize, a_t: bool, b_t: bool) -> ColumnMajor {
    ColumnMajor {
        trans_a: b_t,
        trans_b: a_t,
        m: n,
        n: m,
        k,
        lda: if b_t { k } else { n },
        ldb: if a_t { m } else { k },
        ldc: n,
    }
}

#[cfg(lowbit_cuda)]
pub mod gpu {
    use std::sync::{Arc, Mutex};

    use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, sys::cublasOperation_t};
    use cudarc::driver::{CudaSlice, CudaStream};
    use lowbit::Quantizer;
    use lowbit::cuda::{Cuda, Workspace};

    use super::column_major;
    use crate::mlp::BoxError;

    /// cuBLAS and lowbit's kernels on one stream of lowbit's context.
    pub struct Cublas {
        cuda: Arc<Cuda>,
        stream: Arc<CudaStream>,
        blas: CudaBlas,
        // Reduction scratch for the quantizers that need it (TWN,
        // magnitude_aware_sign), kept across calls as the API intends.
        workspace: Mutex<Workspace>,
    }

    /// The device buffers the backward reads.
    pub struct Saved {
        x: CudaSlice<f32>,
        w: CudaSlice<f32>,
        /// `None` for real weights: `w` is then `q(W)`.
        wq: Option<CudaSlice<f32>>,
    }

    impl Cublas {
        pub fn new(cuda: Arc<Cuda>) -> Result<Self, BoxError> {
            // cudarc panics where libcublas is missing; ask first.
            // SAFETY: only tries to open the library.
            if !unsafe { cudarc::cublas::sys::is_culib_present() } {
                return Err("libcublas not found on the library path".into());
            }
            let stream = cuda.context().new_stream()?;
            let blas = CudaBlas::new(stream.clone())?;
            Ok(Cublas {
                cuda,
                stream,
                blas,
                workspace: Mutex::new(Workspace::new()),
            })
        }

        pub fn forward(
            &self,
            q: Option<&Quantizer>,
            x: &[f32],
            w: &[f32],
            rows: usize,
            k: usize,
            n: usize,
        ) -> Result<(Vec<f32>, super::Saved), BoxError> {
            let s = &self.stream;
            let xd = s.clone_htod(x)?;
            let wd = s.clone_htod(w)?;
            let wq = match q {
                Some(q) => {
                    // SAFETY: the forward writes every element.
                    let mut wq = unsafe { s.alloc::<f32>(k * n) }?;
                    let mut ws = self.workspace.lock().map_err(|_| "workspace poisoned")?;
                    self.cuda.forward(
                        q,
                        s,
                        &wd.as_view(),
                        &[k, n],
                        &mut wq.as_view_mut(),
                        &mut ws,
                    )?;
                    Some(wq)
                }
                None => None,
            };
            // SAFETY: the product writes every element (β = 0).
            let mut zd = unsafe { s.alloc::<f32>(rows * n) }?;
            self.matmul(
                rows,
                k,
                n,
                &xd,
                false,
                wq.as_ref().unwrap_or(&wd),
                false,
                &mut zd,
            )?;
            let z = s.clone_dtoh(&zd)?;
            s.synchronize()?;
            let saved = Saved { x: xd, w: wd, wq };
            Ok((z, super::Saved::Cuda(saved)))
        }

        pub fn backward(
            &self,
            q: Option<&Quantizer>,
            saved: &Saved,
            dz: &[f32],
            rows: usize,
            k: usize,
            n: usize,
        ) -> Result<(Vec<f32>, Vec<f32>), BoxError> {
            let s = &self.stream;
            let dzd = s.clone_htod(dz)?;
            // SAFETY: each product and the backward write every element.
            let mut dwq = unsafe { s.alloc::<f32>(k * n) }?;
            self.matmul(k, rows, n, &saved.x, true, &dzd, false, &mut dwq)?;
            let dw = match q {
                Some(q) => {
                    let mut dw = unsafe { s.alloc::<f32>(k * n) }?;
                    let mut ws = self.workspace.lock().map_err(|_| "workspace poisoned")?;
                    self.cuda.backward(
                        q,
                        s,
                        &saved.w.as_view(),
                        &dwq.as_view(),
                        &[k, n],
                        &mut dw.as_view_mut(),
                        &mut ws,
                    )?;
                    dw
                }
                None => dwq,
            };
            let wq = saved.wq.as_ref().unwrap_or(&saved.w);
            let mut dxd = unsafe { s.alloc::<f32>(rows * k) }?;
            self.matmul(rows, n, k, &dzd, false, wq, true, &mut dxd)?;
            let (dw, dx) = (s.clone_dtoh(&dw)?, s.clone_dtoh(&dxd)?);
            s.synchronize()?;
            Ok((dw, dx))
        }

        /// [`super::matmul`] on device buffers, on the stream.
        #[allow(clippy::too_many_arguments)]
        pub fn matmul(
            &self,
            m: usize,
            k: usize,
            n: usize,
            a: &CudaSlice<f32>,
            a_t: bool,
            b: &CudaSlice<f32>,
            b_t: bool,
            c: &mut CudaSlice<f32>,
        ) -> Result<(), BoxError> {
            if a.len() < m * k || b.len() < k * n || c.len() < m * n {
                return Err(format!("matmul {m}×{k}·{k}×{n}: buffers too short").into());
            }
            let g = column_major(m, k, n, a_t, b_t);
            let op = |t| match t {
                true => cublasOperation_t::CUBLAS_OP_T,
                false => cublasOperation_t::CUBLAS_OP_N,
            };
            let int = |v: usize| i32::try_from(v).map_err(|_| "matrix too large for cuBLAS");
            let cfg = GemmConfig {
                transa: op(g.trans_a),
                transb: op(g.trans_b),
                m: int(g.m)?,
                n: int(g.n)?,
                k: int(g.k)?,
                alpha: 1.0,
                lda: int(g.lda)?,
                ldb: int(g.ldb)?,
                beta: 0.0,
                ldc: int(g.ldc)?,
            };
            // SAFETY: the lengths are checked above against the extents the
            // leading dimensions give.
            unsafe { self.blas.gemm(cfg, b, a, c) }?;
            Ok(())
        }

        /// The stream the products run on (tests/training.rs uploads on it).
        #[allow(dead_code)]
        pub fn stream(&self) -> &Arc<CudaStream> {
            &self.stream
        }
    }
}
