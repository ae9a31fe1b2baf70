"""lowbit's quantizers as PyTorch custom ops, with autograd.

``quantize(x, spec)`` gives larq's forward and, through autograd, larq's
gradient: bit for bit the numbers of lowbit's Rust and C calls. CPU tensors
run on lowbit's CPU path; CUDA tensors run lowbit's kernels on the tensor's
device, on ``torch.cuda.current_stream()``, with no copy and no sync.

Where the quantizer's gradient needs only one bit per element (the
straight-through estimators), the op saves a 1-bit mask for the backward
pass instead of ``x``: 32 times less memory held between the passes for an
``float32`` input.

The ops are registered with ``torch.library.custom_op`` (torch 2.4 and
later), so ``torch.compile`` keeps them in its graph and
``torch.library.opcheck`` passes.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ._lowbit import Spec, run

__all__ = ["Quantizer", "quantize", "rsign", "Spec"]

# The C ABI's dtype codes (capi/include/lowbit.h).
_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def _dtype(t: Tensor) -> int:
    try:
        return _DTYPES[t.dtype]
    except KeyError:
        raise TypeError(
            f"lowbit takes float32, float16 and bfloat16 tensors, not {t.dtype}"
        ) from None


def _stream(t: Tensor) -> Optional[int]:
    """The raw stream of the work on ``t``'s device; ``None`` on the CPU."""
    if t.device.type == "cpu":
        return None
    if t.device.type == "cuda":
        return torch.cuda.current_stream(t.device).cuda_stream
    raise ValueError(f"lowbit runs on CPU and CUDA tensors, not on {t.device}")


def _check(name: str, t: Tensor, like: Optional[Tensor] = None, numel=None) -> None:
    """What the C ABI cannot see behind a pointer: the layout, the device,
    the dtype and the element count of each buffer."""
    if not t.is_contiguous():
        raise ValueError(f"`{name}` is not contiguous; call .contiguous() first")
    if like is not None and (t.device != like.device or t.dtype != like.dtype):
        raise ValueError(
            f"`{name}` is {t.dtype} on {t.device}, `x` is {like.dtype} on {like.device}"
        )
    if like is not None and numel is None and t.shape != like.shape:
        raise ValueError(f"`{name}` has shape {tuple(t.shape)}, `x` {tuple(like.shape)}")
    if numel is not None and t.numel() != numel:
        raise ValueError(f"`{name}` holds {t.numel()} elements, the call needs {numel}")


def _channels(x: Tensor):
    return x.shape[-1] if x.dim() > 0 else 1


def _run(spec: str, call: str, tensors: Sequence[Tensor], x: Tensor) -> None:
    run(
        Spec(spec),
        call,
        _dtype(x),
        [t.data_ptr() for t in tensors],
        list(x.shape),
        _stream(x),
    )


# Elements per mask word: `lowbit::MASK_BITS`. Written out so that fake
# tensors with symbolic sizes can be sized without a call into Rust.
_MASK_BITS = 32


def _words(x: Tensor):
    return (x.numel() + _MASK_BITS - 1) // _MASK_BITS


def _scale_len(x: Tensor, spec: str):
    return _channels(x) if Spec(spec).saves_scale() else 0


# Masks are u32 words; torch's int32 holds the same bits and every backend
# has it.
_MASK_DTYPE = torch.int32


@torch.library.custom_op("lowbit::quantize", mutates_args=())
def _quantize(x: Tensor, spec: str) -> tuple[Tensor, Tensor, Tensor]:
    """``y``, and what the backward pass needs besides ``dy``: the 1-bit mask
    and the scale where the quantizer saves them, else nothing (it keeps
    ``x``)."""
    _check("x", x)
    y = torch.empty_like(x)
    if not Spec(spec).supports_mask():
        _run(spec, "forward", [x, y], x)
        return y, _no_mask(x), x.new_empty(0)
    mask = torch.empty(_words(x), dtype=_MASK_DTYPE, device=x.device)
    scale = x.new_empty(_scale_len(x, spec))
    _run(spec, "forward_with_mask", [x, y, mask, scale], x)
    return y, mask, scale


def _no_mask(x: Tensor) -> Tensor:
    return torch.empty(0, dtype=_MASK_DTYPE, device=x.device)


@torch.library.custom_op("lowbit::backward", mutates_args=())
def _backward(x: Tensor, dy: Tensor, spec: str) -> Tensor:
    _check("x", x)
    _check("dy", dy, x)
    dx = torch.empty_like(x)
    _run(spec, "backward", [x, dy, dx], x)
    return dx


@torch.library.custom_op("lowbit::backward_from_mask", mutates_args=())
def _backward_from_mask(mask: Tensor, scale: Tensor, dy: Tensor, spec: str) -> Tensor:
    _check("dy", dy)
    _check("mask", mask, numel=_words(dy))
    _check("scale", scale, dy, numel=_scale_len(dy, spec))
    if mask.dtype != _MASK_DTYPE or mask.device != dy.device:
        raise ValueError(f"`mask` is {mask.dtype} on {mask.device}, not int32 on {dy.device}")
    dx = torch.empty_like(dy)
    _run(spec, "backward_from_mask", [mask, scale, dy, dx], dy)
    return dx


@torch.library.custom_op("lowbit::rsign_forward", mutates_args=())
def _rsign_forward(x: Tensor, alpha: Tensor, spec: str) -> Tensor:
    _check("x", x)
    _check("alpha", alpha, x, numel=_channels(x))
    y = torch.empty_like(x)
    _run(spec, "forward_with_thresholds", [x, alpha, y], x)
    return y


@torch.library.custom_op("lowbit::rsign_backward", mutates_args=())
def _rsign_backward(
    x: Tensor, alpha: Tensor, dy: Tensor, spec: str
) -> tuple[Tensor, Tensor]:
    _check("x", x)
    _check("alpha", alpha, x, numel=_channels(x))
    _check("dy", dy, x)
    dx = torch.empty_like(x)
    dalpha = torch.empty_like(alpha)
    _run(spec, "backward_with_thresholds", [x, alpha, dy, dx, dalpha], x)
    return dx, dalpha


# What each op returns, for torch.compile's and opcheck's fake tensors.
@_quantize.register_fake
def _(x, spec):
    if not Spec(spec).supports_mask():
        return torch.empty_like(x), _no_mask(x), x.new_empty(0)
    return (
        torch.empty_like(x),
        x.new_empty(_words(x), dtype=_MASK_DTYPE),
        x.new_empty(_scale_len(x, spec)),
    )


@_backward.register_fake
def _(x, dy, spec):
    return torch.empty_like(x)


@_backward_from_mask.register_fake
def _(mask, scale, dy, spec):
    return torch.empty_like(dy)


@_rsign_forward.register_fake
def _(x, alpha, spec):
    return torch.empty_like(x)


@_rsign_backward.register_fake
def _(x, alpha, dy, spec):
    return torch.empty_like(x), torch.empty_like(alpha)


# Autograd: a quantizer that saves a mask keeps it (and its scale) for the
# backward pass, the others keep x. The spec is parsed here, not in
# `quantize`, because torch.compile traces `quantize` and cannot trace into
# lowbit's native code; it runs this with the op, as ordinary Python.
def _quantize_setup(ctx, inputs, output):
    x, spec = inputs
    _, mask, scale = output
    ctx.spec = spec
    ctx.masked = Spec(spec).supports_mask()
    ctx.save_for_backward(*((mask, scale) if ctx.masked else (x,)))
    ctx.mark_non_differentiable(mask, scale)


def _quantize_grad(ctx, dy, _dmask, _dscale):
    dy = dy.contiguous()
    if ctx.masked:
        mask, scale = ctx.saved_tensors
        return _backward_from_mask(mask, scale, dy, ctx.spec), None
    (x,) = ctx.saved_tensors
    return _backward(x, dy, ctx.spec), None


_quantize.register_autograd(_quantize_grad, setup_context=_quantize_setup)


def _rsign_setup(ctx, inputs, output):
    x, alpha, spec = inputs
    ctx.save_for_backward(x, alpha)
    ctx.spec = spec


def _rsign_grad(ctx, dy):
    x, alpha = ctx.saved_tensors
    dx, dalpha = _rsign_backward(x, alpha, dy.contiguous(), ctx.spec)
    return dx, dalpha, None


_rsign_forward.register_autograd(_rsign_grad, setup_context=_rsign_setup)


def _text(spec: Union[str, Spec]) -> str:
    return spec if isinstance(spec, str) else spec.text


def quantize(x: Tensor, spec: Union[str, Spec]) -> Tensor:
    """``y = q(x)`` for the quantizer ``spec`` names, with larq's gradient.

    ``x`` is a float32, float16 or bfloat16 tensor on the CPU or a CUDA
    device; a non-contiguous one is made contiguous first. The channels
    (``magnitude_aware_sign``'s) are the last axis. A bad SPEC is a
    ``ValueError`` with lowbit's message; ``rsign`` needs its thresholds:
    use :func:`rsign`.
    """
    _dtype(x)
    return _quantize(x.contiguous(), _text(spec))[0]


def rsign(x: Tensor, alpha: Tensor, spec: Union[str, Spec] = "rsign") -> Tensor:
    """ReActNet's ``sign(x − α_c)``, ``α`` one threshold per channel (the
    last axis of ``x``), with the gradients of ``x`` and ``α``."""
    _dtype(x)
    return _rsign_forward(x.contiguous(), alpha.contiguous(), _text(spec))


class Quantizer(torch.nn.Module):
    """``quantize(x, spec)`` as a module.

    >>> import torch, lowbit.torch as lt
    >>> lt.Quantizer("ste_sign")(torch.tensor([-0.5, 0.0, 2.0]))
    tensor([-1.,  1.,  1.])
    """

    def __init__(self, spec: Union[str, Spec]):
        super().__init__()
        # Parsed now, so that a bad SPEC fails here; kept as its text,
        # which torch.compile treats as a constant.
        self.spec = spec if isinstance(spec, Spec) else Spec(spec)
        self.text = self.spec.text

    def forward(self, x: Tensor) -> Tensor:
        return _quantize(x.contiguous(), self.text)[0]

    def extra_repr(self) -> str:
        return repr(self.text)
