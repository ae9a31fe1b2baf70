//! Draws every quantizer as larq's docs do: forward y(x) beside its gradient,
//! both read off lowbit's own outputs on a grid of x in [−2, 2].
//!
//! Run with `cargo run --release --example plot_quantizers [OUT_DIR]`; it
//! writes one SVG per SPEC into OUT_DIR (default `docs/images`).

use std::error::Error;
use std::path::Path;

use lowbit::{DorefaMode, Kind, Quantizer};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The pictures to draw, one SVG each; add a SPEC here to get its picture.
const SPECS: &[&str] = &[
    "ste_sign",
    "approx_sign",
    "swish_sign(beta=5.0)",
    "ste_heaviside",
    "ste_heaviside(unipolar=true)",
    "magnitude_aware_sign",
    "ste_tern(threshold_value=0.1)",
    "ste_tern(ternary_weight_networks=true)",
    "dorefa(k_bit=2)",
    "dorefa(k_bit=2, mode=weights)",
    "noop(precision=32)",
    "ede(progress=0.75)",
    "ede(progress=1.0)",
    "progressive_sign(temperature=0.5)",
    "progressive_sign(temperature=0.9)",
];

/// Grid points on [−2, 2]: a step of 0.005 puts 0 and ±1 exactly on the grid
/// and makes a jump between neighbours look vertical at this picture width.
const POINTS: usize = 801;
const X_MIN: f32 = -2.0;
const X_MAX: f32 = 2.0;

type Curve = Vec<(f32, f32)>;

fn main() -> Result<(), Box<dyn Error>> {
    let out_dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "docs/images".into());
    std::fs::create_dir_all(&out_dir)?;

    let x: Vec<f32> = (0..POINTS)
        .map(|i| {
            let t = i as f64 / (POINTS - 1) as f64;
            (X_MIN as f64 + t * (X_MAX - X_MIN) as f64) as f32
        })
        .collect();
    let dy = vec![1.0f32; POINTS];
    // One channel of POINTS rows: magnitude_aware_sign then takes one scale
    // over the whole grid; the other quantizers ignore the shape.
    let shape = [POINTS, 1];

    let mut names = Vec::new();
    for spec in SPECS {
        let q: Quantizer = spec.parse()?;
        let y = q.forward_vec(&x, &shape)?;
        let dx = q.backward_vec(&x, &dy, &shape)?;

        let name = file_name(spec);
        if names.contains(&name) {
            return Err(format!("two SPECs map to the file name {name}.svg").into());
        }
        let path = Path::new(&out_dir).join(format!("{name}.svg"));
        draw(&path, &q, &simplify(&x, &y), &simplify(&x, &dx))?;
        println!("{}  <-  {q}", path.display());
        names.push(name);
    }
    Ok(())
}

/// The SPEC as written in `SPECS`, with everything outside `[A-Za-z0-9._-]`
/// squeezed to single underscores.
fn file_name(spec: &str) -> String {
    let mut name = String::new();
    for c in spec.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '-') {
            name.push(c);
        } else if !name.ends_with('_') {
            name.push('_');
        }
    }
    name.trim_end_matches('_').to_owned()
}

/// For the quantizers whose scale or threshold is a reduction over the
/// tensor: which tensor that was, since the picture changes with it.
fn tensor_note(q: &Quantizer, forward: &Curve) -> Option<String> {
    let grid =
        format!("the plotted grid itself ({POINTS} points on [{X_MIN}, {X_MAX}], one channel)");
    match q.kind() {
        Kind::MagnitudeAwareSign { .. } => {
            // The scale is what the forward pass gives at the right end, x > 0.
            let scale = forward.last().map_or(f32::NAN, |&(_, y)| y);
            Some(format!("scale = mean |x| = {scale:.4} over {grid}"))
        }
        Kind::SteTern {
            ternary_weight_networks: true,
            ..
        } => Some(format!("threshold Δ = 0.7 · mean |x| over {grid}")),
        Kind::DoReFa {
            mode: DorefaMode::Weights,
            ..
        } => Some(format!("max |tanh x| taken over {grid}")),
        _ => None,
    }
}

/// Drops points that lie on the line through their neighbours, so flat and
/// straight pieces cost two points while curves and jumps keep every sample.
fn simplify(x: &[f32], y: &[f32]) -> Curve {
    let mut out: Curve = Vec::new();
    for (i, (&xi, &yi)) in x.iter().zip(y).enumerate() {
        if let (Some(&(x0, y0)), Some(&xn), Some(&yn)) = (out.last(), x.get(i + 1), y.get(i + 1)) {
            let predicted = y0 + (yn - y0) * (xi - x0) / (xn - x0);
            if (yi - predicted).abs() <= 1e-5 * (1.0 + yi.abs()) {
                continue;
            }
        }
        out.push((xi, yi));
    }
    out
}

/// The picture's size in display pixels.
const WIDTH: u32 = 1100;
const HEIGHT: u32 = 460;
/// plotters rounds every coordinate to a whole pixel, which makes smooth
/// curves stair-step; drawing SCALE times larger and declaring the display
/// size in the SVG header keeps quarter-pixel detail.
const SCALE: u32 = 4;

fn px(n: u32) -> u32 {
    n * SCALE
}

fn draw(
    path: &Path,
    q: &Quantizer,
    forward: &Curve,
    gradient: &Curve,
) -> Result<(), Box<dyn Error>> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (px(WIDTH), px(HEIGHT))).into_drawing_area();
        root.fill(&WHITE)?;
        let (header, body) = root.split_vertically(px(64));

        let centre = px(WIDTH / 2) as i32;
        let top_centre = Pos::new(HPos::Center, VPos::Top);
        let title = ("sans-serif", px(24))
            .into_font()
            .color(&BLACK)
            .pos(top_centre);
        header.draw_text(&q.to_string(), &title, (centre, px(10) as i32))?;
        if let Some(note) = tensor_note(q, forward) {
            let style = ("sans-serif", px(15))
                .into_font()
                .color(&BLACK.mix(0.7))
                .pos(top_centre);
            header.draw_text(&note, &style, (centre, px(40) as i32))?;
        }

        let panels = body.split_evenly((1, 2));
        panel(&panels[0], "forward", "y = q(x)", forward)?;
        panel(
            &panels[1],
            "gradient (backward with dy = 1)",
            "dy/dx",
            gradient,
        )?;
        root.present()?;
    }
    let drawn = format!("<svg width=\"{}\" height=\"{}\"", px(WIDTH), px(HEIGHT));
    let shown = format!("<svg width=\"{WIDTH}\" height=\"{HEIGHT}\"");
    if !svg.starts_with(&drawn) {
        return Err("unexpected SVG header from plotters".into());
    }
    std::fs::write(path, svg.replacen(&drawn, &shown, 1))?;
    Ok(())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    y_desc: &str,
    curve: &Curve,
) -> Result<(), Box<dyn Error>>
where
    DB::ErrorType: 'static,
{
    let (lo, hi) = y_range(curve);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", px(18)))
        .margin(px(12))
        .x_label_area_size(px(44))
        .y_label_area_size(px(56))
        .build_cartesian_2d(X_MIN..X_MAX, lo..hi)?;
    chart
        .configure_mesh()
        .x_desc("x")
        .y_desc(y_desc)
        .x_labels(9)
        .y_labels(9)
        .max_light_lines(1)
        .light_line_style(BLACK.mix(0.06).stroke_width(px(1)))
        .bold_line_style(BLACK.mix(0.2).stroke_width(px(1)))
        .axis_style(BLACK.mix(0.8).stroke_width(px(1)))
        .set_all_tick_mark_size(px(4))
        .label_style(("sans-serif", px(14)))
        .axis_desc_style(("sans-serif", px(16)))
        .draw()?;
    // The axes through the origin, as larq's plots show them.
    let axis = BLACK.mix(0.5).stroke_width(px(1));
    chart.draw_series(LineSeries::new([(X_MIN, 0.0), (X_MAX, 0.0)], axis))?;
    chart.draw_series(LineSeries::new([(0.0, lo), (0.0, hi)], axis))?;
    chart.draw_series(LineSeries::new(
        curve.iter().copied(),
        BLUE.stroke_width(px(2)),
    ))?;
    Ok(())
}

/// The curve's range with 0 included and a margin, so that flat lines (noop's
/// gradient) do not sit on the frame.
fn y_range(curve: &Curve) -> (f32, f32) {
    let (lo, hi) = curve
        .iter()
        .filter(|(_, y)| y.is_finite())
        .fold((0.0f32, 0.0f32), |(lo, hi), &(_, y)| (lo.min(y), hi.max(y)));
    let pad = 0.1 * (hi - lo).max(1.0);
    (lo - pad, hi + pad)
}
