//! larq's reference cases (tests/data/larq_reference.json, computed by larq
//! 0.14.0 on TensorFlow 2.21) and the comparison each case asks for.

#![allow(dead_code)]

use lowbit::{Element, Quantizer, bf16, f16};
use serde_json::Value;

const REFERENCE: &str = include_str!("../data/larq_reference.json");

/// How many cases the reference holds; a truncated copy must not pass quietly.
pub const CASES: usize = 128;

pub fn cases() -> Vec<Value> {
    let reference: Value = serde_json::from_str(REFERENCE).unwrap();
    reference["cases"].as_array().unwrap().clone()
}

/// larq's parameters, written in the SPEC syntax lowbit parses.
pub fn spec(case: &Value) -> String {
    let name = case["quantizer"].as_str().unwrap();
    let params: Vec<String> = case["params"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| match v {
            Value::Null => format!("{k}=none"),
            Value::String(s) => format!("{k}={s}"),
            v => format!("{k}={v}"),
        })
        .collect();
    format!("{name}({})", params.join(", "))
}

/// A case's name for messages.
pub fn describe(case: &Value) -> String {
    format!("{} {} {}", spec(case), case["dtype"], case["shape"])
}

/// Compares `got` with `want` under `|got − want| ≤ atol + rtol·|want|`, NaN
/// only matching NaN, and bit for bit (sign of zero included) where the
/// tolerance is zero; returns the first mismatch.
pub fn compare(got: &[f32], want: &[f32], tol: &Value) -> Result<(), String> {
    let atol = tol["atol"].as_f64().unwrap();
    let rtol = tol["rtol"].as_f64().unwrap();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else if atol == 0.0 && rtol == 0.0 {
            g.to_bits() == w.to_bits()
        } else if g == w {
            true
        } else {
            let (g, w) = (f64::from(g), f64::from(w));
            (g - w).abs() <= atol + rtol * w.abs()
        };
        if !ok {
            return Err(format!("element {i}: got {g:e}, want {w:e}"));
        }
    }
    Ok(())
}

/// The forward and backward functions under test, for one element type.
pub trait Runner {
    fn forward<T: Element>(
        &self,
        q: &Quantizer,
        x: &[T],
        shape: &[usize],
    ) -> Result<Vec<T>, String>;
    fn backward<T: Element>(
        &self,
        q: &Quantizer,
        x: &[T],
        dy: &[T],
        shape: &[usize],
    ) -> Result<Vec<T>, String>;

    /// Whether a gradient of −0 arrives as −0. candle's autograd adds every
    /// gradient to a zero tensor, so through it −0 arrives as +0.
    fn keeps_negative_zero_gradients(&self) -> bool {
        true
    }
}

fn run_typed<T: Element>(
    r: &impl Runner,
    case: &Value,
    from_bits: impl Fn(u64) -> T,
) -> Result<(), String> {
    let q: Quantizer = spec(case).parse().map_err(|e| format!("{e}"))?;
    let shape: Vec<usize> = case["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let load = |key: &str| -> Vec<T> {
        case[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| from_bits(v.as_u64().unwrap()))
            .collect()
    };
    let widen = |v: &[T]| -> Vec<f32> { v.iter().map(|v| v.to_f32()).collect() };
    let (x, dy, y, dx) = (load("x"), load("dy"), load("y"), load("dx"));
    let got_y = r.forward(&q, &x, &shape)?;
    compare(&widen(&got_y), &widen(&y), &case["tolerance"]["y"]).map_err(|e| format!("y: {e}"))?;
    let got_dx = r.backward(&q, &x, &dy, &shape)?;
    let mut want_dx = widen(&dx);
    if !r.keeps_negative_zero_gradients() {
        want_dx.iter_mut().for_each(|v| *v += 0.0);
    }
    compare(&widen(&got_dx), &want_dx, &case["tolerance"]["dx"]).map_err(|e| format!("dx: {e}"))
}

/// Runs one reference case, forward and backward, in its own dtype.
pub fn run_case(r: &impl Runner, case: &Value) -> Result<(), String> {
    match case["dtype"].as_str().unwrap() {
        "f32" => run_typed(r, case, |b| f32::from_bits(b as u32)),
        "f16" => run_typed(r, case, |b| f16::from_bits(b as u16)),
        "bf16" => run_typed(r, case, |b| bf16::from_bits(b as u16)),
        other => Err(format!("unknown dtype {other}")),
    }
}

/// Runs every case; returns the failures.
pub fn run_all(r: &impl Runner) -> Vec<String> {
    let cases = cases();
    assert_eq!(cases.len(), CASES);
    cases
        .iter()
        .filter_map(|c| {
            run_case(r, c)
                .err()
                .map(|e| format!("{}: {e}", describe(c)))
        })
        .collect()
}
