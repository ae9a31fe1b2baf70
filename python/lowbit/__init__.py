"""lowbit: larq's binarized and ternary quantizers, bit for bit, in PyTorch.

``lowbit.torch`` holds the ops; ``Spec`` parses lowbit's SPEC strings
(larq's spelling, e.g. ``"ste_sign(clip_value=1.0)"``).
"""

from ._lowbit import Spec, has_cuda_kernels, mask_words

__all__ = ["Spec", "has_cuda_kernels", "mask_words"]
