"""Orchestration: the layer above ``glassformer.training`` and ``glassformer.analysis`` that runs what a user asks
for across both (analyse a model directory on its own corpus, compare several, run a whole sweep). The command
line (:mod:`glassformer.training.cli`) calls these functions; nothing below this layer imports it.

The sweep (:mod:`.sweep`, which trains) is imported on its own: the analysis side needs no Lightning.

Example:
    >>> from glassformer.training.orchestrate.sweep import PRESETS
    >>> sorted(PRESETS)
    ['paper', 'quick', 'standard']
"""

from glassformer.training.orchestrate.models import analyze_model_dir, compare_models

__all__ = ["analyze_model_dir", "compare_models"]
