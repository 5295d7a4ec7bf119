"""The Python half of ``benchmarks/gpu_check.sh``: prepare the corpus on the CPU, train on the GPU.

    python benchmarks/gpu_check.py prepare .gpu_check_data          # the default corpus, tokenised for `small`
    python benchmarks/gpu_check.py prepare DIR --toy                # a few local files, for the `debug` preset
    python benchmarks/gpu_check.py train --data DIR --out DIR ...   # short real trainings from DIR's arrays

``prepare`` runs the normal corpus code (``glassformer.training.corpus.prepare_data``, which tokenises through
``datasets``) and copies what it made into one folder: ``tokenizer.json``, ``train.bin``, ``val.bin`` and
``corpus.json`` (dtype, token counts, fingerprint, the data config). ``train`` runs the library's
``glassformer.training.train.fit`` with that folder standing in for ``prepare_data``, so the GPU machine, which
has no ``datasets``, reads the carried token arrays instead of tokenising; everything else is the normal path.
The summary of a whole check is written by ``gpu_check_summary.py``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FORMAT = "glassformer-gpu-check-corpus-1"
# Packages the GPU machine's image lacks; the training step must never import them.
ABSENT_ON_DEVICE = ("datasets", "wandb", "jsonargparse")
# The dry run's corpus: a few of the repository's own files, enough windows for the `debug` preset.
TOY_FILES = ["archs/config.py", "archs/transformer.py", "archs/weight_sparsity.py", "archs/mlp/transcoder.py",
             "training/corpus.py", "training/train.py"]


def git_commit() -> str | None:
    """The checkout's commit (with ``+dirty`` when files differ from it), or None outside a git checkout.

    Example:
        >>> git_commit() is None or len(git_commit()) >= 7
        True
    """
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def prepare(folder: Path, preset: str, toy: bool) -> dict[str, Any]:
    """Tokenise the corpus with the normal corpus code and copy tokenizer, arrays and facts into ``folder``.

    Example:
        >>> prepare(Path("/tmp/gc-data"), "debug", toy=True)["vocab_size"]  # doctest: +SKIP
        512
    """
    from glassformer.archs import presets
    from glassformer.training.config import DataConfig
    from glassformer.training.corpus import prepare_data

    data = (DataConfig(source="files", paths=[str(ROOT / f) for f in TOY_FILES]) if toy
            else DataConfig())  # the default corpus: the Python standard library
    vocab = presets.get(preset).d_vocab
    prepared = prepare_data(data, vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(prepared.tokenizer.to_str())
    dtype = prepared.train_tokens.dtype
    counts = {}
    for split, tokens in (("train", prepared.train_tokens), ("val", prepared.val_tokens)):
        np.asarray(tokens).tofile(folder / f"{split}.bin")
        counts[split] = int(len(tokens))
    meta = {"format": FORMAT, "preset": preset, "vocab_size": vocab, "dtype": dtype.name, "n_tokens": counts,
            "fingerprint": prepared.fingerprint, "eot_id": prepared.eot_id, "info": prepared.info,
            "data_config": {**asdict(data), "cache_dir": None},
            "prepared": {"commit": git_commit(), "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                         "python": sys.version.split()[0]}}
    (folder / "corpus.json").write_text(json.dumps(meta, indent=1))
    return meta


def read_meta(folder: Path) -> dict[str, Any]:
    """``corpus.json`` of a prepared folder, refusing anything else with the command that makes one."""
    path = folder / "corpus.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: prepare the folder first on a CPU machine with "
                                f"`bash benchmarks/gpu_check.sh --prepare {folder}`")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} has format {meta.get('format')!r}, expected {FORMAT!r}: prepare it again")
    return meta


def load_prepared(folder: Path, meta: dict[str, Any]) -> Any:
    """The :class:`~glassformer.training.corpus.PreparedData` that ``prepare`` saved in ``folder``."""
    from tokenizers import Tokenizer

    from glassformer.training.corpus import PreparedData
    from glassformer.training.tokenizer import open_token_array

    dtype = np.dtype(meta["dtype"])
    arrays = {s: open_token_array(folder / f"{s}.bin", dtype) for s in ("train", "val")}
    for split, arr in arrays.items():
        if len(arr) != meta["n_tokens"][split]:
            raise ValueError(f"{folder / (split + '.bin')} holds {len(arr)} tokens but corpus.json says "
                             f"{meta['n_tokens'][split]}: the folder is incomplete; prepare it again")
    info = {**meta["info"], "prepared_for_gpu_check": str(folder)}
    return PreparedData(tokenizer=Tokenizer.from_file(str(folder / "tokenizer.json")), train_tokens=arrays["train"],
                        val_tokens=arrays["val"], fingerprint=meta["fingerprint"], eot_id=meta["eot_id"], info=info)


@contextmanager
def prepared_corpus(folder: Path, meta: dict[str, Any]) -> Iterator[list[int]]:
    """While open, ``corpus.prepare_data`` (which ``fit`` calls) returns ``folder``'s arrays; yields the calls.

    The stand-in refuses a vocabulary other than the one the folder was tokenised for, and a tokenizer passed
    in (fine-tuning), which it cannot honour.
    """
    from glassformer.archs.config import ConfigError
    from glassformer.training import corpus

    calls: list[int] = []

    def stand_in(cfg: Any, vocab_size: int, tokenizer: Any = None) -> Any:
        if tokenizer is not None:
            raise ValueError("the prepared corpus cannot re-tokenise with a given tokenizer (fine-tuning)")
        if vocab_size != meta["vocab_size"]:
            raise ConfigError(f"model.d_vocab={vocab_size} but {folder} was tokenised for a vocabulary of "
                              f"{meta['vocab_size']} (preset {meta['preset']}): prepare it for this preset")
        calls.append(vocab_size)
        return load_prepared(folder, meta)

    original = corpus.prepare_data
    corpus.prepare_data = stand_in
    try:
        yield calls
    finally:
        corpus.prepare_data = original


def steps_for(throughput_json: Path | None, variants: Sequence[str], seconds: float, low: int, high: int,
              fallback: int) -> tuple[int, str]:
    """One step count for every variant: ``seconds`` at the slowest variant's measured Lightning steps/s.

    Example:
        >>> steps_for(None, ["dense"], 40, 50, 3000, 400)
        (400, 'no throughput figures: the fallback')
    """
    if throughput_json is None or not throughput_json.is_file():
        return fallback, "no throughput figures: the fallback"
    measured = {v["variant"]: v.get("lightning", {}).get("steps_per_sec")
                for v in json.loads(throughput_json.read_text())["variants"]}
    rates = [measured.get(v) for v in variants]
    if any(r is None for r in rates):
        return fallback, f"no Lightning steps/s measured for every variant ({measured}): the fallback"
    steps = int(seconds * min(rates)) // 10 * 10
    return max(low, min(high, steps)), f"{seconds:g} s at {min(rates):.2f} steps/s (the slowest variant)"


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train each variant on the prepared corpus with ``fit``; returns the figures of every run."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_throughput import variant_config

    import glassformer.archs
    from glassformer.training.config import DataConfig, OptimConfig, TrainerConfig
    from glassformer.training.train import fit

    folder = Path(args.data)
    meta = read_meta(folder)
    steps, why = (args.steps, "--steps") if args.steps else steps_for(
        Path(args.throughput) if args.throughput else None, args.variants, args.train_seconds, 50, 3000, 400)
    print(f"training {', '.join(args.variants)} at {args.preset} for {steps} steps ({why})", flush=True)
    data_cfg = DataConfig(**meta["data_config"])
    runs = {}
    for variant in args.variants:
        out = Path(args.out) / variant
        trainer = TrainerConfig(max_steps=steps, batch_size=args.batch_size, val_every=steps, val_batches=20,
                                log_every=10, checkpoint_every=steps, precision=args.precision,
                                accelerator=args.accelerator, progress_bar=False)
        t0 = time.time()
        with prepared_corpus(folder, meta) as calls:
            fit(variant_config(args.preset, variant), data_cfg, OptimConfig(warmup_steps=max(1, steps // 20)),
                trainer, out)
        if not calls:
            raise RuntimeError("fit did not read the corpus through glassformer.training.corpus.prepare_data: "
                               "the prepared arrays were not used (see prepared_corpus)")
        t = json.loads((out / "training.json").read_text())
        runs[variant] = {"dir": variant, "steps": t["steps"], "tokens_seen": t["tokens_seen"],
                         "final": t["final"], "tokens_per_sec": t["throughput"]["tokens_per_sec"],
                         "wall_seconds": time.time() - t0}
        print(f"{variant}: {t['steps']} steps, validation loss {t['final']['loss/val']:.3f} nats, "
              f"{t['throughput']['tokens_per_sec']:.0f} tokens/s, {time.time() - t0:.0f} s", flush=True)
    return {"preset": args.preset, "steps": steps, "steps_chosen_by": why, "batch_size": args.batch_size,
            "precision": args.precision, "corpus": {k: meta[k] for k in ("fingerprint", "n_tokens", "prepared")},
            "runs": runs, "imported_absent_packages": [m for m in ABSENT_ON_DEVICE if m in sys.modules],
            "glassformer_from": str(Path(glassformer.archs.__file__).parent.parent)}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="tokenise the corpus into a folder (CPU side; needs `datasets`)")
    prep.add_argument("folder")
    prep.add_argument("--toy", action="store_true", help="a few local files for the debug preset (dry run)")
    tr = sub.add_parser("train", help="train variants on a prepared folder through fit")
    tr.add_argument("--data", required=True, help="a folder made by `prepare`")
    tr.add_argument("--out", required=True, help="model directories go to OUT/<variant>")
    tr.add_argument("--preset", default="small")
    tr.add_argument("--variants", nargs="+", default=["dense", "weight_sparse"])
    tr.add_argument("--steps", type=int, default=None, help="fixed step count (default: from --throughput)")
    tr.add_argument("--throughput", help="train_throughput.py's JSON: steps = --train-seconds at its steps/s")
    tr.add_argument("--train-seconds", type=float, default=40.0)
    tr.add_argument("--batch-size", type=int, default=32)
    tr.add_argument("--precision", default="bf16-mixed")
    tr.add_argument("--accelerator", default="gpu")
    tr.add_argument("--json", help="write the runs' figures to this file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "prepare":
        meta = prepare(Path(args.folder), "debug" if args.toy else "small", args.toy)
        size = sum(p.stat().st_size for p in Path(args.folder).iterdir()) / 2**20
        print(f"prepared {args.folder}: {meta['n_tokens']['train']:,} training and {meta['n_tokens']['val']:,} "
              f"validation tokens, vocabulary {meta['vocab_size']}, {size:.1f} MiB")
        return 0
    figures = train(args)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
