"""Peak resident memory of tokenising a large generated corpus through ``prepare_data`` (files source).

Generates ``--size`` of Python-like source files of ``--file-kb`` each (default: 2 GB of 64 kB files), and with
``--one-document`` one more file of that size (a single document: one generated file, as a huge JSONL line would
be; ``--size`` then defaults to 1 MB of ordinary files around it, so that there is a validation split), then runs
``glassformer.training.corpus.prepare_data`` on them in a child process with a fresh cache: one pass to
fingerprint, one to train the byte-level BPE tokenizer (``--vocab``, default 1024), one to tokenise into the
memory-mapped token arrays. A sampler reads the child's resident set (VmRSS, children included) from /proc every
0.1 s; the child also reports its own ``ru_maxrss``. The run fails (exit 1) if the peak exceeds ``--bound-mb``.

    python benchmarks/corpus_memory.py --size 2GB
    python benchmarks/corpus_memory.py --size 200MB --keep /tmp/corpus   # reuse the generated files later
    python benchmarks/corpus_memory.py --size 48MB --file-kb 4096        # a few very large documents
    python benchmarks/corpus_memory.py --one-document 200MB              # one 200 MB document (+ 1 MB of files)

The bound (default 2048 MB) is for any corpus size and any document size: the child holds the tokenizer trainer's
word counts (bounded by the distinct words, not the bytes), one tokenisation shard (16 MB of text) and the
encodings of at most 1 MB of it; documents longer than 64 k characters are trained on and tokenised in pieces (same
ids). What still grows with a single document is its own text, held while it is read, hashed and tokenised. Compare
two sizes to see that the peak is flat (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Source files are mostly 1-100 kB (the stdlib's median is about 10 kB); 64 kB keeps the file count manageable.
# Memory depends on the size of single documents (--file-kb), not on the corpus size.
FILE_KB = 64
NAMES = ["value", "count", "items", "result", "node", "parent", "child", "index", "buffer", "offset", "token",
         "config", "path", "stream", "record", "window", "weight", "bias", "layer", "head", "cache", "state"]
TYPES = ["int", "str", "float", "list[int]", "dict[str, int]", "bytes", "bool", "None"]


def parse_size(text: str) -> int:
    """``"2GB"`` → 2_000_000_000 bytes (decimal units: KB, MB, GB; a bare number is bytes).

    Example:
        >>> parse_size("200MB"), parse_size("1.5GB"), parse_size("123")
        (200000000, 1500000000, 123)
    """
    t = text.strip().upper().removesuffix("B")
    scale = {"K": 10**3, "M": 10**6, "G": 10**9}.get(t[-1:], 1)
    number = t[:-1] if t[-1:] in "KMG" else t
    try:
        value = int(float(number) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size={text!r}: expected a size such as 2GB, 200MB or 5000000") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"--size={text!r}: expected a positive size")
    return value


def code_chunk(rng: random.Random, n_bytes: int) -> str:
    """About ``n_bytes`` of varied Python-like source (functions, classes, loops, docstrings, literals).

    Example:
        >>> len(code_chunk(random.Random(0), 1000)) >= 1000
        True
    """
    parts, size = [], 0
    while size < n_bytes:
        a, b, c = rng.sample(NAMES, 3)
        n = rng.randrange(1, 10_000)
        kind = rng.randrange(4)
        if kind == 0:
            block = (f"def {a}_{b}({c}: {rng.choice(TYPES)}, {a}={n}) -> {rng.choice(TYPES)}:\n"
                     f'    """Return the {b} of {c} after {n} steps."""\n'
                     f"    for {b} in range({a}):\n        {c} += {b} * {rng.random():.4f}\n    return {c}\n\n")
        elif kind == 1:
            block = (f"class {a.title()}{b.title()}:\n    def __init__(self, {c}):\n        self.{c} = {c}\n"
                     f"        self.{a} = [{', '.join(str(rng.randrange(100)) for _ in range(rng.randrange(1, 8)))}]\n\n")
        elif kind == 2:
            block = f"if {a} is not None and {b} > {n}:\n    {c} = {{'{a}': {b}, '{c}': \"{a}-{n}\"}}\nelse:\n    pass\n"
        else:
            block = f"# {a} {b} {c}: {n}\n{a}_{n} = {b}.get('{c}', {rng.random():.3e})\n"
        parts.append(block)
        size += len(block)
    return "".join(parts)


def generate(folder: Path, size: int, seed: int = 0, file_bytes: int = FILE_KB * 2**10) -> int:
    """Write ``size`` bytes of ``.py`` files of ``file_bytes`` under ``folder``; return the number of files.

    Each file is a slice, starting at a random line, of one of several distinct chunks of generated code.

    Example:
        >>> generate(Path(tempfile.mkdtemp()), 100_000)  # doctest: +SKIP
        2
    """
    rng = random.Random(seed)
    chunks = [code_chunk(rng, 2**20 + file_bytes) for _ in range(64 if file_bytes <= 2**18 else 8)]
    written, i = 0, 0
    while written < size:
        sub = folder / f"pkg{i // 1000:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        chunk = rng.choice(chunks)
        start = chunk.index("\n", rng.randrange(2**20)) + 1
        data = f"# file {i}\n{chunk[start : start + file_bytes]}".encode()[: size - written]
        (sub / f"mod{i:06d}.py").write_bytes(data)
        written += len(data)
        i += 1
    return i


def generate_one(folder: Path, size: int, seed: int = 1, val_fraction: float = 0.02) -> Path:
    """Write one ``.py`` file of ``size`` bytes in ``folder``, named so that the corpus keeps it for training.

    The split is a hash of the path (see ``is_validation_key``); a held-out giant would leave the tokenizer little
    to train on and measure nothing different, so the name is chosen until the hash says "train". It sorts before
    the ``pkg*`` folders of :func:`generate`, so the small files come after it.

    Example:
        >>> generate_one(Path(tempfile.mkdtemp()), 100_000).stat().st_size  # doctest: +SKIP
        100000
    """
    from glassformer.training.corpus import is_validation_key

    folder.mkdir(parents=True, exist_ok=True)
    i = 0
    while is_validation_key(f"{folder}/one-document-{i}.py", val_fraction):
        i += 1
    path = folder / f"one-document-{i}.py"
    rng = random.Random(seed)
    chunks = [code_chunk(rng, 2**21) for _ in range(16)]
    written = 0
    with open(path, "wb") as f:
        while written < size:  # slices of distinct chunks starting at a line, like generate()'s files, end to end
            chunk = rng.choice(chunks)
            start = chunk.index("\n", rng.randrange(2**20)) + 1
            data = chunk[start : start + 2**20].encode()[: size - written]
            f.write(data)
            written += len(data)
    return path


def make_corpus(corpus: Path, size: int, file_kb: int, one_document: int | None) -> None:
    """Generate the corpus in ``corpus``, or reuse the files there if they already make it (``--keep``)."""
    total = size + (one_document or 0)
    existing = sum(p.stat().st_size for p in corpus.rglob("*.py")) if corpus.is_dir() else 0
    one = sorted(corpus.glob("one-document-*.py")) if corpus.is_dir() else []
    if existing >= total and [p.stat().st_size for p in one] == ([one_document] if one_document else []):
        print(f"reusing {existing / 1e9:.2f} GB of files in {corpus}", flush=True)
        return
    t0 = time.perf_counter()
    shutil.rmtree(corpus, ignore_errors=True)
    n = generate(corpus, size, file_bytes=file_kb * 2**10)
    if one_document:
        generate_one(corpus, one_document)
        n += 1
    print(f"generated {total / 1e9:.2f} GB in {n} files under {corpus} ({time.perf_counter() - t0:.0f} s)", flush=True)


def _rss_kb(pid: int) -> int:
    """Resident set of ``pid`` plus its descendants, in kB, from /proc (0 once it is gone)."""
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                pids += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def child(corpus: str, cache: str, vocab: int, num_proc: int) -> None:
    """Runs in the measured process: import, record the baseline, prepare the data, report as JSON."""
    import resource

    from glassformer.training.config import DataConfig
    from glassformer.training.corpus import prepare_data

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    cfg = DataConfig(source="files", paths=[f"{corpus}/**/*.py"], cache_dir=cache, num_proc=num_proc)
    prepared = prepare_data(cfg, vocab)
    seconds = time.perf_counter() - t0
    print(json.dumps({"baseline_kb": baseline, "peak_self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "seconds": seconds, "n_train_tokens": int(len(prepared.train_tokens)),
                      "n_val_tokens": int(len(prepared.val_tokens)), "n_docs": prepared.info["n_docs"],
                      "n_bytes": prepared.info["n_bytes"], "vocab": prepared.tokenizer.get_vocab_size()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=None,
                        help="size of the ordinary files (default 2GB, or 1MB with --one-document)")
    parser.add_argument("--one-document", type=parse_size, default=None, metavar="SIZE",
                        help="add one document (one file) of this size, e.g. 200MB")
    parser.add_argument("--vocab", type=int, default=1024, help="tokenizer vocabulary (default 1024)")
    parser.add_argument("--file-kb", type=int, default=FILE_KB, help=f"size of each file (default {FILE_KB} kB)")
    parser.add_argument("--num-proc", type=int, default=1, help="data.num_proc for tokenisation (default 1)")
    parser.add_argument("--bound-mb", type=float, default=2048, help="fail above this peak RSS (default 2048 MB)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="generate into (or reuse) this folder and keep it; default: a temporary folder")
    parser.add_argument("--child", nargs=4, metavar=("CORPUS", "CACHE", "VOCAB", "NUM_PROC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        corpus, cache, vocab, num_proc = args.child
        child(corpus, cache, int(vocab), int(num_proc))
        return
    if args.size is None:
        args.size = parse_size("1MB" if args.one_document else "2GB")
    total = args.size + (args.one_document or 0)

    work = Path(tempfile.mkdtemp(prefix="glassformer-corpus-memory-"))
    corpus = args.keep or work / "corpus"
    try:
        make_corpus(corpus, args.size, args.file_kb, args.one_document)
        proc = subprocess.Popen([sys.executable, __file__, "--child", str(corpus), str(work / "cache"),
                                 str(args.vocab), str(args.num_proc)], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
        peak = [0]

        def sample() -> None:
            started, last_report = time.perf_counter(), time.perf_counter()
            while proc.poll() is None:
                now_kb = _rss_kb(proc.pid)
                peak[0] = max(peak[0], now_kb)
                if time.perf_counter() - last_report >= 60:  # progress on a run that takes an hour
                    last_report = time.perf_counter()
                    print(f"{last_report - started:6.0f} s: RSS {now_kb / 1024:.0f} MB, peak so far "
                          f"{peak[0] / 1024:.0f} MB", file=sys.stderr, flush=True)
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out, _ = proc.communicate()
        sampler.join()
        if proc.returncode != 0:
            sys.exit(f"prepare_data failed (exit {proc.returncode})")
        report = json.loads(out.strip().splitlines()[-1])
        peak_mb = max(peak[0], report["peak_self_kb"]) / 1024
        print(json.dumps({"size_bytes": total, "file_kb": args.file_kb, "one_document_bytes": args.one_document,
                          "vocab": args.vocab,
                          "num_proc": args.num_proc,
                          "peak_rss_mb": round(peak_mb, 1), "baseline_rss_mb": round(report["baseline_kb"] / 1024, 1),
                          "bound_mb": args.bound_mb, "seconds": round(report["seconds"], 1),
                          "mb_per_s": round(total / 1e6 / report["seconds"], 2),
                          **{k: report[k] for k in ("n_docs", "n_bytes", "n_train_tokens", "n_val_tokens")}}))
        if peak_mb > args.bound_mb:
            sys.exit(f"peak RSS {peak_mb:.0f} MB exceeds the bound of {args.bound_mb:.0f} MB")
        print(f"peak RSS {peak_mb:.0f} MB <= bound {args.bound_mb:.0f} MB for {total / 1e9:.2f} GB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
