//! Bit packing on the CPU: rows in parallel, each word from
//! [`scalar::pack_word`], each unpacked value from [`scalar::unpack_bit`].
//! Values are widened (or narrowed) a word's [`LANES`] at a time.

use rayon::prelude::*;

use super::{CHUNK, lanes, simd, steps};
use crate::bits::Rows;
use crate::element::Element;
use crate::element::convert::{LANES, Level};
use crate::scalar::{self, WORD_BITS};

const _: () = assert!(LANES == WORD_BITS);

/// Rows per parallel task: about [`CHUNK`] values, at least one row.
fn rows_per_task(rows: Rows) -> usize {
    (CHUNK / rows.channels.max(1)).max(1)
}

/// Packs `x` into `packed`; the lengths match `rows` (the caller checked).
pub(crate) fn pack<T: Element>(x: &[T], rows: Rows, packed: &mut [u32]) {
    sum_rows(x, rows, packed, |level, x, words| {
        pack_row(level, x, words, |word, new| *word = new);
        0
    });
}

/// Packs `x` into `previous`, which holds the previous signs, and returns
/// how many bits changed.
pub(crate) fn pack_counting_flips<T: Element>(x: &[T], rows: Rows, previous: &mut [u32]) -> u64 {
    sum_rows(x, rows, previous, |level, x, words| {
        let mut flipped = 0;
        pack_row(level, x, words, |word, new| {
            flipped += u64::from(scalar::flips(*word, new));
            *word = new;
        });
        flipped
    })
}

/// Unpacks `packed` into `y`, times `scale[c]` where given; the lengths
/// match `rows` (the caller checked).
pub(crate) fn unpack<T: Element>(packed: &[u32], rows: Rows, scale: Option<&[f32]>, y: &mut [T]) {
    if rows.len() == 0 {
        return;
    }
    let n = rows_per_task(rows);
    y.par_chunks_mut(n * rows.channels)
        .zip(packed.par_chunks(n * rows.words))
        .for_each(|(y, packed)| {
            simd(
                #[inline(always)]
                |level| {
                    for (y, words) in y.chunks_mut(rows.channels).zip(packed.chunks(rows.words)) {
                        unpack_row(level, words, scale, y);
                    }
                },
            )
        });
}

/// Calls `f(row of x, its words)` for every row, in parallel, and adds up
/// what it returns (integers: the order of the additions does not matter).
fn sum_rows<T: Element>(
    x: &[T],
    rows: Rows,
    packed: &mut [u32],
    f: impl Fn(Level, &[T], &mut [u32]) -> u64 + Sync,
) -> u64 {
    // No words: no rows or no channels (and chunks of 0 would panic).
    if rows.packed_len() == 0 {
        return 0;
    }
    let n = rows_per_task(rows);
    packed
        .par_chunks_mut(n * rows.words)
        .zip(x.par_chunks(n * rows.channels))
        .map(|(packed, x)| {
            simd(
                #[inline(always)]
                |level| {
                    packed
                        .chunks_mut(rows.words)
                        .zip(x.chunks(rows.channels))
                        .map(|(words, x)| f(level, x, words))
                        .sum::<u64>()
                },
            )
        })
        .sum()
}

/// Packs one row into its words, handing each word and its new value to
/// `store`. The last word of a short row gets 0 padding bits.
#[inline(always)]
fn pack_row<T: Element>(
    level: Level,
    x: &[T],
    words: &mut [u32],
    mut store: impl FnMut(&mut u32, u32),
) {
    for (k, word) in words.iter_mut().enumerate() {
        let n = WORD_BITS.min(x.len() - k * WORD_BITS);
        let values = T::widen(level, &lanes(x, k * WORD_BITS, n));
        store(word, scalar::pack_word(&values[..n]));
    }
}

/// Unpacks one row from its words.
#[inline(always)]
fn unpack_row<T: Element>(level: Level, words: &[u32], scale: Option<&[f32]>, y: &mut [T]) {
    steps(
        level,
        y,
        false,
        #[inline(always)]
        |i, n| {
            let word = words[i / WORD_BITS];
            let mut out = [0f32; LANES];
            for (j, v) in out.iter_mut().enumerate().take(n) {
                *v = scalar::unpack_bit(word >> j, scale.map_or(1.0, |s| s[i + j]));
            }
            T::narrow(level, &out)
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_hold_whole_rows() {
        let rows = |channels| Rows {
            rows: 10,
            channels,
            words: channels.div_ceil(32),
        };
        assert_eq!(rows_per_task(rows(CHUNK * 3)), 1);
        assert_eq!(rows_per_task(rows(CHUNK / 4)), 4);
        assert_eq!(rows_per_task(rows(0)), CHUNK);
    }

    #[test]
    fn rows_of_many_words_pack_and_unpack() {
        // 2 rows of 1024 + 33 channels: a padded word at the end of each.
        let channels = 1024 + 33;
        let rows = Rows {
            rows: 2,
            channels,
            words: channels.div_ceil(32),
        };
        let x: Vec<f32> = (0..2 * channels)
            .map(|i: usize| if i.is_multiple_of(3) { -1.0 } else { 1.0 })
            .collect();
        let mut packed = vec![0u32; rows.packed_len()];
        pack(&x, rows, &mut packed);
        for (r, words) in packed.chunks(rows.words).enumerate() {
            for c in 0..rows.words * 32 {
                let bit = words[c / 32] >> (c % 32) & 1;
                let want = c < channels && (r * channels + c).is_multiple_of(3);
                assert_eq!(bit == 1, want, "row {r} channel {c}");
            }
        }
        let mut y = vec![0f32; x.len()];
        unpack(&packed, rows, None, &mut y);
        assert_eq!(y, x);
        let mut previous = packed.clone();
        let flipped: Vec<f32> = x.iter().map(|v| -v).collect();
        assert_eq!(
            pack_counting_flips(&flipped, rows, &mut previous),
            x.len() as u64
        );
    }
}
