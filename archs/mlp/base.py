"""The MLP contract: what the Transformer, training and analysis may read from any MLP variant.

Every registered variant subclasses :class:`MLP`; the registry (:data:`MLP_REGISTRY`) refuses a class that does
not, or that leaves an abstract method unwritten. Nothing outside the variant probes for attributes: the model
calls ``aux_losses`` / ``stats`` / ``on_train_step`` / ``reset_variant_parameters`` on every MLP (the defaults
below do nothing), and analysis reads the hidden units and the weights through the methods below.

| member | what | default |
| --- | --- | --- |
| ``hidden_hook`` | name of the HookPoint attribute holding the neurons / latents, (B, T, width) | ``"hook_post"`` |
| ``hidden_width`` | number of neurons / latents | rows of ``output_weights()`` |
| ``input_weights()`` | (width, d_model): row i is what unit i reads from the MLP input | abstract |
| ``output_weights()`` | (width, d_model): row i is what unit i writes | abstract |
| ``skip_weights()`` | (d_model_out, d_model_in) linear path around the units, or None | None |
| ``aux_losses()`` | named loss terms of the last training forward, coefficients included | ``{}`` |
| ``stats()`` | floats to log (e.g. ``l0``, ``dead_fraction``) | ``{}`` |
| ``on_train_step(step, max_steps)`` | called once per optimizer step, before the forward | no-op |
| ``reset_variant_parameters()`` | re-initialise what the model's generic init got wrong | no-op |

The constructor is ``(cfg, model_cfg)``: the variant's config dataclass and the whole ``ModelConfig``.
``docs/adding-a-variant.md`` walks through writing one.
"""

from __future__ import annotations

import abc
from typing import ClassVar

from torch import Tensor, nn

from glassformer.archs.registry import Registry


class MLP(nn.Module, abc.ABC):
    """Base class of every MLP variant: ``forward`` maps (B, T, d_model) to (B, T, d_model).

    Example:
        >>> import torch
        >>> from glassformer.archs import ModelConfig
        >>> from glassformer.archs.mlp import DenseMLP, DenseMLPConfig
        >>> mlp = DenseMLP(DenseMLPConfig(), ModelConfig(d_model=8, n_heads=2, d_mlp=16))
        >>> isinstance(mlp, MLP), mlp.hidden_hook, mlp.hidden_width, tuple(mlp.input_weights().shape)
        (True, 'hook_post', 16, (16, 8))
        >>> mlp.aux_losses(), mlp.stats(), mlp.skip_weights()
        ({}, {}, None)
    """

    hidden_hook: ClassVar[str] = "hook_post"
    """Name of the HookPoint attribute whose activation (B, T, hidden_width) holds the neurons or latents: the
    nodes node-level analysis ablates. ``hook_post`` for MLPs with neurons, ``hook_latents`` for transcoders."""

    @abc.abstractmethod
    def forward(self, x: Tensor) -> Tensor:
        """(B, T, d_model) -> (B, T, d_model)."""

    @abc.abstractmethod
    def input_weights(self) -> Tensor:
        """Input directions, one row per hidden unit: (hidden_width, d_model)."""

    @abc.abstractmethod
    def output_weights(self) -> Tensor:
        """Output directions, one row per hidden unit: (hidden_width, d_model)."""

    @property
    def hidden_width(self) -> int:
        """Number of neurons or latents (works on the meta device: only the shape is read)."""
        return int(self.output_weights().shape[0])

    def skip_weights(self) -> Tensor | None:
        """The linear path around the hidden units, (d_model_out, d_model_in), or None when there is none."""
        return None

    def aux_losses(self) -> dict[str, Tensor]:
        """Named auxiliary loss terms of the last training forward, each with its coefficient; empty in eval."""
        return {}

    def stats(self) -> dict[str, float]:
        """What the variant controls, as floats for logging (the model prefixes them ``sparsity/``)."""
        return {}

    def on_train_step(self, step: int, max_steps: int) -> None:
        """Called by the model once per optimizer step, before the forward (schedules, warmups)."""

    def reset_variant_parameters(self) -> None:
        """Called after the model's generic initialisation (normal weights, zero biases) to override it."""


MLP_REGISTRY: Registry[MLP] = Registry("MLP kind", base=MLP)
"""MLP kind -> (config class, module class). Filled in ``glassformer.archs.__init__``, the one place variants are
registered; it lives here, beside the contract it enforces, so the Transformer and the config can import it
without importing the package that fills it."""
