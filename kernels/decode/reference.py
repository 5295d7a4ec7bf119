"""The specification of the TopK sparse decode, in plain PyTorch (float32 maths, float64 if an input is)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sparse_decode_reference(idx: Tensor, vals: Tensor, W: Tensor) -> Tensor:
    """``y[n] = sum_j vals[n, j] * W[idx[n, j]]``, differentiable in ``vals`` and ``W`` through autograd.

    Example:
        >>> import torch
        >>> W = torch.eye(3)
        >>> sparse_decode_reference(torch.tensor([[0, 2]]), torch.tensor([[1.0, 5.0]]), W)
        tensor([[1., 0., 5.]])
    """
    out_dtype = torch.result_type(vals, W)
    maths = torch.promote_types(out_dtype, torch.float32)  # float32, or float64 when either input is
    N, k = idx.shape
    # embedding_bag never builds the (N, M) code matrix; its autograd gives both gradients sparsely. Flat bags
    # with explicit offsets, because a 2-D idx with k = 0 has no bag stride; an empty bag sums to 0.
    offsets = torch.arange(N, device=idx.device) * k  # (N,)
    y = F.embedding_bag(idx.reshape(-1), W.to(maths), offsets=offsets,
                        per_sample_weights=vals.reshape(-1).to(maths), mode="sum")  # (N, D)
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
    maths = torch.promote_types(torch.result_type(vals, W), torch.float32)
    dY_, W_, vals_ = dY.to(maths), W.to(maths), vals.to(maths)
    dvals = (W_[idx] * dY_[:, None, :]).sum(-1)  # (N, k)
    dW = torch.zeros(W.shape, dtype=maths, device=W.device)  # (M, D)
    dW.index_add_(0, idx.reshape(-1), (vals_[:, :, None] * dY_[:, None, :]).reshape(-1, W.shape[1]))
    return dvals.to(vals.dtype), dW.to(W.dtype)
