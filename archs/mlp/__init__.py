"""MLP variants: one file per variant, each holding its config dataclass and its module.

Every module subclasses :class:`MLP` (``base.py``, the contract the model and the analysis read);
``MLPConfig`` is the union of the variant configs (the type jsonargparse parses ``model.mlp`` into); the
registry maps each ``kind`` to its module and is filled in ``glassformer.archs``. ``tests/archs/test_registry.py``
checks the union and the registry agree; ``tests/archs/test_mlp_contract.py`` checks every registered module
honours the contract.
"""

from glassformer.archs.mlp.base import MLP, MLP_REGISTRY
from glassformer.archs.mlp.dead_latents import DeadLatentTracker
from glassformer.archs.mlp.dense import DenseMLP, DenseMLPConfig
from glassformer.archs.mlp.solu import SoLUMLP, SoLUMLPConfig
from glassformer.archs.mlp.topk import TopKMLP, TopKMLPConfig
from glassformer.archs.mlp.transcoder import Transcoder, TranscoderConfig

MLPConfig = DenseMLPConfig | TopKMLPConfig | SoLUMLPConfig | TranscoderConfig

__all__ = [
    "MLP", "MLP_REGISTRY", "MLPConfig", "DenseMLP", "DenseMLPConfig", "TopKMLP", "TopKMLPConfig", "SoLUMLP",
    "SoLUMLPConfig", "Transcoder", "TranscoderConfig", "DeadLatentTracker",
]
