//! Backwards in f16 and bf16 whose gradient evaluates an `exp` or a `tanh`
//! of `x` (`swish_sign`, DoReFa's weights), with that part looked up by bit
//! pattern instead of evaluated per element.
//!
//! Such a functor splits its gradient as `bwd_of(of_x(x), dy, s)`
//! ([`Elementwise::TABULATED`]). A call first evaluates `of_x` on each of
//! the 65,536 patterns of the type, widened as the generic loop widens them,
//! and the map then reads each element's entry: what is left per element is
//! a few multiplications (and DoReFa's division). `of_x` and `bwd_of` are
//! the scalar definition's own two halves, so the bits are the generic
//! path's. In half precision, `swish_sign`'s `exp` and two divisions per
//! element made its backward run at 0.3–0.5 of a copy at 2^24 elements.

use rayon::prelude::*;

use super::pieces::{bits, patterns};
use super::recent::Recent;
use super::{CHUNK, Dims, Reduced, Scales, lanes, simd, steps, streams};
use crate::element::convert::{self, LANES};
use crate::element::{DType, Element};
use crate::op::{Elementwise, Functor, Op, with_functor};

/// Below this many elements, filling the table (65,536 evaluations, tens of
/// microseconds) costs more than it saves.
const MIN_LEN: usize = 1 << 20;

/// `of_x` of every pattern, indexed by the pattern. Kept as pairs: a step
/// reads each element's pair with one 64-bit load (gathered), where two
/// arrays of `f32` took two 32-bit gathers and ran slower.
type Table = [[f32; 2]; 1 << 16];

/// `dx = q'(x)·dy` through a table where `q`'s functor splits its
/// gradient, `T` is a 16-bit type and `x` is long enough; `false` (and
/// nothing written) otherwise.
pub(super) fn backward<T: Element>(
    op: &Op,
    x: &[T],
    dy: &[T],
    dx: &mut [T],
    reduced: &Reduced,
    dims: Dims,
) -> bool {
    if T::DTYPE == DType::F32 || x.len() < MIN_LEN {
        return false;
    }
    with_functor!(op.functor, |f| tabulated(
        op.functor, f, x, dy, dx, reduced, dims
    ))
}

/// [`backward`] for the functor `f` of `functor`.
fn tabulated<T: Element, Q: Elementwise>(
    functor: Functor,
    f: Q,
    x: &[T],
    dy: &[T],
    dx: &mut [T],
    reduced: &Reduced,
    dims: Dims,
) -> bool {
    if !Q::TABULATED {
        return false;
    }
    static RECENT: Recent<(Functor, DType), Box<Table>> = Recent::new();
    let table = RECENT.get((functor, T::DTYPE), || table::<T, Q>(f));
    map(f, &table, x, dy, dx, reduced, dims);
    true
}

fn table<T: Element, F: Elementwise>(f: F) -> Box<Table> {
    let all: Vec<u16> = (0..=u16::MAX).collect();
    let all = patterns::<T>(&all);
    // Made on the heap: `Box::new` of the array may build it on the stack
    // first, 512 KiB, in an unoptimized build.
    let mut table: Box<Table> = vec![[0f32; 2]; 1 << 16]
        .into_boxed_slice()
        .try_into()
        .expect("65,536 entries");
    table
        .par_chunks_mut(CHUNK / 8)
        .zip(all.par_chunks(CHUNK / 8))
        .for_each(|(table, all)| {
            simd(
                #[inline(always)]
                |level| {
                    for (t, x) in table.chunks_exact_mut(LANES).zip(all.chunks_exact(LANES)) {
                        let x = T::widen(level, &lanes(x, 0, LANES));
                        for (t, x) in t.iter_mut().zip(x) {
                            *t = f.of_x(x);
                        }
                    }
                },
            )
        });
    table
}

/// `dx = f.bwd_of(table[x], dy, s)`, chunk by chunk in parallel, as
/// `map2` maps `f.bwd`.
fn map<T: Element, F: Elementwise>(
    f: F,
    table: &Table,
    x: &[T],
    dy: &[T],
    dx: &mut [T],
    reduced: &Reduced,
    dims: Dims,
) {
    let stream = streams(3 * std::mem::size_of_val(x));
    let scales = Scales::new(F::INDEX, reduced, dims);
    dx.par_chunks_mut(CHUNK)
        .zip(bits(x).par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
        .enumerate()
        .for_each(|(chunk, (dx, (x, dy)))| {
            simd(
                #[inline(always)]
                |level| {
                    let mut s = scales.at(chunk * CHUNK);
                    steps(
                        level,
                        dx,
                        stream,
                        #[inline(always)]
                        move |i, n| {
                            let x = lanes(x, i, n);
                            let dy = T::widen(level, &lanes(dy, i, n));
                            let s = s.next(F::INDEX, n);
                            let mut dx = [0f32; LANES];
                            for k in 0..LANES {
                                dx[k] = f.bwd_of(table[usize::from(x[k])], dy[k], s[k]);
                            }
                            T::narrow(level, &dx)
                        },
                    );
                    if stream {
                        convert::fence();
                    }
                },
            )
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::pieces::bits_mut;
    use crate::cpu::{map2, reduce};
    use crate::op::{Direction, Op, with_functor};
    use half::{bf16, f16};

    /// Every pattern of `x` beside a spread of `dy` (every pattern too, in
    /// another order: NaNs, infinities, zeros and subnormals included),
    /// through the table and through the generic path: the same bits, and
    /// a NaN wherever the other gives one.
    fn every_pattern<T: Element>() {
        let len = MIN_LEN + 77;
        let mut x = vec![T::default(); len];
        let mut dy = vec![T::default(); len];
        for (i, (x, dy)) in bits_mut(&mut x)
            .iter_mut()
            .zip(bits_mut(&mut dy))
            .enumerate()
        {
            *x = i as u16;
            *dy = (i as u16)
                .wrapping_mul(40_503)
                .rotate_left((i >> 16) as u32);
        }
        let specs = [
            "swish_sign",
            "swish_sign(beta=0.5)",
            "swish_sign(beta=100)",
            "dorefa(mode=weights)",
            "dorefa(k_bit=4, mode=weights)",
        ];
        for spec in specs {
            let op = Op::new(&spec.parse().unwrap(), T::DTYPE).unwrap();
            let dims = Dims {
                channels: 1,
                inner: 1,
            };
            let reduced = reduce(op.reduction(Direction::Backward), &x, dims);
            let mut fast = vec![T::default(); len];
            let mut generic = vec![T::default(); len];
            assert!(backward(&op, &x, &dy, &mut fast, &reduced, dims), "{spec}");
            with_functor!(op.functor, |f| map2(
                f,
                &x,
                &dy,
                &mut generic,
                &reduced,
                dims
            ));
            let pairs = bits(&fast)
                .iter()
                .zip(bits(&generic))
                .zip(fast.iter().zip(&generic));
            for (i, ((a, b), (fa, ga))) in pairs.enumerate() {
                // Where x and the factors are NaN, which NaN a product
                // returns follows its operand order, the compiler's choice
                // in each loop (as on the GPU, where NaNs are canonical).
                let same = a == b || fa.to_f32().is_nan() && ga.to_f32().is_nan();
                let (x, dy) = (bits(&x)[i], bits(&dy)[i]);
                assert!(same, "{spec} {:?} at x {x:#06x} dy {dy:#06x}", T::DTYPE);
            }
        }
    }

    #[test]
    fn tables_give_the_generic_paths_bits() {
        every_pattern::<f16>();
        every_pattern::<bf16>();
    }

    #[test]
    fn short_tensors_f32_and_untabulated_gradients_are_left_alone() {
        let op = |spec: &str, dtype| Op::new(&spec.parse().unwrap(), dtype).unwrap();
        let dims = Dims {
            channels: 1,
            inner: 1,
        };
        let run = |op: Op, x: &[f16], dx: &mut [f16]| backward(&op, x, x, dx, &Reduced::None, dims);
        let x = vec![f16::ONE; MIN_LEN];
        let mut dx = vec![f16::ZERO; MIN_LEN];
        assert!(run(op("swish_sign", DType::F16), &x, &mut dx));
        assert!(!run(op("swish_sign", DType::F16), &x[1..], &mut dx[1..]));
        assert!(!run(op("ste_sign", DType::F16), &x, &mut dx));
        let x = vec![1f32; MIN_LEN];
        let mut dx = vec![0f32; MIN_LEN];
        let op = op("swish_sign", DType::F32);
        assert!(!backward(&op, &x, &x, &mut dx, &Reduced::None, dims));
    }
}
