"""The specification of the TopK sparse decode, in plain PyTorch (float32 maths)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from glassformer.kernels._dispatch import upcast


def sparse_decode_reference(idx: Tensor, vals: Tensor, W: Tensor) -> Tensor:
    """``y[n] = sum_j vals[n, j] * W[idx[n, j]]``, differentiable in ``vals`` and ``W`` through autograd.

    Example:
        >>> import torch
        >>> W = torch.eye(3)
        >>> sparse_decode_reference(torch.tensor([[0, 2]]), torch.tensor([[1.0, 5.0]]), W)
        tensor([[1., 0., 5.]])
    """
    out_dtype = torch.result_type(vals, W)
    # embedding_bag never builds the (N, M) code matrix; its autograd gives both gradients sparsely.
    y = F.embedding_bag(idx, upcast(W), per_sample_weights=upcast(vals), mode="sum")  # (N, D)
    return y.to(out_dtype)


def sparse_decode_grads_reference(idx: Tensor, vals: Tensor, W: Tensor, dY: Tensor) -> tuple[Tensor, Tensor]:
    """The two gradients written out, as the kernels compute them: ``(dvals, dW)``.

    ``dvals[n, j] = dY[n] . W[idx[n, j]]`` and ``dW[m] = sum over (n, j) with idx[n, j] = m of vals[n, j] dY[n]``.

    Example:
        >>> import torch
        >>> dv, dW = sparse_decode_grads_reference(torch.tensor([[1]]), torch.tensor([[2.0]]), torch.eye(2),
        ...                                        torch.tensor([[3.0, 4.0]]))
        >>> dv, dW
        (tensor([[4.]]), tensor([[0., 0.],
                [6., 8.]]))
    """
    dY32 = upcast(dY)  # (N, D)
    dvals = (upcast(W)[idx] * dY32[:, None, :]).sum(-1)  # (N, k)
    dW = torch.zeros(W.shape, dtype=dY32.dtype, device=W.device)  # (M, D)
    dW.index_add_(0, idx.reshape(-1), (upcast(vals)[:, :, None] * dY32[:, None, :]).reshape(-1, W.shape[1]))
    return dvals.to(vals.dtype), dW.to(W.dtype)
