"""MLP variants: one file per variant, each holding its config dataclass and its module.

``MLPConfig`` is the union of the variant configs (the type jsonargparse parses ``model.mlp`` into); the
registry in ``glassformer.archs`` maps each ``kind`` to its module. ``tests/archs/test_registry.py`` checks
the two agree.
"""

from typing import Union

from glassformer.archs.mlp.dense import DenseMLP, DenseMLPConfig

MLPConfig = Union[DenseMLPConfig]

__all__ = ["MLPConfig", "DenseMLP", "DenseMLPConfig"]
