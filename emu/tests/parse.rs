//! What does not load: an instruction or directive the emulator does not
//! know is a load error naming it and its line, never a skip or a guess.

use cuda_emu::ptx::{self, LoadError};

fn load(body: &str) -> Result<ptx::Module, LoadError> {
    ptx::parse(
        &format!(".version 9.0\n.target sm_90\n.address_size 64\n{body}"),
        (9, 0),
    )
}

fn refused(body: &str, line: u32, words: &[&str]) {
    let e = load(body).expect_err("must not load");
    assert_eq!(e.line, line, "{e}");
    for w in words {
        assert!(e.message.contains(w), "`{w}` not in: {e}");
    }
}

#[test]
fn an_unknown_instruction_names_itself_and_its_line() {
    refused(
        ".visible .entry k() {\n    .reg .b32 %r;\n    frobnicate.b32 %r, %r;\n    ret;\n}",
        6,
        &["frobnicate"],
    );
}

#[test]
fn approximate_and_unrounded_float_instructions_are_refused() {
    let k = |i: &str| format!(".visible .entry k() {{\n .reg .f32 %f;\n {i}\n ret;\n}}");
    refused(&k("div.approx.f32 %f, %f, %f;"), 6, &["hardware-specific"]);
    refused(&k("ex2.approx.f32 %f, %f;"), 6, &["ex2"]);
    // Without .rn, ptxas may contract the multiply and the add into an fma.
    refused(&k("add.f32 %f, %f, %f;"), 6, &["may be fused"]);
    refused(&k("add.rn.f16 %f, %f, %f;"), 6, &["f32 and f64"]);
}

#[test]
fn an_unknown_modifier_is_refused() {
    refused(
        ".visible .entry k() {\n .reg .b32 %r;\n add.cc.u32 %r, %r, %r;\n ret;\n}",
        6,
        &["unsupported modifier `.cc`"],
    );
}

#[test]
fn unknown_directives_and_device_functions_are_refused() {
    refused(".func f() { ret; }", 4, &[".func"]);
    refused(".const .u32 c;", 4, &["`.const`"]);
    refused(
        ".global .u64 p = generic(q);",
        4,
        &["only numeric initializers"],
    );
    refused(
        ".visible .entry k() {\n .local .b8 stack[16];\n ret;\n}",
        5,
        &[".local"],
    );
    refused(".visible .entry k()\n.bogus 3\n{\n ret;\n}", 5, &[".bogus"]);
}

#[test]
fn undeclared_registers_and_labels_are_refused() {
    refused(
        ".visible .entry k() {\n mov.u32 %r9, 1;\n ret;\n}",
        5,
        &["%r9"],
    );
    refused(".visible .entry k() {\n bra $nowhere;\n}", 5, &["$nowhere"]);
    // %r<4> declares %r0 .. %r3.
    refused(
        ".visible .entry k() {\n .reg .b32 %r<4>;\n mov.u32 %r4, 1;\n ret;\n}",
        6,
        &["%r4"],
    );
}

#[test]
fn a_newer_ptx_isa_than_the_driver_reads_is_refused() {
    let src = ".version 9.0\n.target sm_75\n.address_size 64\n";
    let e = ptx::parse(src, (8, 0)).unwrap_err();
    assert!(e.unsupported_version, "{e}");
    assert!(
        e.message.contains("9.0") && e.message.contains("8.0"),
        "{e}"
    );
    assert!(ptx::parse(&src.replace("9.0", "8.0"), (8, 0)).is_ok());
}

#[test]
fn kernels_declare_their_parameters_and_limits() {
    let m = load(
        ".visible .entry k(\n .param .align 8 .b8 k_param_0[40],\n .param .u64 .ptr .global .align 4 k_param_1,\n .param .u32 k_param_2\n)\n.maxntid 256, 1, 1\n{\n ret;\n}",
    )
    .unwrap();
    let k = m.kernel("k").unwrap();
    let layout: Vec<(usize, usize)> = k.params.iter().map(|p| (p.offset, p.size)).collect();
    assert_eq!(layout, [(0, 40), (40, 8), (48, 4)]);
    assert_eq!(k.param_bytes, 52);
    assert_eq!(k.max_ntid, Some([256, 1, 1]));
    assert_eq!(m.version, (9, 0));
    assert_eq!(m.target, 90);
}

#[test]
fn inline_asm_scopes_and_comments_load() {
    let m = load(
        "// a comment\n.visible .entry k()\n{\n .reg .b16 %rs<2>;\n .reg .f32 %f<2>;\n /* block\n comment */\n // begin inline asm\n { cvt.f32.f16 %f1, %rs1;}\n // end inline asm\n { .reg .b32 tmp; mov.b32 tmp, %f1; }\n ret;\n}",
    )
    .unwrap();
    assert_eq!(m.kernels[0].code.len(), 4); // cvt, mov, ret, and the closing ret
}
