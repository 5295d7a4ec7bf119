"""``glassformer analyze``: the circuits of one model directory, added to its analysis.json."""

from __future__ import annotations

import time
from pathlib import Path

from glassformer.analysis import AnalysisConfig, format_table
from glassformer.training.cli.plugins import load_plugins
from glassformer.training.orchestrate import analyze_model_dir


def analyze(
    model_dir: str,
    analysis: AnalysisConfig = AnalysisConfig(),
    plugins: list[str] | str | None = None,
) -> None:
    """Find the circuits behind the task suite and add them to analysis.json in the model directory.

    Every run is kept, under a key holding everything that changes its numbers (level, method, ablation and a
    hash of the whole analysis config): analysing again with other tasks, pairs or seed adds to the file.
    The analysis settings may be given without their prefix: --level node is --analysis.level node.

    Args:
        model_dir: A model directory.
        analysis: The analysis settings (glassformer.analysis.AnalysisConfig). Levels: component (embeddings,
            heads with q/k/v inputs, MLPs, logits; edges between them) or node (residual, q/k/v and neuron or
            transcoder-latent channels). Methods: component auto (default: exact patching up to
            --exact_max_edges edges, eap-ig-gl+exact above), exact, eap, eap-ig, eap-ig-gl, eap-ig-act,
            eap-ig-gl+exact or acdc
            (threshold --acdc_threshold, KL in nats); node mask, eap-ig or eap (default mask). Ablations: component mean,
            position-mean, zero or corrupt; node mean or zero. --tasks takes one name or a list; --mask.steps sets
            the mask training.
        plugins: Modules to import first, which register tasks of their own (docs/adding-a-task.md).
    """
    load_plugins(plugins)
    start = time.perf_counter()
    result = analyze_model_dir(model_dir, analysis)
    print(format_table(result))
    print(f"wrote {Path(model_dir) / 'analysis.json'} ({result['latest']}) in {time.perf_counter() - start:.0f} s")
