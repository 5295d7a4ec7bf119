"""Conversion of existing models (GPT-2 import, Hugging Face export, MLP distillation).

Example:
    >>> from glassformer.archs.convert import convert_gpt2_dir
    >>> convert_gpt2_dir("checkpoints/gpt2", "runs/gpt2")  # doctest: +SKIP
    PosixPath('runs/gpt2')
    >>> export_hf("runs/tiny", "exports/tiny")  # doctest: +SKIP
    PosixPath('exports/tiny')
    >>> from glassformer.archs import TranscoderConfig, load_model_dir
    >>> new, report = convert_mlps(load_model_dir("runs/gpt2"), TranscoderConfig(k=32), tokens)  # doctest: +SKIP
"""

from glassformer.archs.convert.distill import convert_mlps, fvu
from glassformer.archs.convert.gpt2 import CheckpointError, convert_gpt2_dir, import_gpt2
from glassformer.archs.convert.hf_export import ExportError, export_hf, hf_export_blockers
from glassformer.archs.convert.splice import ce_recovered, next_token_loss, splice_report

__all__ = ["CheckpointError", "convert_gpt2_dir", "import_gpt2", "ExportError", "export_hf", "hf_export_blockers",
           "convert_mlps", "splice_report", "fvu", "ce_recovered", "next_token_loss"]
