//! The network's convolutions ("valid", stride 1) as one matrix product
//! over the input's patches (im2col) on the CPU. candle's CPU `conv2d`
//! builds its patches element by element, and its gradient for the input is
//! a direct `conv_transpose2d` loop: together they took two thirds of a
//! training step (perf, 40 steps of batch 64). Here the forward and both
//! gradients are each one gemm, and the patches are copied row by row.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Result, Shape, Tensor, bail,
};

/// `x` (N, C, H, W) convolved with kernel `k` (O, C, KH, KW), as candle's
/// `x.conv2d(k, 0, 1, 1, 1)`; candle's own on devices other than the CPU.
pub fn conv2d(x: &Tensor, k: &Tensor) -> Result<Tensor> {
    if !matches!((x.device(), x.dtype()), (Device::Cpu, DType::F32)) {
        return x.conv2d(k, 0, 1, 1, 1);
    }
    let (n, c, h, w) = x.dims4()?;
    let (o, kc, kh, kw) = k.dims4()?;
    if kc != c || kh > h || kw > w {
        bail!("conv2d: kernel {:?} on input {:?}", k.dims(), x.dims())
    }
    let (ho, wo) = (h - kh + 1, w - kw + 1);
    // Channels last, so that a patch's rows are contiguous runs.
    let x = x.permute((0, 2, 3, 1))?.contiguous()?;
    let patches = x.apply_op1(Im2Col { kh, kw })?;
    let k = k.permute((0, 2, 3, 1))?.reshape((o, kh * kw * c))?;
    patches
        .matmul(&k.t()?)?
        .reshape((n, ho, wo, o))?
        .permute((0, 3, 1, 2))?
        .contiguous()
}

/// (N, H, W, C) to one row per output position: the patch's KH runs of
/// KW·C elements, in (row, column, channel) order.
struct Im2Col {
    kh: usize,
    kw: usize,
}

/// The gradient of [`Im2Col`]: each row's runs added back where they came
/// from. An op on `(x, d_patches)`; `x` gives only the shape.
struct Col2Im {
    kh: usize,
    kw: usize,
}

/// Where each run of the patches starts in (N, H, W, C) `x`, in the
/// patches' order, and the runs' length.
fn runs(x: &Layout, kh: usize, kw: usize) -> Result<(impl Iterator<Item = usize>, usize)> {
    let (n, h, w, c) = x.shape().dims4()?;
    let (ho, wo) = (h + 1 - kh, w + 1 - kw);
    let starts = (0..n).flat_map(move |b| {
        (0..ho).flat_map(move |i| {
            (0..wo).flat_map(move |j| (0..kh).map(move |dy| ((b * h + i + dy) * w + j) * c))
        })
    });
    Ok((starts, kw * c))
}

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((start, end))) => Ok(&v[start..end]),
        _ => bail!("im2col takes contiguous f32 tensors"),
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l)?;
        let (starts, run) = runs(l, self.kh, self.kw)?;
        let mut patches = Vec::new();
        for at in starts {
            patches.extend_from_slice(&x[at..at + run]);
        }
        let width = self.kh * run;
        let shape = Shape::from((patches.len() / width, width));
        Ok((CpuStorage::F32(patches), shape))
    }

    fn bwd(&self, x: &Tensor, _: &Tensor, d_patches: &Tensor) -> Result<Option<Tensor>> {
        let (kh, kw) = (self.kh, self.kw);
        let dx = x.apply_op2_no_bwd(&d_patches.contiguous()?, &Col2Im { kh, kw })?;
        Ok(Some(dx))
    }
}

impl CustomOp2 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        xl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d_patches = contiguous_f32(ds, dl)?;
        let (starts, run) = runs(xl, self.kh, self.kw)?;
        let mut dx = vec![0f32; xl.shape().elem_count()];
        for (at, row) in starts.zip(d_patches.chunks_exact(run)) {
            for (d, g) in dx[at..at + run].iter_mut().zip(row) {
                *d += g;
            }
        }
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}
