//! Bad input is an error that names the problem, found before anything is
//! written: the output buffer is left exactly as it was.

use lowbit::{DorefaMode, Error, Kind, Quantizer};

fn parse_err(spec: &str) -> Error {
    match spec.parse::<Quantizer>() {
        Ok(q) => panic!("`{spec}` parsed as {q}"),
        Err(e) => e,
    }
}

#[test]
fn unknown_names_are_errors_that_list_the_known_ones() {
    let e = parse_err("ste_sgn");
    assert_eq!(e, Error::UnknownQuantizer("ste_sgn".into()));
    assert!(e.to_string().contains("ste_sign"), "{e}");
}

#[test]
fn unknown_and_repeated_keys_are_errors() {
    let e = parse_err("ste_sign(clip=1.0)");
    assert!(
        matches!(&e, Error::UnknownParameter { quantizer: "ste_sign", key, .. } if key == "clip")
    );
    assert!(e.to_string().contains("clip_value"), "{e}");
    assert!(matches!(
        parse_err("approx_sign(beta=5)"),
        Error::UnknownParameter { .. }
    ));
    assert!(matches!(
        parse_err("ste_tern(clip_value=1.0, clip_value=none)"),
        Error::DuplicateParameter {
            quantizer: "ste_tern",
            ..
        }
    ));
    assert!(matches!(
        parse_err("noop"),
        Error::MissingParameter {
            quantizer: "noop",
            key: "precision"
        }
    ));
}

#[test]
fn bad_values_are_errors_that_name_the_key() {
    let cases = [
        ("ste_sign(clip_value=nan)", "clip_value"),
        ("ste_sign(clip_value=-1)", "clip_value"),
        ("ste_sign(clip_value=0)", "clip_value"),
        ("ste_sign(clip_value=inf)", "clip_value"),
        ("ste_heaviside(clip_value=abc)", "clip_value"),
        ("magnitude_aware_sign(clip_value=-0.5)", "clip_value"),
        ("swish_sign(beta=0)", "beta"),
        ("swish_sign(beta=-2)", "beta"),
        ("swish_sign(beta=NaN)", "beta"),
        ("ste_tern(threshold_value=-0.1)", "threshold_value"),
        (
            "ste_tern(ternary_weight_networks=yes)",
            "ternary_weight_networks",
        ),
        ("dorefa(k_bit=0)", "k_bit"),
        ("dorefa(k_bit=25)", "k_bit"),
        ("dorefa(k_bit=2.5)", "k_bit"),
        ("dorefa(mode=gradients)", "mode"),
        ("noop(precision=0)", "precision"),
    ];
    for (spec, want_key) in cases {
        match parse_err(spec) {
            Error::InvalidParameter { key, .. } => assert_eq!(key, want_key, "{spec}"),
            e => panic!("{spec}: {e:?}"),
        }
    }
}

#[test]
fn malformed_specs_are_syntax_errors() {
    for spec in [
        "",
        "ste_sign(",
        "ste_sign(clip_value)",
        "ste_sign(=1)",
        "ste sign",
        "ste_sign(clip_value=1))",
        "(clip_value=1)",
    ] {
        assert!(matches!(parse_err(spec), Error::Syntax { .. }), "{spec:?}");
    }
}

#[test]
fn construction_checks_like_parsing() {
    let bad = [
        Kind::SteSign {
            clip_value: Some(f32::NAN),
        },
        Kind::SteHeaviside {
            clip_value: Some(-1.0),
            unipolar: true,
        },
        Kind::Ede { t: 0.0 },
        Kind::Ede { t: f32::INFINITY },
        Kind::SwishSign { beta: 0.0 },
        Kind::SteTern {
            threshold_value: f32::INFINITY,
            ternary_weight_networks: false,
            clip_value: None,
        },
        Kind::DoReFa {
            k_bit: 25,
            mode: DorefaMode::Weights,
        },
        Kind::NoOp { precision: 0 },
    ];
    for kind in bad {
        assert!(
            matches!(Quantizer::new(kind), Err(Error::InvalidParameter { .. })),
            "{kind:?}"
        );
    }
}

const SENTINEL: f32 = 42.0;

#[test]
fn length_mismatches_leave_the_output_untouched() {
    let q: Quantizer = "magnitude_aware_sign".parse().unwrap();
    let x = [0.5f32; 6];

    let mut y = [SENTINEL; 5];
    let e = q.forward(&x, &[2, 3], &mut y).unwrap_err();
    assert!(
        matches!(
            e,
            Error::ShapeMismatch {
                buffer: "y",
                expected: 6,
                len: 5,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(y, [SENTINEL; 5]);

    let mut y = [SENTINEL; 6];
    let e = q.forward(&x, &[2, 2], &mut y).unwrap_err();
    assert!(
        matches!(
            e,
            Error::ShapeMismatch {
                buffer: "x",
                expected: 4,
                len: 6,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(y, [SENTINEL; 6]);

    let mut dx = [SENTINEL; 6];
    let e = q.backward(&x, &[1.0f32; 7], &[2, 3], &mut dx).unwrap_err();
    assert!(
        matches!(
            e,
            Error::ShapeMismatch {
                buffer: "dy",
                len: 7,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(dx, [SENTINEL; 6]);

    let mut dx = [SENTINEL; 4];
    let e = q.backward(&x, &[1.0f32; 6], &[6], &mut dx).unwrap_err();
    assert!(
        matches!(
            e,
            Error::ShapeMismatch {
                buffer: "dx",
                len: 4,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(dx, [SENTINEL; 4]);

    let e = q.forward_vec(&x, &[3]).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }));
    assert!(e.to_string().contains("[3]"), "{e}");
}

#[test]
fn overflowing_shapes_are_errors() {
    let q: Quantizer = "ste_sign".parse().unwrap();
    let mut y = [SENTINEL; 4];
    let e = q
        .forward(&[0.0f32; 4], &[usize::MAX, 2], &mut y)
        .unwrap_err();
    assert_eq!(e, Error::ShapeOverflow(vec![usize::MAX, 2]));
    assert_eq!(y, [SENTINEL; 4]);
}

#[test]
fn empty_tensors_work_for_every_quantizer() {
    for name in Quantizer::NAMES {
        let spec = if *name == "noop" {
            "noop(precision=1)".to_string()
        } else {
            name.to_string()
        };
        for mode in ["", "(mode=weights)", "(ternary_weight_networks=true)"] {
            let spec = match (mode, *name) {
                ("", _) => spec.clone(),
                ("(mode=weights)", "dorefa") | ("(ternary_weight_networks=true)", "ste_tern") => {
                    format!("{name}{mode}")
                }
                _ => continue,
            };
            let q: Quantizer = spec.parse().unwrap();
            if q.takes_thresholds() {
                continue; // tests/rsign.rs
            }
            for shape in [&[0usize][..], &[3, 0], &[0, 4]] {
                assert_eq!(
                    q.forward_vec::<f32>(&[], shape).unwrap(),
                    Vec::<f32>::new(),
                    "{spec} {shape:?}"
                );
                assert_eq!(
                    q.backward_vec::<f32>(&[], &[], shape).unwrap(),
                    Vec::<f32>::new(),
                    "{spec} {shape:?}"
                );
            }
        }
    }
}

#[test]
fn devices_parse_and_unknown_ones_are_errors() {
    use lowbit::Device;
    assert_eq!("auto".parse::<Device>().unwrap(), Device::Auto);
    assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
    assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda);
    assert_eq!(
        "gpu".parse::<Device>().unwrap_err(),
        Error::UnknownDevice("gpu".into())
    );
}

#[test]
fn asking_for_cuda_where_it_cannot_run_says_why_and_auto_falls_back() {
    use lowbit::{Backend, Device};
    match Backend::new(Device::Cuda) {
        Ok(b) => assert_eq!(b.name(), "cuda"),
        Err(Error::CudaUnavailable(why)) => {
            assert!(!why.is_empty());
            let auto = Backend::new(Device::Auto).unwrap();
            assert_eq!(auto.name(), "cpu");
            assert!(auto.reason().contains(&why), "{} vs {why}", auto.reason());
        }
        Err(e) => panic!("unexpected {e:?}"),
    }
}

#[test]
fn errors_quote_the_value_as_typed() {
    let cases = [
        // f32 rounds these to 0, which the message used to show instead.
        ("ste_sign(clip_value=1e-46)", "1e-46"),
        ("swish_sign(beta=1e-50)", "1e-50"),
        ("ste_tern(threshold_value=-1e-50)", "-1e-50"),
        ("ste_sign(clip_value=-0.0)", "-0.0"),
        ("swish_sign(beta=1e37)", "1e37"),
        ("ede(progress=1.5)", "1.5"),
        ("dorefa(k_bit=025)", "025"),
        ("noop(precision=00)", "00"),
    ];
    for (spec, typed) in cases {
        let e = parse_err(spec);
        assert!(
            matches!(&e, Error::InvalidParameter { value, .. } if value == typed),
            "{spec}: {e:?}"
        );
    }
    // −0 is a threshold of 0 and prints as one.
    let q: Quantizer = "ste_tern(threshold_value=-0)".parse().unwrap();
    assert!(q.to_string().contains("threshold_value=0.0,"), "{q}");
}

#[test]
fn a_comma_alone_is_not_an_argument_list() {
    for spec in ["ste_sign(,)", "ste_sign( , )", "ste_sign(clip_value=1.0,,)"] {
        assert!(
            matches!(parse_err(spec), Error::Syntax { .. }),
            "{spec} parsed"
        );
    }
    assert!("ste_sign(clip_value=1.0,)".parse::<Quantizer>().is_ok());
    assert!("ste_sign()".parse::<Quantizer>().is_ok());
}

#[test]
fn errors_quote_a_huge_spec_in_part() {
    let big = "1".repeat(10 << 20);
    let letters = "a".repeat(10 << 20);
    let cases = [
        format!("ste_sign({big}"),
        format!("ste_sign(clip_value={big})"),
        format!("ste_sign(clip_value=0.{big}x)"),
        format!("x{letters}"),
        format!("ste_sign({letters}=1)"),
        format!("ste_sign(clip_value=1, clip_value={big})"),
        format!("ste_sign(clip_value=1, {letters})"),
    ];
    for spec in &cases {
        let message = parse_err(spec).to_string();
        assert!(
            message.len() < 400,
            "{} bytes: {}…",
            message.len(),
            &message[..200]
        );
    }
    let e = letters.parse::<lowbit::Device>().unwrap_err().to_string();
    assert!(e.len() < 400);
}

/// `swish_sign`'s β is bounded where its f32 gradient stays finite: larger
/// ones (1e37 gave −inf, and 0 where the true gradient is ~1) are refused.
#[test]
fn swish_sign_beta_is_bounded_where_its_gradient_is_finite() {
    use lowbit::MAX_BETA;
    assert!(Quantizer::new(Kind::SwishSign { beta: MAX_BETA }).is_ok());
    for beta in [MAX_BETA.next_up(), 1e37, f32::MAX] {
        assert!(
            matches!(
                Quantizer::new(Kind::SwishSign { beta }),
                Err(Error::InvalidParameter { key: "beta", .. })
            ),
            "beta={beta}"
        );
    }
    assert!(matches!(
        parse_err("swish_sign(beta=1e37)"),
        Error::InvalidParameter { key: "beta", .. }
    ));
    // At the bound, the largest |dy| the bound is stated for, every x.
    let q = Quantizer::new(Kind::SwishSign { beta: MAX_BETA }).unwrap();
    let x: Vec<f32> = (0..20_000).map(|i| (i as f32 - 10_000.0) * 1e-8).collect();
    let dx = q
        .backward_vec(&x, &vec![3.8e30f32; x.len()], &[x.len()])
        .unwrap();
    assert!(dx.iter().all(|g| g.is_finite()));
}
