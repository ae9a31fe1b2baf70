//! Every case of larq's reference outputs (tests/data/larq_reference.json,
//! computed by larq 0.14.0 on TensorFlow 2.21), forward and backward, within
//! each case's own tolerance.

use lowbit::{Element, Quantizer, bf16, f16};
use serde_json::Value;

const REFERENCE: &str = include_str!("data/larq_reference.json");

/// larq's parameters, written in the SPEC syntax lowbit parses.
fn spec(case: &Value) -> String {
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

fn bits(case: &Value, key: &str) -> Vec<u64> {
    case[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

/// Compares `got` with `want` under `|got − want| ≤ atol + rtol·|want|`, NaN
/// only matching NaN; returns a description of the first mismatch.
fn compare(got: &[f32], want: &[f32], tol: &Value) -> Result<(), String> {
    let atol = tol["atol"].as_f64().unwrap();
    let rtol = tol["rtol"].as_f64().unwrap();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else if atol == 0.0 && rtol == 0.0 {
            // An exact case is exact to the bit, sign of zero included.
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

fn run_case<T: Element>(case: &Value, from_bits: impl Fn(u64) -> T) -> Result<(), String> {
    let q: Quantizer = spec(case).parse().map_err(|e| format!("{e}"))?;
    let shape: Vec<usize> = case["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let load = |key| -> Vec<T> { bits(case, key).into_iter().map(&from_bits).collect() };
    let widen = |v: &[T]| -> Vec<f32> { v.iter().map(|v| v.to_f32()).collect() };
    let (x, dy, y, dx) = (load("x"), load("dy"), load("y"), load("dx"));

    let got_y = q.forward_vec(&x, &shape).map_err(|e| e.to_string())?;
    compare(&widen(&got_y), &widen(&y), &case["tolerance"]["y"]).map_err(|e| format!("y: {e}"))?;
    let got_dx = q.backward_vec(&x, &dy, &shape).map_err(|e| e.to_string())?;
    compare(&widen(&got_dx), &widen(&dx), &case["tolerance"]["dx"])
        .map_err(|e| format!("dx: {e}"))?;
    Ok(())
}

#[test]
fn every_larq_reference_case_passes() {
    let reference: Value = serde_json::from_str(REFERENCE).unwrap();
    let cases = reference["cases"].as_array().unwrap();
    let mut failures = Vec::new();
    for case in cases {
        let result = match case["dtype"].as_str().unwrap() {
            "f32" => run_case(case, |b| f32::from_bits(b as u32)),
            "f16" => run_case(case, |b| f16::from_bits(b as u16)),
            "bf16" => run_case(case, |b| bf16::from_bits(b as u16)),
            other => Err(format!("unknown dtype {other}")),
        };
        if let Err(e) = result {
            failures.push(format!(
                "{} {} {:?}: {e}",
                spec(case),
                case["dtype"],
                case["shape"]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // The reference holds 128 cases; a truncated copy must not pass quietly.
    assert_eq!(cases.len(), 128);
    println!(
        "golden: {} of {} larq reference cases passed",
        cases.len(),
        cases.len()
    );
}
