"""Conversion of existing models (GPT-2 import, MLP distillation).

Example:
    >>> from glassformer.archs.convert import convert_gpt2_dir
    >>> convert_gpt2_dir("checkpoints/gpt2", "runs/gpt2")  # doctest: +SKIP
    PosixPath('runs/gpt2')
"""

from glassformer.archs.convert.gpt2 import CheckpointError, convert_gpt2_dir, import_gpt2

__all__ = ["CheckpointError", "convert_gpt2_dir", "import_gpt2"]
