"""lowbit.torch: larq's cases, bits equal to lowbit's own calls, autograd,
the saved mask, torch.compile and opcheck, and bad input.

Runs on CPU tensors everywhere, and on CUDA tensors too where a GPU and
lowbit's kernels are present (the GPU check).
"""

import json
import pathlib

import numpy as np
import pytest
import torch

import lowbit
import lowbit.torch as lt

ROOT = pathlib.Path(__file__).resolve().parents[2]
CASES = json.loads((ROOT / "tests" / "data" / "larq_reference.json").read_text())[
    "cases"
]

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
# How each dtype's bit patterns are held: in numpy, then in torch.
BITS = {
    torch.float32: (np.uint32, np.int32, torch.int32),
    torch.float16: (np.uint16, np.int16, torch.int16),
    torch.bfloat16: (np.uint16, np.int16, torch.int16),
}

DEVICES = ["cpu"]
if torch.cuda.is_available() and lowbit.has_cuda_kernels():
    DEVICES.append("cuda")

# Every quantizer family, with and without a reduction and a mask.
SPECS = [
    "ste_sign",
    "ste_sign(clip_value=none)",
    "approx_sign",
    "swish_sign(beta=5.0)",
    "ste_heaviside(clip_value=0.5)",
    "ste_heaviside(unipolar=true)",
    "magnitude_aware_sign",
    "ste_tern",
    "ste_tern(ternary_weight_networks=true)",
    "dorefa(k_bit=2)",
    "dorefa(k_bit=3, mode=weights)",
    "noop(precision=2)",
    "ede(t=2.0)",
    "progressive_sign(temperature=0.5)",
]


def spec_of(case):
    params = ", ".join(
        f"{k}={'none' if v is None else v if isinstance(v, str) else json.dumps(v)}"
        for k, v in case["params"].items()
    )
    return f"{case['quantizer']}({params})"


def from_bits(bits, dtype, shape):
    unsigned, signed, _ = BITS[dtype]
    raw = np.array(bits, dtype=unsigned).view(signed)
    return torch.from_numpy(raw).view(dtype).reshape(shape)


def bits_of(t):
    return t.contiguous().view(BITS[t.dtype][2]).cpu().numpy()


def assert_close(got, want, tol, what):
    g, w = got.float().flatten().cpu(), want.float().flatten()
    nan = torch.isnan(w)
    assert torch.equal(torch.isnan(g), nan), f"{what}: NaN positions differ"
    g, w = g[~nan], w[~nan]
    if tol["atol"] == 0 and tol["rtol"] == 0:
        assert np.array_equal(bits_of(g), bits_of(w)), f"{what}: bits differ"
    else:
        bound = tol["atol"] + tol["rtol"] * w.double().abs()
        # Equal values pass first: inf − inf is NaN.
        near = (g.double() - w.double()).abs() <= bound
        assert bool(((g == w) | near).all()), what


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{spec_of(c)}-{c['dtype']}")
def test_larq_reference_case(case, device):
    dtype = DTYPES[case["dtype"]]
    shape = case["shape"]
    x = from_bits(case["x"], dtype, shape).to(device).requires_grad_()
    dy = from_bits(case["dy"], dtype, shape).to(device)
    y = lt.quantize(x, spec_of(case))
    y.backward(dy)
    assert_close(y.detach(), from_bits(case["y"], dtype, shape), case["tolerance"]["y"], "y")
    assert_close(x.grad, from_bits(case["dx"], dtype, shape), case["tolerance"]["dx"], "dx")


def sample(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * 1.5
    # The edges: zeros of both signs, values on the clip, NaN and ±inf.
    flat = x.view(-1)
    flat[:8] = torch.tensor([0.0, -0.0, 1.0, -1.0, 0.5, float("nan"), float("inf"), -float("inf")])
    return x.to(dtype).to(device)


def direct(spec, call, tensors, like):
    """lowbit's own call (the C ABI's, as a C program makes it), on the
    same buffers, bypassing the torch ops."""
    lowbit._lowbit.run(
        lowbit.Spec(spec),
        call,
        {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}[like.dtype],
        [t.data_ptr() for t in tensors],
        list(like.shape),
        None if like.device.type == "cpu" else torch.cuda.current_stream(like.device).cuda_stream,
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=str)
@pytest.mark.parametrize("spec", SPECS)
def test_values_and_gradients_are_lowbits_bits(spec, dtype, device):
    shape = (6, 5, 7)
    x = sample(shape, dtype, device)
    dy = sample(shape, dtype, device, seed=1)
    xg = x.clone().requires_grad_()
    y = lt.quantize(xg, spec)
    y.backward(dy)

    want_y, want_dx = torch.empty_like(x), torch.empty_like(x)
    direct(spec, "forward", [x, want_y], x)
    direct(spec, "backward", [x, dy, want_dx], x)
    assert np.array_equal(bits_of(y.detach()), bits_of(want_y))
    assert np.array_equal(bits_of(xg.grad), bits_of(want_dx))


@pytest.mark.parametrize("device", DEVICES)
def test_rsign_gives_alpha_its_gradient(device):
    x = sample((4, 3, 8), torch.float32, device)
    alpha = torch.linspace(-0.5, 0.5, 8, device=device).requires_grad_()
    dy = sample((4, 3, 8), torch.float32, device, seed=2)
    xg = x.clone().requires_grad_()
    y = lt.rsign(xg, alpha)
    y.backward(dy)

    want_y = torch.empty_like(x)
    want_dx, want_da = torch.empty_like(x), torch.empty_like(alpha)
    direct("rsign", "forward_with_thresholds", [x, alpha.detach(), want_y], x)
    direct("rsign", "backward_with_thresholds", [x, alpha.detach(), dy, want_dx, want_da], x)
    assert np.array_equal(bits_of(y.detach()), bits_of(want_y))
    assert np.array_equal(bits_of(xg.grad), bits_of(want_dx))
    assert np.array_equal(bits_of(alpha.grad), bits_of(want_da))
    # dα_c = −Σ dx over the channel: not zero for this input.
    assert bool((alpha.grad != 0).any())


def test_autograd_through_a_graph_composes_the_calls():
    """Two quantizers in a small graph: autograd's gradient equals the
    chain rule made by hand with lowbit's calls."""
    x = sample((8, 16), torch.float32, "cpu")
    w = torch.linspace(-1, 1, 16)
    xg = x.clone().requires_grad_()
    h = lt.quantize(xg * w, "approx_sign")
    out = (lt.quantize(h * 0.75, "ste_tern") * torch.arange(16.0)).sum()
    out.backward()

    a = (x * w).contiguous()
    h_ = torch.empty_like(a)
    direct("approx_sign", "forward", [a, h_], a)
    b = (h_ * 0.75).contiguous()
    db = torch.empty_like(b)
    direct("ste_tern", "backward", [b, torch.arange(16.0).expand(8, 16).contiguous(), db], b)
    da_in = (db * 0.75).contiguous()
    da = torch.empty_like(a)
    direct("approx_sign", "backward", [a, da_in, da], a)
    assert np.array_equal(bits_of(xg.grad), bits_of(da * w))


def saved_bytes(fn):
    """Bytes of the tensors autograd saves for the backward pass."""
    sizes = []

    def pack(t):
        sizes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(sizes), out


def test_a_maskable_quantizer_saves_one_bit_per_element():
    x = sample((64, 1024), torch.float32, "cpu").requires_grad_()
    masked, y = saved_bytes(lambda: lt.quantize(x, "ste_sign"))
    full, _ = saved_bytes(lambda: lt.quantize(x, "approx_sign"))
    assert full == x.numel() * 4  # approx_sign needs x itself
    assert masked == x.numel() // 8  # the mask: 32 times less
    # And its gradient from the mask is the gradient from x.
    dy = sample((64, 1024), torch.float32, "cpu", seed=3)
    y.backward(dy)
    want = torch.empty_like(x)
    direct("ste_sign", "backward", [x.detach(), dy, want], x)
    assert np.array_equal(bits_of(x.grad), bits_of(want))


def test_magnitude_aware_sign_saves_the_mask_and_its_scale():
    x = sample((32, 64), torch.float16, "cpu").requires_grad_()
    saved, _ = saved_bytes(lambda: lt.quantize(x, "magnitude_aware_sign"))
    assert saved == 32 * 64 // 8 + 64 * 2


@pytest.mark.parametrize("spec", ["ste_sign", "approx_sign", "magnitude_aware_sign"])
def test_module_compiles_without_a_graph_break(spec):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), lt.Quantizer(spec))
    x = torch.randn(4, 16)
    eager = model(x)
    eager.sum().backward()
    want = model[0].weight.grad.clone()
    model.zero_grad()
    # fullgraph: a graph break would be an error.
    compiled = torch.compile(model, fullgraph=True)
    y = compiled(x)
    assert torch.equal(y, eager)
    y.sum().backward()
    assert torch.equal(model[0].weight.grad, want)


def test_quantize_compiles_as_a_function():
    f = torch.compile(lambda x: lt.quantize(x, "ste_tern") * 2, fullgraph=True)
    x = torch.randn(8, 8)
    assert torch.equal(f(x), lt.quantize(x, "ste_tern") * 2)


@pytest.mark.parametrize(
    "op, args, differentiable",
    [
        (lt._quantize, lambda x: (x, "approx_sign"), True),
        (lt._backward, lambda x: (x, x.clone(), "swish_sign"), False),
        (lt._quantize, lambda x: (x, "magnitude_aware_sign"), True),
        (lt._quantize, lambda x: (x, "ste_sign"), True),
        (lt._backward_from_mask, lambda x: (torch.full((1,), 5, dtype=torch.int32),
                                            torch.ones(4), x, "magnitude_aware_sign"), False),
        (lt._rsign_forward, lambda x: (x, torch.zeros(x.shape[-1]), "rsign"), True),
        (lt._rsign_backward, lambda x: (x, torch.zeros(x.shape[-1]), x.clone(), "rsign"), False),
    ],
    ids=["quantize", "backward", "quantize_with_mask", "quantize_with_mask_no_scale",
         "backward_from_mask", "rsign_forward", "rsign_backward"],
)
def test_opcheck(op, args, differentiable):
    # No NaN: opcheck compares outputs with ==.
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(4))
    torch.library.opcheck(op, args(x))
    if differentiable:
        torch.library.opcheck(op, args(x.clone().requires_grad_()))


def test_the_mask_word_matches_lowbits():
    assert [lowbit.mask_words(n) for n in (0, 1, 32, 33)] == [0, 1, 1, 2]
    assert lt._MASK_BITS == 32


def test_a_non_contiguous_input_is_made_contiguous():
    x = sample((8, 6), torch.float32, "cpu")
    assert not x.t().is_contiguous()
    got = lt.quantize(x.t(), "ste_sign")
    assert np.array_equal(bits_of(got), bits_of(lt.quantize(x.t().contiguous(), "ste_sign")))
    # The op itself refuses what it cannot read as a dense buffer.
    with pytest.raises(ValueError, match="not contiguous"):
        lt._quantize(x.t(), "ste_sign")


def test_bad_input_is_a_clear_error():
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="unknown quantizer"):
        lt.quantize(x, "ste_sing")
    with pytest.raises(ValueError):
        lt.Quantizer("ste_sign(clip_value=-1.0)")
    with pytest.raises(TypeError, match="float32, float16 and bfloat16"):
        lt.quantize(x.double(), "ste_sign")
    with pytest.raises(TypeError, match="float32, float16 and bfloat16"):
        lt.quantize(x.int(), "ste_sign")
    with pytest.raises(ValueError, match="rsign needs its per-channel thresholds"):
        lt.quantize(x, "rsign")
    with pytest.raises(ValueError, match="takes no thresholds"):
        lt.rsign(x, torch.zeros(3), "ste_sign")
    with pytest.raises(ValueError, match="`alpha` holds 4 elements, the call needs 3"):
        lt.rsign(x, torch.zeros(4))
    with pytest.raises(ValueError, match="`alpha` is torch.float16"):
        lt.rsign(x, torch.zeros(3, dtype=torch.float16))
    with pytest.raises(ValueError, match="`dy` has shape"):
        lt._backward(x, torch.zeros(3, 4), "ste_sign")
    with pytest.raises(ValueError, match="`mask` holds 2 elements"):
        lt._backward_from_mask(torch.zeros(2, dtype=torch.int32), torch.zeros(0), x, "ste_sign")
    # What only lowbit can tell: a mask of a quantizer that saves none.
    with pytest.raises(ValueError, match="cannot save a 1-bit mask"):
        lt._backward_from_mask(torch.zeros(1, dtype=torch.int32), torch.zeros(0), x, "approx_sign")


def test_the_module_prints_its_spec():
    assert "ste_sign(clip_value=1.0)" in repr(lt.Quantizer("ste_sign"))
