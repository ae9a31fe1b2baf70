//! Bit packing and the flip ratio on every backend: the CPU always, CUDA
//! where a device is present, each compared with the CPU definition
//! (`lowbit::bits`). Where CUDA cannot run, its runs are reported as
//! skipped, with the reason.
//!
//! A custom harness (`harness = false`), as in `backends.rs`, so that a skip
//! is visible; it ends with the `N passed, N failed, N skipped` line.
//! `LOWBIT_TEST_ELEMENTS` sets the large tensors' length (default 2^20 + 3).

mod harness;

use lowbit::bits::{self, FlipRatio};
use lowbit::{Backend, Device, Element, Error, bf16, f16};

/// Values over [-2, 2) with zeros of both signs, infinities and NaNs mixed in.
fn random<T: Element>(n: usize, seed: u32) -> Vec<T> {
    const EDGES: [f32; 6] = [
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
    ];
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let v = if s.is_multiple_of(11) {
                EDGES[(s >> 8) as usize % EDGES.len()]
            } else {
                (s >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
            };
            T::from_f32(v)
        })
        .collect()
}

/// Shapes around word boundaries, and two large ones: many rows of a
/// padded width, and a few very long rows.
fn shapes() -> Vec<[usize; 2]> {
    let n = harness::elements();
    vec![
        [1, 1],
        [3, 31],
        [5, 32],
        [7, 33],
        [2, 65],
        [1000, 64],
        [n / 100, 100],
        [3, n / 3],
    ]
}

/// The first index where the values differ: in their bits, or NaN against
/// a number. NaN payloads are not part of the contract: converting a NaN
/// to f16 or bf16, a GPU gives its canonical NaN (0x7fff).
fn same_bits<T: Element>(got: &[T], want: &[T]) -> Option<usize> {
    got.iter().zip(want).position(|(g, w)| {
        let (g, w) = (g.to_f32(), w.to_f32());
        g.to_bits() != w.to_bits() && !(g.is_nan() && w.is_nan())
    })
}

fn pack_agrees<T: Element>(b: &Backend) -> Result<(), String> {
    for shape in shapes() {
        let x = random::<T>(shape[0] * shape[1], shape[1] as u32);
        let want = bits::pack_vec(&x, &shape).map_err(|e| e.to_string())?;
        // A sentinel, so that words the backend leaves unwritten show up.
        let mut got = vec![0xDEAD_BEEF; want.len()];
        b.pack(&x, &shape, &mut got).map_err(|e| e.to_string())?;
        if let Some(i) = got.iter().zip(&want).position(|(g, w)| g != w) {
            return Err(format!(
                "{:?} {shape:?}: word {i} is {:#x}, the CPU gives {:#x}",
                T::DTYPE,
                got[i],
                want[i]
            ));
        }
    }
    Ok(())
}

fn packing_agrees_with_the_cpu(b: &Backend) -> Result<(), String> {
    pack_agrees::<f32>(b)?;
    pack_agrees::<f16>(b)?;
    pack_agrees::<bf16>(b)
}

fn unpack_agrees<T: Element>(b: &Backend) -> Result<(), String> {
    for shape in shapes() {
        let packed = bits::pack_vec(&random::<f32>(shape[0] * shape[1], 5), &shape).unwrap();
        let scale: Vec<f32> = random(shape[1], 6);
        for scale in [None, Some(&scale[..])] {
            let want: Vec<T> = bits::unpack_vec(&packed, &shape, scale).unwrap();
            let mut got = vec![T::from_f32(7.0); want.len()];
            b.unpack(&packed, &shape, scale, &mut got)
                .map_err(|e| e.to_string())?;
            if let Some(i) = same_bits(&got, &want) {
                return Err(format!(
                    "{:?} {shape:?} scaled={}: y[{i}] = {:?}, the CPU gives {:?}",
                    T::DTYPE,
                    scale.is_some(),
                    got[i],
                    want[i]
                ));
            }
        }
    }
    Ok(())
}

fn unpacking_agrees_with_the_cpu(b: &Backend) -> Result<(), String> {
    unpack_agrees::<f32>(b)?;
    unpack_agrees::<f16>(b)?;
    unpack_agrees::<bf16>(b)
}

fn flip_ratio_agrees<T: Element>(b: &Backend, shape: [usize; 2]) -> Result<(), String> {
    let cpu = Backend::new(Device::Cpu).unwrap();
    let mut got = FlipRatio::new(b, &shape).map_err(|e| e.to_string())?;
    let mut want = FlipRatio::new(&cpu, &shape).unwrap();
    let n = shape[0] * shape[1];
    let mut values = random::<T>(n, 1);
    for step in 0..6u32 {
        if step == 4 {
            got.reset();
            want.reset();
        }
        // Flip the signs of a varying share of the values.
        let noise = random::<f32>(n, step + 10);
        for (v, r) in values.iter_mut().zip(noise) {
            if r > 2.0 - step as f32 / 3.0 {
                *v = T::from_f32(-v.to_f32());
            }
        }
        let g = got.update(&values).map_err(|e| e.to_string())?;
        let w = want.update(&values).unwrap();
        if g != w || got.result().to_bits() != want.result().to_bits() {
            return Err(format!(
                "{:?} {shape:?} update {step}: {g:?}, the CPU gives {w:?}",
                T::DTYPE
            ));
        }
        if step > 0 && n >= 1000 && g.flipped == 0 {
            return Err(format!("update {step} flipped nothing: a weak test"));
        }
    }
    Ok(())
}

fn flip_ratio_agrees_with_the_cpu(b: &Backend) -> Result<(), String> {
    for shape in shapes() {
        flip_ratio_agrees::<f32>(b, shape)?;
    }
    flip_ratio_agrees::<f16>(b, [7, 33])?;
    flip_ratio_agrees::<bf16>(b, [3, harness::elements() / 3])
}

fn empty_tensors_work(b: &Backend) -> Result<(), String> {
    let e = |e: Error| e.to_string();
    for shape in [&[0][..], &[0, 5], &[5, 0]] {
        b.pack::<f16>(&[], shape, &mut []).map_err(e)?;
        b.unpack::<bf16>(&[], shape, None, &mut []).map_err(e)?;
        let mut m = FlipRatio::new(b, shape).map_err(e)?;
        for _ in 0..2 {
            let f = m.update::<f32>(&[]).map_err(e)?;
            if (f.flipped, f.ratio, f.running) != (0, 0.0, 0.0) {
                return Err(format!("{shape:?}: {f:?}"));
            }
        }
    }
    Ok(())
}

fn bad_input_is_an_error_and_writes_nothing(b: &Backend) -> Result<(), String> {
    let mut packed = [7u32; 3];
    match b.pack(&[1.0f32; 6], &[2, 3], &mut packed) {
        Err(Error::PackedMismatch { expected: 2, .. }) if packed == [7; 3] => {}
        other => return Err(format!("pack: {other:?}, packed {packed:?}")),
    }
    let mut y = [9.0f32; 6];
    match b.unpack(&[0, 0], &[2, 3], Some(&[1.0; 4]), &mut y) {
        Err(Error::ScaleMismatch { len: 4, .. }) if y == [9.0; 6] => {}
        other => return Err(format!("unpack: {other:?}, y {y:?}")),
    }
    let mut m = FlipRatio::new(b, &[4]).map_err(|e| e.to_string())?;
    m.update(&[1.0f32; 4]).map_err(|e| e.to_string())?;
    match m.update(&[1.0f32; 3]) {
        Err(Error::ShapeMismatch { .. }) => {}
        other => return Err(format!("flip ratio: {other:?}")),
    }
    let f = m
        .update(&[-1.0f32, 1.0, 1.0, 1.0])
        .map_err(|e| e.to_string())?;
    if (f.flipped, f.running) != (1, 0.25) {
        return Err(format!("after an error: {f:?}"));
    }
    Ok(())
}

/// Views offset by one element (so unaligned), on a stream of the caller's,
/// and the device-resident flip ratio.
#[cfg(lowbit_cuda)]
fn device_views_on_the_callers_stream(b: &Backend) -> Result<(), String> {
    use lowbit::cuda::DeviceFlipRatio;

    let Some(cuda) = b.as_cuda() else {
        return Ok(());
    };
    let err = |e: cudarc::driver::DriverError| format!("{e:?}");
    let stream = cuda.context().new_stream().map_err(err)?;
    let shape = [301, 67];
    let n = shape[0] * shape[1];
    let words = bits::packed_len(&shape).unwrap();
    let x = random::<f16>(n + 1, 3);
    let xd = stream.clone_htod(&x).map_err(err)?;
    let mut pd = stream.alloc_zeros::<u32>(words + 1).map_err(err)?;
    cuda.pack(&stream, &xd.slice(1..), &shape, &mut pd.slice_mut(1..))
        .map_err(|e| e.to_string())?;
    let got = stream.clone_dtoh(&pd).map_err(err)?;
    let want = bits::pack_vec(&x[1..], &shape).unwrap();
    if got[0] != 0 || got[1..] != want[..] {
        return Err("pack through offset views differs from the CPU".into());
    }

    let scale: Vec<f32> = random(shape[1] + 1, 4);
    let sd = stream.clone_htod(&scale).map_err(err)?;
    let mut yd = stream.alloc_zeros::<bf16>(n + 1).map_err(err)?;
    cuda.unpack(
        &stream,
        &pd.slice(1..),
        &shape,
        Some(&sd.slice(1..)),
        &mut yd.slice_mut(1..),
    )
    .map_err(|e| e.to_string())?;
    let got = stream.clone_dtoh(&yd).map_err(err)?;
    let want: Vec<bf16> = bits::unpack_vec(&want, &shape, Some(&scale[1..])).unwrap();
    if got[0] != bf16::ZERO || same_bits(&got[1..], &want).is_some() {
        return Err("unpack through offset views differs from the CPU".into());
    }

    let mut metric = DeviceFlipRatio::new(&stream, &shape).map_err(|e| e.to_string())?;
    let mut cpu = FlipRatio::new(&Backend::new(Device::Cpu).unwrap(), &shape).unwrap();
    let flipped: Vec<f16> = x.iter().map(|v| -*v).collect();
    for values in [&x, &flipped, &flipped, &x] {
        let vd = stream.clone_htod(values).map_err(err)?;
        let g = cuda
            .update_flip_ratio(&stream, &vd.slice(1..), &mut metric)
            .map_err(|e| e.to_string())?;
        let w = cpu.update(&values[1..]).unwrap();
        if g != w {
            return Err(format!("device flip ratio {g:?}, the CPU {w:?}"));
        }
    }
    if metric.result() != cpu.result() {
        return Err("device flip ratio result differs".into());
    }
    Ok(())
}

fn main() {
    // Only the CUDA build pushes its device-only test.
    #[cfg_attr(not(lowbit_cuda), allow(unused_mut))]
    let mut tests: Vec<(&str, harness::Body, bool)> = vec![
        (
            "packing_agrees_with_the_cpu",
            packing_agrees_with_the_cpu,
            false,
        ),
        (
            "unpacking_agrees_with_the_cpu",
            unpacking_agrees_with_the_cpu,
            false,
        ),
        (
            "flip_ratio_agrees_with_the_cpu",
            flip_ratio_agrees_with_the_cpu,
            false,
        ),
        ("empty_tensors_work", empty_tensors_work, false),
        (
            "bad_input_is_an_error_and_writes_nothing",
            bad_input_is_an_error_and_writes_nothing,
            false,
        ),
    ];
    #[cfg(lowbit_cuda)]
    tests.push((
        "device_views_on_the_callers_stream",
        device_views_on_the_callers_stream,
        true,
    ));
    harness::run(tests);
}
