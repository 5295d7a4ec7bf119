"""glassformer.kernels: Triton kernels for the constraints, each beside its PyTorch reference.

Every op is one public function taking ``impl="auto" | "triton" | "reference"``: "auto" runs Triton on CUDA
tensors whose shapes the kernels support and the reference (float32 maths, the specification) elsewhere, except
the two selections (``topk_activation``, ``magnitude_prune_``), whose "auto" on CPU runs their ``"select"`` path:
bit-identical to the reference, by partial selection instead of sorting (docs/kernels.md).
Importing this package never imports triton; the kernels load on first use.

| function | use |
| --- | --- |
| ``sparse_decode(idx, vals, W)`` | TopK / BatchTopK / JumpReLU transcoder decoders |
| ``topk_activation(x, k, use_abs)`` | TopK MLPs, AbsTopK activation sparsity |
| ``magnitude_prune_(W, keep, min_per_row)`` | weight-sparsity projection after each optimizer step |
| ``cos_margin_penalty(W, margin)``, ``max_abs_cos(W)`` | orthogonality penalty and its logged maximum |
| ``jumprelu(x, threshold, bandwidth)``, ``heaviside_step(...)`` | JumpReLU latents and their L0 penalty |
"""

from glassformer.kernels._dispatch import IMPLS
from glassformer.kernels.decode import sparse_decode
from glassformer.kernels.heaviside import heaviside_step, jumprelu
from glassformer.kernels.ortho import cos_margin_penalty, max_abs_cos
from glassformer.kernels.prune import magnitude_prune_
from glassformer.kernels.topk import topk_activation

__all__ = [
    "IMPLS",
    "sparse_decode",
    "topk_activation",
    "magnitude_prune_",
    "cos_margin_penalty",
    "max_abs_cos",
    "jumprelu",
    "heaviside_step",
]
