"""Attribution methods timed on component graphs of increasing size, with their completeness checked.

For each size ``LxH`` (the ``--preset`` with ``n_layers = L`` and ``n_heads = H``, randomly initialised), the
``--task`` on the model's own vocabulary, ``--pairs`` pairs, mean ablation over random corpus windows: the time
of each of ``--methods``, its completeness check (the sum of the effects its identity covers against the measured
drop, see ``completeness`` in analysis/component/attribution.py) and, where exact patching ran, the Spearman
correlation of its edge scores with exact's. The table chose ``EXACT_MAX_EDGES`` (benchmarks/RESULTS.md).

    python benchmarks/attribution.py --sizes 2x4,4x4,4x8,6x8 --pairs 32 --threads 1
    python benchmarks/attribution.py --preset gpt2-small --d-vocab 512 --methods auto --pairs 16 --threads 1

With ``--model-dir DIR`` (repeatable) a trained model directory instead, on ``--tasks`` with its own tokenizer,
writer means over 64 windows of 64 tokens of the standard library's first 20 ``[a-c]*.py`` files, and each
method's greedy N_0.8 beside exact patching's:

    python benchmarks/attribution.py --model-dir runs/demo/dense --tasks bracket_type --pairs 64 --threads 1 \
        --methods exact,eap-ig,eap-ig-gl,eap-ig-act
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from glassformer.analysis.component.ablation import writer_means
from glassformer.analysis.component.attribution import attribute, completeness, resolve_method
from glassformer.analysis.component.circuits import rank
from glassformer.analysis.component.faithfulness import Faithfulness, evaluate_ranking
from glassformer.analysis.component.graph import ComponentGraph
from glassformer.analysis.tasks import TASKS
from glassformer.archs import build_model, presets


def word_tokenizer(d_vocab: int):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(d_vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float(ra @ rb / (ra.norm() * rb.norm()))


def run_size(cfg, args) -> None:
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    batch = TASKS[args.task].generate(word_tokenizer(cfg.d_vocab), args.pairs, seed=0, max_len=cfg.n_ctx,
                                      d_vocab=cfg.d_vocab)
    T = min(cfg.n_ctx, 32)
    corpus = torch.randint(0, cfg.d_vocab, (16, T), generator=torch.Generator().manual_seed(1))
    print(f"{cfg.n_layers}x{cfg.n_heads} (d_model {cfg.d_model}): task {args.task}")
    compare(model, batch, corpus, args, n08=False)


def run_model_dir(path: str, args) -> None:
    import sysconfig
    from pathlib import Path

    from tokenizers import Tokenizer

    from glassformer.archs import load_model_dir

    model = load_model_dir(path).eval()
    tok = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
    tok.encode_special_tokens = True
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("[a-c]*.py"))[:20]
    corpus = torch.tensor(tok.encode("".join(f.read_text() for f in files)).ids[: 64 * 64]).view(64, 64)
    for task in args.tasks.split(","):
        batch = TASKS[task].generate(tok, args.pairs, 0, max_len=model.cfg.n_ctx, d_vocab=model.cfg.d_vocab)
        print(f"{path}: task {task}")
        compare(model, batch, corpus, args, n08=True)


def compare(model, batch, corpus, args, n08: bool) -> None:
    graph = ComponentGraph.from_config(model.cfg)
    means = writer_means(model, graph, corpus)
    attribute("eap-ig", model, graph, batch, "mean", means, ig_steps=1)  # warm-up: allocator, thread pools
    fa = Faithfulness(model, graph, batch, "mean", means)
    print(f"  {graph.n_edges} edges, {len(batch)} pairs of {batch.clean.shape[1]} tokens, m(model) "
          f"{fa.m_model:+.4f}, m(empty) {fa.m_empty:+.4f}, torch threads {torch.get_num_threads()}")
    scores = {}
    for method in args.methods.split(","):
        name, steps = resolve_method(method, graph, args.ig_steps)
        start = time.perf_counter()
        att = attribute(name, model, graph, batch, "mean", means, ig_steps=steps)
        seconds = time.perf_counter() - start
        scores[name] = att.scores
        c = completeness(att, fa)
        check = "-" if c["relative_error"] is None else (
            f"sum {c['attributed']:+.4f} vs measured {c['measured']:+.4f} (error {c['relative_error']:.1%})")
        rho = f", Spearman vs exact {spearman(att.scores, scores['exact']):.3f}" if "exact" in scores and \
            name != "exact" else ""
        size = f", greedy N_0.8 {evaluate_ranking(fa, rank('greedy', graph, att.scores))['N_0.8']['edges']}" \
            if n08 else ""
        print(f"  {name:<10} steps {steps or '-':>3}  {seconds:8.2f} s  {att.forwards:5d} passes  "
              f"completeness {check}{rho}{size}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--sizes", default="", help="comma-separated LxH (layers x heads); default the preset's")
    parser.add_argument("--d-vocab", type=int, default=0, help="vocabulary (0: the preset's)")
    parser.add_argument("--task", default="induction")
    parser.add_argument("--model-dir", action="append", default=[], help="a trained model directory (repeatable)")
    parser.add_argument("--tasks", default="bracket_type", help="with --model-dir: comma-separated tasks")
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--methods", default="exact,eap-ig-act")
    parser.add_argument("--ig-steps", type=int, default=None, help="steps (default: each method's)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for path in args.model_dir:
        run_model_dir(path, args)
    if args.model_dir:
        return
    base = presets.get(args.preset)
    if args.d_vocab:
        base = replace(base, d_vocab=args.d_vocab)
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")] if args.sizes else \
        [(base.n_layers, base.n_heads)]
    for layers, heads in sizes:
        run_size(replace(base, n_layers=layers, n_heads=heads), args)


if __name__ == "__main__":
    main()
