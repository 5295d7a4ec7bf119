"""The specification of the |cos|-above-margin orthogonality penalty, in plain PyTorch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from glassformer.kernels._dispatch import upcast

# F.normalize's floor on a row norm, so an all-zero row has cosine 0 with everything instead of NaN.
NORM_EPS = 1e-12


def cos_margin_penalty_reference(W: Tensor, margin: float) -> Tensor:
    """Mean over pairs i<j of ``relu(|cos(w_i, w_j)| - margin)**2`` (0 when M < 2); materialises M x M.

    Example:
        >>> import torch
        >>> cos_margin_penalty_reference(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), 0.5)
        tensor(0.0429)
    """
    M = W.shape[0]
    if M < 2:
        return upcast(W).sum() * 0.0
    U = F.normalize(upcast(W), dim=1, eps=NORM_EPS)  # (M, D)
    cos = U @ U.T  # (M, M)
    upper = torch.ones(M, M, dtype=torch.bool, device=W.device).triu(1)
    excess = torch.relu(cos[upper].abs() - margin)  # (M(M-1)/2,)
    return (excess**2).sum() / (M * (M - 1) / 2)


def max_abs_cos(W: Tensor, chunk: int = 1024) -> Tensor:
    """The largest |cos| between two different rows of ``W`` (0 when M < 2), in row chunks; no gradient.

    Example:
        >>> import torch
        >>> max_abs_cos(torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.0, 2.0]]))
        tensor(0.7071)
    """
    M = W.shape[0]
    best = torch.zeros((), dtype=upcast(W).dtype, device=W.device)
    if M < 2:
        return best
    with torch.no_grad():
        U = F.normalize(upcast(W), dim=1, eps=NORM_EPS)  # (M, D)
        for start in range(0, M, chunk):
            cos = (U[start:start + chunk] @ U.T).abs()  # (chunk, M)
            rows = torch.arange(start, min(start + chunk, M), device=W.device)
            cos[rows - start, rows] = 0.0  # a row with itself is not a pair
            best = torch.maximum(best, cos.max())
    return best
