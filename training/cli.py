"""The ``glassformer`` command line: jsonargparse over typed functions.

Each command is a plain function whose typed signature is the CLI schema: every config field can be set in a
YAML file (``--config``) or by a flag (``--model.d_model 128``). Heavy modules (Lightning, datasets, the analysis
package) are imported only when their command runs.

Exit status: 0 done; 1 training diverged (the message names the step, the quantity and the last good checkpoint);
2 a bad flag, config, file or model directory (the message names it; ``GLASSFORMER_DEBUG=1`` shows the traceback);
130 (Ctrl-C) or 143 (SIGTERM): training stopped after writing ``OUT/checkpoints/last.ckpt``, and the message gives
the command that resumes it (the same command with ``--resume true``).
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
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
        resume: Continue from OUT/checkpoints/last.ckpt exactly where it stopped (after a crash, SIGTERM or Ctrl-C).
    """
    from lightning.pytorch.utilities import rank_zero_only

    from glassformer.training.guards import TrainingInterrupted
    from glassformer.training.train import fit

    try:
        path = fit(model, data, optim, trainer, out, resume=resume)
    except TrainingInterrupted as e:
        if rank_zero_only.rank == 0:  # under DDP every process gets here; one message is enough
            print(f"glassformer: {e}\nglassformer: resume with:\n  {resume_command()}", file=sys.stderr, flush=True)
        sys.exit(128 + e.signum)
    if rank_zero_only.rank != 0:
        return
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

    check_model_dir(model_dir, recorded_data=data is None)
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
    check_model_dir(model_dir, recorded_data=False)
    print(sample_text(model_dir, prompt, max_new_tokens, temperature, top_k, seed))


def sample_text(model_dir: str | Path, prompt: str = "", max_new_tokens: int = 100, temperature: float = 0.8,
                top_k: int | None = 50, seed: int = 0) -> str:
    """The prompt and a sampled continuation from a model directory, decoded (what `glassformer generate` prints).

    Example:
        >>> print(sample_text("runs/tiny", "def add(a, b):", max_new_tokens=20))  # doctest: +SKIP
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
    return tok.decode(out[0].tolist() if prompt else out[0, 1:].tolist(), skip_special_tokens=True)


def analyze(
    model_dir: str,
    tasks: list[str] | None = None,
    level: str = "component",
    method: str | None = None,
    ablation: str = "mean",
    n_pairs: int = 64,
    seed: int = 0,
    controls: bool = True,
    corpus_windows: int = 64,
    target_loss: float = 0.15,
    mask_steps: int = 100,
) -> None:
    """Find the circuits behind the task suite and add them to analysis.json in the model directory.

    Each run is kept under its level/method/ablation: analysing at another level or by another method adds to
    the file instead of replacing it.

    Args:
        model_dir: A model directory.
        tasks: Task names (default: every task the model's tokenizer supports).
        level: component (embeddings, heads with q/k/v inputs, MLPs, logits; edges between them) or node
            (residual, q/k/v and neuron or transcoder-latent channels).
        method: Circuit discovery method. At level component: exact, eap or eap-ig (default eap-ig); at level
            node: mask (learned node masks), eap-ig or eap (default mask).
        ablation: How what lies outside the circuit is removed. component: mean, position-mean, zero or corrupt;
            node: mean or zero.
        n_pairs: Minimal pairs per task.
        seed: Seed of task generation (and of the mask search).
        controls: Also measure a random-init model and shuffled labels.
        corpus_windows: Corpus windows used for mean ablation, validation loss and the sparse-layer metrics.
        target_loss: Node level: the circuit size is the smallest circuit whose task loss is at most this.
        mask_steps: Node level, method mask: optimizer steps per mask (time grows in proportion).
    """
    import time

    from glassformer.analysis.analyze import (
        ABLATIONS_BY_LEVEL,
        DEFAULT_METHOD,
        LEVELS,
        METHODS_BY_LEVEL,
        format_table,
    )
    from glassformer.analysis.analyze import analyze as run_analysis
    from glassformer.analysis.masks import MaskSettings

    # Choices come from the analysis registries, checked before the corpus (and datasets) are loaded.
    if level not in LEVELS:
        raise ValueError(f"--level {level!r} is not allowed: expected one of {', '.join(LEVELS)}")
    method = DEFAULT_METHOD[level] if method is None else method
    if method not in METHODS_BY_LEVEL[level]:
        raise ValueError(f"--method {method!r} is not allowed at --level {level}: expected one of "
                         f"{', '.join(METHODS_BY_LEVEL[level])}")
    if ablation not in ABLATIONS_BY_LEVEL[level]:
        raise ValueError(f"--ablation {ablation!r} is not allowed at --level {level}: expected one of "
                         f"{', '.join(ABLATIONS_BY_LEVEL[level])}")
    mask = MaskSettings(steps=mask_steps, seed=seed)
    # Imported only once the flags are good: it loads datasets.
    from glassformer.training.evaluate import corpus_windows_for

    check_model_dir(model_dir)
    start = time.perf_counter()
    corpus, val = corpus_windows_for(model_dir, corpus_windows)
    result = run_analysis(model_dir, tasks=tasks, level=level, method=method, ablation=ablation,
                          corpus_tokens=corpus, val_tokens=val, n_pairs=n_pairs, seed=seed, controls=controls,
                          target_loss=target_loss, mask=mask)
    print(format_table(result))
    print(f"wrote {Path(model_dir) / 'analysis.json'} ({result['latest']}) in {time.perf_counter() - start:.0f} s")


def check_model_dir(model_dir: str | Path, recorded_data: bool = True) -> None:
    """Refuse, naming the file, a model directory whose config, tokenizer or training record cannot be used.

    The weights are checked when the command loads them (``load_model_dir``); this covers the companions, whose
    readers raise errors that do not say which file was wrong. ``recorded_data``: the command will read the corpus
    recorded in training.json, so check it too. Reads JSON only: nothing in the folder is run.

    Example:
        >>> check_model_dir("no/such/dir")
        Traceback (most recent call last):
        ...
        glassformer.archs.model_dir.ModelDirError: no/such/dir is not a model directory (no such folder)
    """
    from glassformer.archs import ModelDirError, load_config, read_training

    load_config(model_dir)
    tokenizer = Path(model_dir) / "tokenizer.json"
    if not tokenizer.is_file():
        raise ModelDirError(f"{tokenizer} is missing")
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_file(str(tokenizer))
    except Exception as e:  # tokenizers raises a bare Exception for malformed files
        raise ModelDirError(f"{tokenizer} is not a readable tokenizer ({e})") from e
    training = read_training(model_dir)
    if not isinstance(training, dict):
        raise ModelDirError(f"{Path(model_dir) / 'training.json'} must hold a JSON object")
    data = training.get("config", {}).get("data") if isinstance(training.get("config"), dict) else None
    if recorded_data and data is not None:
        try:
            DataConfig(**data)
        except (TypeError, ValueError) as e:
            raise ModelDirError(f"{Path(model_dir) / 'training.json'} records a data config that is not valid "
                                f"({e}); pass --data to choose the corpus") from e


def resume_command(argv: list[str] | None = None) -> str:
    """The command line that resumes this ``glassformer train`` run: the same flags plus ``--resume true``.

    Example:
        >>> resume_command(["glassformer", "train", "--config", "c.yaml", "--resume", "false"])
        'glassformer train --config c.yaml --resume true'
    """
    argv = list(sys.argv if argv is None else argv)
    # Started as `python -m glassformer.training.cli` (or Lightning's DDP relaunch of it) rather than the script.
    program = ("glassformer" if Path(argv[0]).name == "glassformer"
               else f"{shlex.quote(sys.executable)} -m glassformer.training.cli")
    args, skip = [], False
    for arg in argv[1:]:
        if skip:
            skip = False
        elif arg == "--resume":
            skip = True
        elif not arg.startswith("--resume="):
            args.append(arg)
    return " ".join([program, *map(shlex.quote, args), "--resume", "true"])


from glassformer.training.finetune import DistillConfig, FinetuneModelConfig  # noqa: E402  (light: no Lightning)


def finetune(
    parent: str | None = None,
    model: FinetuneModelConfig = FinetuneModelConfig(),
    distill: DistillConfig = DistillConfig(),
    kl_coef: float = 0.0,
    data: DataConfig = DataConfig(),
    optim: OptimConfig = OptimConfig(),
    trainer: TrainerConfig = TrainerConfig(),
    out: str = "runs/finetune",
) -> None:
    """Convert a pretrained model's MLPs by distillation, add constraints, fine-tune it, write a model directory.

    Args:
        parent: The parent model, also spelled --from: a glassformer model directory or a local Hugging Face
            GPT-2 directory. Its shape and tokenizer are kept.
        model: What changes from the parent: the MLP variant (distilled from the parent's MLPs when its kind
            differs) and constraints (activation_sparsity, penalties, weight_sparsity); null keeps the parent's.
        distill: Distillation of the new MLPs: steps, learning rate, tokens, and the ablation of CE loss recovered.
        kl_coef: Weight of KL(parent || model) on next-token distributions added to the loss; 0 turns it off.
        data: Fine-tuning corpus, tokenised with the parent's tokenizer.
        optim: Optimiser and learning-rate schedule.
        trainer: Steps, batch size, logging, devices.
        out: Model directory to write; its training.json records the parent and the distillation report.
    """
    from glassformer.training.finetune import finetune as run_finetune
    from glassformer.training.finetune import summary

    if parent is None:
        raise ValueError("--from PATH is required: the parent model directory or Hugging Face GPT-2 directory")
    path = run_finetune(parent, model, data, optim, trainer, out, kl_coef=kl_coef, distill=distill)
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:
        print(summary(path))


FLAG_ALIASES = {"finetune": {"--from": "--parent"}}
"""Flags spelled otherwise than their parameter, per command: ``from`` is a Python keyword."""


def map_flag_aliases(argv: list[str]) -> list[str]:
    """Rewrite each command's aliased flags (after the command's name) to the flags its signature defines.

    Example:
        >>> map_flag_aliases(["finetune", "--from", "runs/tiny", "--from=x"])
        ['finetune', '--parent', 'runs/tiny', '--parent=x']
    """
    out, aliases = [], {}
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if flag in aliases:
            arg = aliases[flag] + eq + value
        elif not aliases and arg in FLAG_ALIASES:
            aliases = FLAG_ALIASES[arg]
        out.append(arg)
    return out


def compare(
    model_dirs: list[str],
    out: str = "runs/report",
    baseline: str | None = None,
    circuit_task: str | None = None,
    tasks: list[str] | None = None,
    n_pairs: int = 64,
    seed: int = 0,
    corpus_windows: int = 64,
) -> None:
    """Compare model directories in one trade-off report: OUT/index.html, OUT/report.md and OUT/report.json.

    A model directory without analysis.json is analysed first, as `glassformer analyze` does (component level,
    EAP-IG, mean ablation, with controls) with the --tasks, --n_pairs, --seed and --corpus_windows given here.
    Prints the verdict and the path of index.html.

    Args:
        model_dirs: Model directories, e.g. `glassformer compare runs/dense runs/transcoder --out runs/report`.
        out: Folder for the report (created; its three files are replaced).
        baseline: The dense model the verdict measures against (a directory given or its name); default: the
            first model without constraints.
        circuit_task: The task whose circuit is drawn for every model; default: the task with signal in most.
        tasks: Tasks to analyse where analysis.json is missing (default: every task the tokenizer supports).
        n_pairs: Minimal pairs per task, where analysis.json is missing.
        seed: Seed of task generation, where analysis.json is missing.
        corpus_windows: Corpus windows for mean ablation and validation loss, where analysis.json is missing.
    """
    from glassformer.analysis.report import build_report, write_report
    from glassformer.archs.model_dir import ANALYSIS_FILE

    if isinstance(model_dirs, str) or not model_dirs:
        raise ValueError(f"model_dirs={model_dirs!r} is not allowed: expected one or more model directories")
    for d in model_dirs:
        check_model_dir(d)
    for d in model_dirs:
        if not (Path(d) / ANALYSIS_FILE).is_file():
            print(f"{d} has no analysis.json: analysing it first", file=sys.stderr, flush=True)
            analyze(d, tasks=tasks, n_pairs=n_pairs, seed=seed, corpus_windows=corpus_windows)
    report = build_report(model_dirs, baseline=baseline, circuit_task=circuit_task, command=sys.argv)
    paths = write_report(report, out)
    print("\n".join(report["verdict"]["text"]))
    print(f"report: {paths['html']} (and {paths['md'].name}, {paths['json'].name} beside it)")


def sweep(
    preset: str = "quick",
    variants: list[str] | str | None = None,
    out: str = "runs/sweep",
    data: DataConfig = DataConfig(),
    configs: str | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> None:
    """Train the dense baseline and constrained variants at matched size, analyse each, and compare them.

    Presets: quick (2 layers, half the tiny widths, 600 steps; dense, transcoder, weight_sparse: `make demo`)
    and standard (configs/*.yaml as they are, every variant). Rerunning the same command continues where it
    stopped: finished models and analyses are reused, an interrupted training resumes from its last checkpoint.
    The report lands in OUT/report/index.html.

    Args:
        preset: quick or standard (see glassformer/training/sweep.py: PRESETS).
        variants: Variants to train beside the dense baseline, e.g. '[transcoder, topk]' or transcoder,topk;
            the names of configs/*.yaml at the baseline's shape (dense is tiny.yaml). Default: the preset's.
        out: Sweep folder: one model directory per variant, sweep.json and report/.
        data: Training corpus for every model (default: the Python standard library).
        configs: Folder of the variant YAML files (default: the repository's configs/).
        threads: Torch CPU threads (default: torch's choice). On a machine shared with other jobs, 1 avoids
            threads spinning against them.
        progress: Progress bars (the sweep's stages, Lightning's training, the analysis).
    """
    from glassformer.training.sweep import run_sweep

    if isinstance(variants, str):
        variants = [v.strip() for v in variants.split(",") if v.strip()]
    if threads is not None:
        import torch

        if threads < 1:
            raise ValueError(f"--threads {threads} is not allowed: expected a positive integer")
        torch.set_num_threads(threads)
    report = run_sweep(preset, variants, out, analyze_fn=analyze, compare_fn=compare, configs=configs, data=data,
                       progress=progress)
    print_sweep_summary(report.parent)


SAMPLE_PROMPT = "import os\n\n\ndef"


def print_sweep_summary(sweep_dir: str | Path, max_new_tokens: int = 80) -> None:
    """Print each model's validation loss beside the corpus's unigram entropy, and a code sample from the baseline.

    The unigram entropy is the loss of the best model that ignores context, so a model below it has learned
    something from context. Reads the sweep's ``sweep.json`` and each model's training.json (JSON only).

    Example:
        >>> print_sweep_summary("runs/demo")  # doctest: +SKIP
        dense          validation loss 4.8490 nats/token (unigram entropy of the corpus 6.4774)
    """
    import json

    from glassformer.archs import read_training
    from glassformer.training.sweep import MANIFEST

    sweep_dir = Path(sweep_dir)
    runs = json.loads((sweep_dir / MANIFEST).read_text())["runs"]
    for name in runs:
        final = read_training(sweep_dir / name).get("final", {})
        print(f"{name:<14} validation loss {final.get('loss/val', float('nan')):.4f} nats/token "
              f"(unigram entropy of the corpus {final.get('unigram_entropy', float('nan')):.4f})")
    baseline = next(iter(runs))
    print(f"sample from {baseline} (prompt {SAMPLE_PROMPT!r}, temperature 0.8, seed 0):")
    print(sample_text(sweep_dir / baseline, SAMPLE_PROMPT, max_new_tokens))


POSITIONAL_LISTS = {"compare": "model_dirs"}
"""Commands whose list parameter is given as positional arguments (``compare DIR DIR ... --out X``)."""


def gather_positional_lists(argv: list[str]) -> list[str]:
    """Turn the positional arguments of a POSITIONAL_LISTS command into the one JSON list jsonargparse reads.

    Flags (and the value after a flag without ``=``) stay in place; a single argument that is already a list
    (``[a, b]``) is left alone.

    Example:
        >>> gather_positional_lists(["compare", "runs/a", "runs/b", "--out", "r"])
        ['compare', '["runs/a", "runs/b"]', '--out', 'r']
    """
    import json

    if not argv or argv[0] not in POSITIONAL_LISTS:
        return list(argv)
    flags, items, i = [], [], 1
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-"):
            flags.append(arg)
            if "=" not in arg and arg not in ("-h", "--help") and i + 1 < len(argv):
                flags.append(argv[i + 1])
                i += 1
        else:
            items.append(arg)
        i += 1
    if len(items) == 1 and items[0].lstrip().startswith("["):
        return [argv[0], items[0], *flags]
    return [argv[0], json.dumps(items), *flags] if items else [argv[0], *flags]


COMMANDS = {"train": train, "eval": evaluate, "generate": generate, "analyze": analyze, "finetune": finetune,
            "compare": compare, "sweep": sweep}

# ValueError covers ConfigError, ModelDirError and CheckpointError; OSError a path that cannot be read or written.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, OSError)


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

    argv = map_flag_aliases(argv)  # `finetune --from` first, so the rest sees the signature's flag names
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


class _StderrHandler(logging.StreamHandler):
    """A stream handler writing to whatever ``sys.stderr`` is at the time (tests and tqdm replace it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging() -> None:
    """Print glassformer's INFO messages to stderr as ``glassformer: ...``, once.

    Only the ``glassformer`` logger gets a handler: a handler on the root logger would print every Lightning
    message a second time (Lightning's loggers have their own handler and also propagate to the root).
    """
    if any(isinstance(h, _StderrHandler) for h in log.handlers):
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("glassformer: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``glassformer`` console script.

    Example:
        >>> main(["train", "--config", "configs/debug.yaml", "--out", "runs/debug"])  # doctest: +SKIP
    """
    from jsonargparse import CLI

    configure_logging()
    try:
        args = merge_union_flags(gather_positional_lists(list(sys.argv[1:] if argv is None else argv)))
        CLI(COMMANDS, args=args, as_positional=True)
    except FloatingPointError as e:  # glassformer.training.guards.TrainingDiverged, without importing Lightning
        if os.environ.get("GLASSFORMER_DEBUG"):
            raise
        print(f"glassformer: error: {e}", file=sys.stderr)
        sys.exit(1)
    except USER_ERRORS as e:
        if os.environ.get("GLASSFORMER_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"glassformer: error: {msg}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        # Outside training (reading the corpus, writing the model directory); training itself stops cleanly.
        print("\nglassformer: interrupted", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)


if __name__ == "__main__":
    main()
