"""The ``glassformer`` command line: jsonargparse over typed functions.

Each command is a plain function whose typed signature is the CLI schema: every config field can be set in a
YAML file (``--config``) or by a flag (``--model.d_model 128``). Heavy modules (Lightning, datasets, the analysis
package) are imported only when their command runs.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from glassformer.archs import ModelConfig
from glassformer.training.config import DataConfig, OptimConfig, TrainerConfig

log = logging.getLogger("glassformer")


def train(
    model: ModelConfig = ModelConfig(),
    data: DataConfig = DataConfig(),
    optim: OptimConfig = OptimConfig(),
    trainer: TrainerConfig = TrainerConfig(),
    out: str = "runs/latest",
    resume: bool = False,
) -> None:
    """Train a model and write its model directory.

    Args:
        model: Model shape and variant (see configs/*.yaml).
        data: Training corpus (default: the Python standard library).
        optim: Optimiser and learning-rate schedule.
        trainer: Steps, batch size, logging, devices.
        out: Model directory to write (Lightning checkpoints and logs go under it).
        resume: Continue from OUT/checkpoints/last.ckpt.
    """
    from glassformer.training.train import fit

    path = fit(model, data, optim, trainer, out, resume=resume)
    from glassformer.archs import read_training

    final = read_training(path).get("final", {})
    print(f"model directory: {path}")
    print(f"validation loss {final.get('loss/val', float('nan')):.4f} nats/token "
          f"(unigram entropy of the corpus {final.get('unigram_entropy', float('nan')):.4f})")


def evaluate(
    model_dir: str,
    data: DataConfig | None = None,
    batches: int = 50,
    batch_size: int = 16,
) -> None:
    """Validation loss and perplexity of a model directory on the corpus it was trained on, or on ``--data``.

    Args:
        model_dir: A model directory written by `glassformer train`.
        data: Corpus to evaluate on; default: the corpus recorded in the model's training.json.
        batches: Validation batches (fixed windows).
        batch_size: Windows per batch.
    """
    from glassformer.training.evaluate import evaluate_model_dir

    result = evaluate_model_dir(model_dir, data, batches=batches, batch_size=batch_size)
    print(f"validation loss {result['loss']:.4f} nats/token, perplexity {result['perplexity']:.2f} "
          f"over {result['tokens']} tokens; unigram entropy {result['unigram_entropy']:.4f}")


def generate(
    model_dir: str,
    prompt: str = "",
    max_new_tokens: int = 100,
    temperature: float = 0.8,
    top_k: int | None = 50,
    seed: int = 0,
) -> None:
    """Sample a continuation of ``--prompt`` from a model directory.

    Args:
        model_dir: A model directory.
        prompt: Text to continue (empty: start from the end-of-text token).
        max_new_tokens: Tokens to generate.
        temperature: Softmax temperature; 0 is greedy.
        top_k: Sample among the k most likely tokens (null: all).
        seed: Seed of the sampler.
    """
    import torch

    from glassformer.archs import load_model_dir
    from glassformer.training.generate import sample
    from glassformer.training.tokenizer import EOT, load_tokenizer

    model = load_model_dir(model_dir).eval()
    tok = load_tokenizer(model_dir)
    ids = tok.encode(prompt).ids if prompt else [tok.token_to_id(EOT)]
    gen = torch.Generator().manual_seed(seed)
    out = sample(model, torch.tensor([ids]), max_new_tokens, temperature, top_k, gen)
    print(tok.decode(out[0].tolist(), skip_special_tokens=True) if prompt else
          tok.decode(out[0, 1:].tolist(), skip_special_tokens=True))


def analyze(
    model_dir: str,
    tasks: list[str] | None = None,
    method: str = "eap-ig",
    ablation: str = "mean",
    n_pairs: int = 64,
    seed: int = 0,
    controls: bool = True,
    corpus_windows: int = 64,
) -> None:
    """Find the circuits behind the task suite and write analysis.json into the model directory.

    Args:
        model_dir: A model directory.
        tasks: Task names (default: every task the model's tokenizer supports).
        method: Circuit discovery method.
        ablation: How edges outside the circuit are removed: mean, zero or corrupt.
        n_pairs: Minimal pairs per task.
        seed: Seed of task generation.
        controls: Also measure a random-init model and shuffled labels.
        corpus_windows: Corpus windows used for mean ablation and validation loss.
    """
    from glassformer.analysis.analyze import analyze as run_analysis
    from glassformer.analysis.analyze import format_table
    from glassformer.training.evaluate import corpus_windows_for

    corpus, val = corpus_windows_for(model_dir, corpus_windows)
    result = run_analysis(model_dir, tasks=tasks, method=method, ablation=ablation, corpus_tokens=corpus,
                          val_tokens=val, n_pairs=n_pairs, seed=seed, controls=controls)
    print(format_table(result))
    print(f"wrote {Path(model_dir) / 'analysis.json'}")


COMMANDS = {"train": train, "eval": evaluate, "generate": generate, "analyze": analyze}

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, FileNotFoundError)


def build_parser():
    """The parser ``main`` uses (jsonargparse over COMMANDS), for tests and for tools that inspect the schema.

    Example:
        >>> cfg = build_parser().parse_args(["train", "--model.d_model", "64"])
        >>> cfg.train.model.d_model
        64
    """
    from jsonargparse import auto_parser

    return auto_parser(COMMANDS, as_positional=True)


UNION_FIELDS = ("--model.mlp",)
"""Flags whose type is a union of dataclasses (the MLP variant, chosen by ``kind``)."""


def merge_union_flags(argv: list[str]) -> list[str]:
    """Rewrite ``--model.mlp.k 16`` into the mapping form ``--model.mlp '{"k": 16}'``.

    jsonargparse resolves a dotted flag under a union of dataclasses against the first member that has the field,
    silently dropping the ``kind`` (and the other values) that a YAML file set; the mapping form merges into the
    current value instead. Values are read as YAML scalars, as jsonargparse itself would read them.

    Example:
        >>> merge_union_flags(["train", "--model.mlp.k", "16", "--model.mlp.skip=true"])
        ['train', '--model.mlp', '{"k": 16, "skip": true}']
    """
    import json

    import yaml

    out: list[str] = []
    merged: dict[str, dict] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        prefix = next((p for p in UNION_FIELDS if arg.startswith(p + ".")), None)
        if prefix is None:
            out.append(arg)
            i += 1
            continue
        key, eq, value = arg[len(prefix) + 1 :].partition("=")
        if not eq:
            if i + 1 >= len(argv):
                raise ValueError(f"{arg} needs a value")
            value, i = argv[i + 1], i + 1
        i += 1
        if prefix not in merged:
            merged[prefix] = {}
            out.extend([prefix, ""])  # placeholder, filled below, at the position of the first such flag
        merged[prefix][key] = yaml.safe_load(value)
    for prefix, values in merged.items():
        out[out.index(prefix) + 1] = json.dumps(values)
    return out


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``glassformer`` console script.

    Example:
        >>> main(["train", "--config", "configs/debug.yaml", "--out", "runs/debug"])  # doctest: +SKIP
    """
    from jsonargparse import CLI

    logging.basicConfig(level=logging.INFO, format="glassformer: %(message)s")
    try:
        args = merge_union_flags(list(sys.argv[1:] if argv is None else argv))
        CLI(COMMANDS, args=args, as_positional=True)
    except USER_ERRORS as e:
        if os.environ.get("GLASSFORMER_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"glassformer: error: {msg}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
