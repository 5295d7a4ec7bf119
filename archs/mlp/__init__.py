"""MLP variants: one file per variant, each holding its config dataclass and its module.

``MLPConfig`` is the union of the variant configs (the type jsonargparse parses ``model.mlp`` into); the
registry in ``glassformer.archs`` maps each ``kind`` to its module. ``tests/archs/test_registry.py`` checks
the two agree.
"""

from glassformer.archs.mlp.dense import DenseMLP, DenseMLPConfig
from glassformer.archs.mlp.solu import SoLUMLP, SoLUMLPConfig
from glassformer.archs.mlp.topk import TopKMLP, TopKMLPConfig
from glassformer.archs.mlp.transcoder import DeadLatentTracker, Transcoder, TranscoderConfig

MLPConfig = DenseMLPConfig | TopKMLPConfig | SoLUMLPConfig | TranscoderConfig

__all__ = [
    "MLPConfig", "DenseMLP", "DenseMLPConfig", "TopKMLP", "TopKMLPConfig", "SoLUMLP", "SoLUMLPConfig",
    "Transcoder", "TranscoderConfig", "DeadLatentTracker",
]
