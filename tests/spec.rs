//! Quantizers as values: larq's spelling parses, prints back the same way,
//! and every bad SPEC is an error that names the problem.

use lowbit::{DorefaMode, Error, Kind, Quantizer};
use proptest::prelude::*;

fn parse(spec: &str) -> Result<Quantizer, Error> {
    spec.parse()
}

#[test]
fn defaults_follow_larq_and_the_seed_document() {
    let cases = [
        (
            "ste_sign",
            Kind::SteSign {
                clip_value: Some(1.0),
            },
        ),
        ("approx_sign", Kind::ApproxSign),
        ("ede", Kind::Ede { t: 1e-3 }),
        ("swish_sign", Kind::SwishSign { beta: 5.0 }),
        (
            "ste_heaviside",
            Kind::SteHeaviside {
                clip_value: Some(1.0),
                unipolar: false,
            },
        ),
        (
            "magnitude_aware_sign",
            Kind::MagnitudeAwareSign {
                clip_value: Some(1.0),
            },
        ),
        (
            "ste_tern",
            Kind::SteTern {
                threshold_value: 0.1,
                ternary_weight_networks: false,
                clip_value: Some(1.0),
            },
        ),
        (
            "dorefa",
            Kind::DoReFa {
                k_bit: 2,
                mode: DorefaMode::Activations,
            },
        ),
        ("noop(precision=8)", Kind::NoOp { precision: 8 }),
        ("rsign", Kind::RSign),
    ];
    for (spec, kind) in cases {
        assert_eq!(parse(spec).unwrap().kind(), kind, "{spec}");
        if !spec.contains('(') {
            assert_eq!(
                parse(&format!("{spec}()")).unwrap().kind(),
                kind,
                "{spec}()"
            );
        }
    }
}

#[test]
fn larq_spellings_parse() {
    let q = parse("ste_tern(threshold_value=0.2, clip_value=none)").unwrap();
    assert_eq!(
        q.kind(),
        Kind::SteTern {
            threshold_value: 0.2,
            ternary_weight_networks: false,
            clip_value: None
        }
    );
    // Python's spellings of None, booleans and strings, extra spaces, a trailing comma.
    let q = parse(" ste_tern ( ternary_weight_networks = True , clip_value=None, ) ").unwrap();
    assert_eq!(
        q.kind(),
        Kind::SteTern {
            threshold_value: 0.1,
            ternary_weight_networks: true,
            clip_value: None
        }
    );
    assert_eq!(
        parse("dorefa(k_bit=4, mode=\"weights\")").unwrap().kind(),
        Kind::DoReFa {
            k_bit: 4,
            mode: DorefaMode::Weights
        }
    );
    assert_eq!(
        parse("dorefa(mode='activations', k_bit=8)").unwrap().kind(),
        Kind::DoReFa {
            k_bit: 8,
            mode: DorefaMode::Activations
        }
    );
    assert_eq!(parse("approx_sign()").unwrap().kind(), Kind::ApproxSign);
    assert_eq!(
        parse("swish_sign(beta=10)").unwrap().kind(),
        Kind::SwishSign { beta: 10.0 }
    );
}

#[test]
fn display_writes_every_parameter() {
    let shown: Vec<String> = [
        "ste_sign",
        "approx_sign",
        "swish_sign",
        "ste_heaviside(clip_value=none)",
        "magnitude_aware_sign(clip_value=0.5)",
        "ste_tern(ternary_weight_networks=true)",
        "dorefa(mode=weights)",
        "noop(precision=1)",
        "rsign()",
    ]
    .iter()
    .map(|s| parse(s).unwrap().to_string())
    .collect();
    assert_eq!(
        shown,
        [
            "ste_sign(clip_value=1.0)",
            "approx_sign",
            "swish_sign(beta=5.0)",
            "ste_heaviside(clip_value=none)",
            "magnitude_aware_sign(clip_value=0.5)",
            "ste_tern(threshold_value=0.1, ternary_weight_networks=true, clip_value=1.0)",
            "dorefa(k_bit=2, mode=weights)",
            "noop(precision=1)",
            "rsign",
        ]
    );
}

fn clip() -> impl Strategy<Value = Option<f32>> {
    prop_oneof![Just(None), (1e-6f32..1e6).prop_map(Some)]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        clip().prop_map(|clip_value| Kind::SteSign { clip_value }),
        Just(Kind::ApproxSign),
        (1e-6f32..1e6).prop_map(|beta| Kind::SwishSign { beta }),
        (clip(), any::<bool>()).prop_map(|(clip_value, unipolar)| Kind::SteHeaviside {
            clip_value,
            unipolar
        }),
        (1e-6f32..1e6).prop_map(|t| Kind::Ede { t }),
        clip().prop_map(|clip_value| Kind::MagnitudeAwareSign { clip_value }),
        (0f32..1e3, any::<bool>(), clip()).prop_map(|(t, w, c)| Kind::SteTern {
            threshold_value: t,
            ternary_weight_networks: w,
            clip_value: c
        }),
        (1u32..=24, any::<bool>()).prop_map(|(k_bit, w)| Kind::DoReFa {
            k_bit,
            mode: if w {
                DorefaMode::Weights
            } else {
                DorefaMode::Activations
            }
        }),
        (1u32..=64).prop_map(|precision| Kind::NoOp { precision }),
        Just(Kind::RSign),
    ]
}

proptest! {
    #[test]
    fn display_and_parse_round_trip(kind in kind()) {
        let q = Quantizer::new(kind).unwrap();
        let back: Quantizer = q.to_string().parse().unwrap();
        // Bit-exact parameters: the printed floats read back to the same f32.
        prop_assert_eq!(back, q);
        prop_assert_eq!(back.to_string(), q.to_string());
    }
}

/// A SPEC either parses to a quantizer that prints and parses back to
/// itself, or is an error whose message is short; never a panic.
fn parses_exactly_or_refuses(spec: &str) -> Result<(), TestCaseError> {
    match parse(spec) {
        Ok(q) => {
            let back = parse(&q.to_string());
            prop_assert_eq!(back.as_ref(), Ok(&q), "{} -> {}", spec, q);
            prop_assert_eq!(back.unwrap().to_string(), q.to_string());
        }
        Err(e) => prop_assert!(e.to_string().len() < 600, "{}", e),
    }
    Ok(())
}

const VALID: &[&str] = &[
    "ste_sign(clip_value=1.0)",
    "ste_tern(threshold_value=0.2, ternary_weight_networks=True, clip_value=none)",
    "swish_sign(beta=5.0, scale=first_axis)",
    "dorefa(k_bit=3, mode='weights')",
    "ste_heaviside(clip_value=0.5, unipolar=true)",
    "ede(progress=0.5)",
    "noop(precision=8)",
    "magnitude_aware_sign",
    "approx_sign()",
    "rsign",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_text_parses_exactly_or_is_refused(spec in "\\PC{0,40}") {
        parses_exactly_or_refuses(&spec)?;
    }

    #[test]
    fn spec_like_text_parses_exactly_or_is_refused(
        spec in "[a-z_]{0,12}(\\((([a-z_]{1,14}|[ ,=()'\"]){0,3}=[-+0-9.eEnoaINFtrufls_']{0,10},?){0,3}\\)?)?",
    ) {
        parses_exactly_or_refuses(&spec)?;
    }

    #[test]
    fn mutated_specs_parse_exactly_or_are_refused(
        base in prop::sample::select(VALID),
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), prop::sample::select(vec![
                "", "(", ")", ",", "=", " ", "'", "\"", "0", "1", "-", "+", ".", "e", "e-50",
                "e40", "_", "none", "True", "nan", "inf", "clip_value=1", "x", "\u{e9}",
            ]), any::<bool>()),
            1..4,
        ),
    ) {
        let mut spec = base.to_string();
        for (at, text, replace) in edits {
            let boundaries: Vec<usize> =
                (0..=spec.len()).filter(|&i| spec.is_char_boundary(i)).collect();
            let at = boundaries[at.index(boundaries.len())];
            let end = if replace {
                spec[at..].chars().next().map_or(at, |c| at + c.len_utf8())
            } else {
                at
            };
            spec.replace_range(at..end, text);
        }
        parses_exactly_or_refuses(&spec)?;
    }
}
