"""Hook points: identity modules with dotted names, the analysis API (TransformerLens style).

Every activation an analyst may want passes through a :class:`HookPoint`. A forward hook registered on one may
read the activation or return a replacement. ``hooks(...)`` adds hooks for the span of a ``with`` block and always
removes them; ``run_with_cache`` records activations by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

HookFn = Callable[[Tensor, "HookPoint"], Tensor | None]
"""``fn(activation, hook) -> replacement or None``; ``hook.name`` is the dotted name."""


class HookPoint(nn.Module):
    """Identity module that exposes an activation to hooks.

    Example:
        >>> hp = HookPoint()
        >>> hp.name = "blocks.0.hook_resid_pre"
        >>> handle = hp.add_hook(lambda x, hook: x * 2)
        >>> hp(torch.ones(2)).tolist()
        [2.0, 2.0]
        >>> handle.remove()
    """

    def __init__(self) -> None:
        super().__init__()
        self.name = ""

    def add_hook(self, fn: HookFn) -> torch.utils.hooks.RemovableHandle:
        def wrapped(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor | None:
            return fn(output, self)

        return self.register_forward_hook(wrapped)

    @property
    def active(self) -> bool:
        """True while any hook is attached (lets the model compute optional activations only when wanted)."""
        return bool(self._forward_hooks)

    def forward(self, x: Tensor) -> Tensor:
        return x


class HookedModule(nn.Module):
    """Mixin for the root model: names hook points and runs hooks in a scoped way."""

    def setup_hooks(self) -> None:
        """Give every HookPoint its dotted name; call at the end of ``__init__``."""
        self.hook_dict: dict[str, HookPoint] = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_dict[name] = module

    def hook_names(self) -> list[str]:
        """All hook names, in forward order.

        Example:
            >>> from glassformer.archs import build_model, presets
            >>> "blocks.0.hook_resid_pre" in build_model(presets.get("debug")).hook_names()
            True
        """
        return list(self.hook_dict)

    def _resolve(self, names: str | Iterable[str] | Callable[[str], bool] | None) -> list[str]:
        if names is None:
            return self.hook_names()
        if callable(names):
            return [n for n in self.hook_dict if names(n)]
        names = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in names if n not in self.hook_dict]
        if unknown:
            raise KeyError(f"unknown hook name(s) {unknown}; see model.hook_names() for the {len(self.hook_dict)} available")
        return names

    @contextmanager
    def hooks(self, fwd: Iterable[tuple[str | Callable[[str], bool], HookFn]] = ()) -> Iterator[HookedModule]:
        """Attach forward hooks for the span of a ``with`` block; they are removed even if the block raises.

        Example:
            >>> from glassformer.archs import build_model, presets
            >>> model = build_model(presets.get("debug"))
            >>> zero = lambda x, hook: torch.zeros_like(x)
            >>> with model.hooks([("blocks.0.hook_attn_out", zero)]):
            ...     logits = model(torch.zeros(1, 4, dtype=torch.long))
        """
        handles = []
        try:
            for names, fn in fwd:
                for name in self._resolve(names):
                    handles.append(self.hook_dict[name].add_hook(fn))
            yield self
        finally:
            for h in handles:
                h.remove()

    def run_with_cache(
        self,
        tokens: Tensor,
        names: str | Iterable[str] | Callable[[str], bool] | None = None,
        detach: bool = True,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Run the model and return ``(logits, {hook name: activation})``.

        ``names`` is a name, a list of names, a predicate on names, or None for every hook point.

        Example:
            >>> from glassformer.archs import build_model, presets
            >>> model = build_model(presets.get("debug"))
            >>> logits, cache = model.run_with_cache(torch.zeros(1, 4, dtype=torch.long), names="hook_embed")
            >>> tuple(cache["hook_embed"].shape)
            (1, 4, 64)
        """
        cache: dict[str, Tensor] = {}

        def save(x: Tensor, hook: HookPoint) -> None:
            cache[hook.name] = x.detach() if detach else x

        with self.hooks([(n, save) for n in self._resolve(names)]):
            logits = self(tokens)
        return logits, cache
