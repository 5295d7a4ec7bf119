"""``glassformer export``: a model directory as a folder other tools open (Hugging Face transformers)."""

from __future__ import annotations

from typing import Literal

from glassformer.training.checks import check_model_dir, check_writable


def export(
    model_dir: str,
    out: str | None = None,
    format: Literal["hf"] = "hf",  # noqa: A002  (the flag is --format)
    overwrite: bool = False,
) -> None:
    """Write a dense GPT-2-style model as a Hugging Face folder that transformers opens offline.

    `transformers.AutoModelForCausalLM.from_pretrained(OUT)` and `AutoTokenizer.from_pretrained(OUT)` read it;
    TransformerLens and the tools built on transformers start from there (docs/export.md). A model whose
    constraints transformers' GPT-2 cannot compute (transcoder, TopK or SoLU MLPs, activation sparsity, RMSNorm,
    rotary positions, attention-only) is refused before anything is written, with the setting named.

    Args:
        model_dir: A glassformer model directory.
        out: Folder to write (refused when it exists and is not empty, unless --overwrite replaces an earlier
            export).
        format: hf (a transformers GPT-2 folder).
        overwrite: Replace an earlier export at OUT.
    """
    from glassformer.archs.convert import export_hf

    if out is None:
        raise ValueError("--out DIR is required: the folder to write the export to")
    if format != "hf":
        raise ValueError(f"--format {format!r} is not allowed: expected hf")
    check_model_dir(model_dir, recorded_data=False)
    check_writable(out)
    path = export_hf(model_dir, out, overwrite=overwrite)
    print(f"wrote {path} (open it with transformers.AutoModelForCausalLM.from_pretrained({str(path)!r}))")
