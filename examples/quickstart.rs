//! Quantize a small tensor with every larq quantizer, forward and backward.
//!
//! Run with `cargo run --release --example quickstart`.

use lowbit::Quantizer;

fn main() -> Result<(), lowbit::Error> {
    let x = [-1.5f32, -0.6, -0.05, -0.0, 0.0, 0.05, 0.4, 0.6, 1.0, 2.0];
    let dy = [1.0f32; 10];
    let shape = [2, 5];

    println!("x  = {x:?}");
    for spec in [
        "ste_sign",
        "approx_sign",
        "swish_sign(beta=5.0)",
        "ste_heaviside(clip_value=none)",
        "magnitude_aware_sign",
        "ste_tern(threshold_value=0.1)",
        "ste_tern(ternary_weight_networks=true)",
        "dorefa(k_bit=2)",
        "dorefa(k_bit=2, mode=weights)",
        "noop(precision=32)",
    ] {
        let q: Quantizer = spec.parse()?;
        let y = q.forward_vec(&x, &shape)?;
        let dx = q.backward_vec(&x, &dy, &shape)?;
        println!("\n{q}");
        println!("  y  = {}", fmt(&y));
        println!("  dx = {}", fmt(&dx));
    }
    Ok(())
}

fn fmt(v: &[f32]) -> String {
    let items: Vec<String> = v.iter().map(|x| format!("{x:.3}")).collect();
    format!("[{}]", items.join(", "))
}
