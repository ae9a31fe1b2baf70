//! Every case of larq's reference outputs, forward and backward, within each
//! case's own tolerance, through `Quantizer::forward`/`backward` (the CPU).

mod common;

use lowbit::{Element, Quantizer};

struct Cpu;

impl common::Runner for Cpu {
    fn forward<T: Element>(
        &self,
        q: &Quantizer,
        x: &[T],
        shape: &[usize],
    ) -> Result<Vec<T>, String> {
        q.forward_vec(x, shape).map_err(|e| e.to_string())
    }
    fn backward<T: Element>(
        &self,
        q: &Quantizer,
        x: &[T],
        dy: &[T],
        shape: &[usize],
    ) -> Result<Vec<T>, String> {
        q.backward_vec(x, dy, shape).map_err(|e| e.to_string())
    }
}

#[test]
fn every_larq_reference_case_passes() {
    let failures = common::run_all(&Cpu);
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        common::CASES,
        failures.join("\n")
    );
    println!(
        "golden: {} of {} larq reference cases passed",
        common::CASES,
        common::CASES
    );
}
