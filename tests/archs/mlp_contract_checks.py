"""The MLP contract as one check, shared by the registry-wide test and the test of the docs' example variant."""

import torch
from torch import Tensor, nn

from glassformer.archs import MLP
from glassformer.archs.hooks import HookPoint


def _is_own_parameter(module: nn.Module, W: Tensor) -> bool:
    """``W`` is one of the module's parameters or a view of one (same storage), never a copy."""
    return any(W.untyped_storage().data_ptr() == p.untyped_storage().data_ptr() for p in module.parameters())


def check_contract(mlp: MLP, model_cfg) -> None:
    """Assert everything docs/adding-a-variant.md promises about an MLP built for ``model_cfg``."""
    D = model_cfg.d_model
    assert isinstance(mlp, MLP)
    hook = getattr(mlp, mlp.hidden_hook)
    assert isinstance(hook, HookPoint)
    width = mlp.hidden_width
    assert isinstance(width, int) and width > 0
    W_in, W_out, W_skip = mlp.input_weights(), mlp.output_weights(), mlp.skip_weights()
    assert tuple(W_in.shape) == (width, D)
    assert tuple(W_out.shape) == (width, D)
    assert W_skip is None or tuple(W_skip.shape) == (D, D)
    for W in (W_in, W_out) + ((W_skip,) if W_skip is not None else ()):
        assert _is_own_parameter(mlp, W)

    seen = []
    handle = hook.add_hook(lambda x, h: seen.append(x))
    mlp.reset_variant_parameters()
    mlp.on_train_step(0, 10)
    mlp.train()
    x = torch.randn(2, 3, D)
    y = mlp(x)
    handle.remove()
    assert y.shape == x.shape
    assert len(seen) == 1 and tuple(seen[0].shape) == (2, 3, width)
    aux = mlp.aux_losses()
    assert all(isinstance(k, str) and isinstance(v, Tensor) and v.dim() == 0 for k, v in aux.items())
    (y.pow(2).mean() + sum(aux.values())).backward()
    stats = mlp.stats()
    assert all(isinstance(k, str) and type(v) is float for k, v in stats.items())
    mlp.eval()
    with torch.no_grad():
        mlp(x)
    assert mlp.aux_losses() == {}
