"""Name pools of the Python-code tasks, and the distractor code of their shifted variants.

:data:`IN_DISTRIBUTION` holds the names the tasks are drawn from (identifiers, functions, classes, methods);
:data:`HELD_OUT` holds other names for the shifted variants, disjoint from every in-distribution name (compared
without case). :data:`DISTRACTOR_NAMES` are disjoint from both, so a distractor (:func:`distractor`: one to three
unrelated, complete statements or small functions put before a shifted prompt) never binds or mentions a name the
template uses.

Example:
    >>> set(HELD_OUT.identifiers) & set(IN_DISTRIBUTION.identifiers)
    set()
    >>> print(distractor(random.Random(5)), end="")
    alpha = {6: 14}
    for eggs in range(4):
        omega = eggs
    <BLANKLINE>
    corge = (9, 11)
    <BLANKLINE>
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

IDENTIFIERS = (
    "name", "value", "data", "path", "key", "items", "result", "text", "size", "count", "index", "line", "node",
    "obj", "config", "parent", "source", "target", "mode", "func", "msg", "filename", "prefix", "suffix",
    "start", "end", "length", "width", "height", "level", "state", "status", "buffer", "stream", "module",
    "options", "default", "timeout", "encoding", "errors", "context", "handler", "callback", "request",
    "response", "header", "headers", "body", "url", "host", "port", "user", "token", "block", "chunk", "offset",
    "limit", "total", "number", "word", "words", "lines", "fields", "field", "record", "entry", "entries", "tag",
    "label", "title", "pattern", "match", "group", "flags", "parser", "reader", "writer", "output", "root",
    "tree", "child", "children", "element", "attr", "attrs", "method", "base", "item", "values", "keys", "pairs",
    "table", "row", "column", "cell", "stack", "queue", "cache", "lock", "event", "thread", "process", "task",
    "job", "loop", "seq", "string", "char", "code", "message", "reason", "error", "info", "debug", "verbose",
    "strict", "depth", "step", "delta", "scale", "factor", "weight", "color", "style", "image", "frame", "window",
    "owner", "version", "date", "stamp", "year", "month", "day", "args", "kwargs", "args_list", "counter",
    "files", "dirs", "names", "parts", "result_list", "target_dir", "new_value", "old_value",
)
FUNCTIONS = (
    "process", "handle", "update", "parse", "load", "save", "build", "render", "compute", "validate", "convert",
    "fetch", "apply", "check", "reset", "write", "read", "run", "start", "stop", "close", "clear", "remove",
    "send", "emit", "walk", "visit", "split", "join", "merge", "resolve", "normalize", "encode", "decode",
    "lookup", "register", "dispatch", "flush", "refresh", "collect", "filter_items", "get_value", "set_value",
    "make_path", "find", "search", "create", "parse_args", "main", "helper", "wrapper", "transform",
)
CLASSES = (
    "Parser", "Handler", "Reader", "Writer", "Node", "Config", "Client", "Server", "Manager", "Builder",
    "Loader", "Item", "Record", "Entry", "Table", "Cache", "Queue", "Stack", "Tree", "Buffer", "Stream",
    "Request", "Response", "Message", "Event", "Worker", "Task", "Job", "Model", "View", "Widget", "Window",
    "Frame", "Shape", "Point", "Vector", "Matrix", "Counter", "Timer", "Logger", "Context", "Session", "Field",
)
METHODS = ("strip", "lower", "upper", "split", "copy", "keys", "values", "items", "encode", "decode", "close")


@dataclass(frozen=True)
class Pools:
    """The names a Python-code task fills its template with."""

    identifiers: tuple[str, ...]
    functions: tuple[str, ...]
    classes: tuple[str, ...]
    methods: tuple[str, ...]
    """Zero-argument methods, called as ``name.method()``."""

    def all_names(self) -> set[str]:
        """Every name of every pool.

        Example:
            >>> sorted(Pools(("x",), ("f",), ("C",), ("m",)).all_names())
            ['C', 'f', 'm', 'x']
        """
        return {*self.identifiers, *self.functions, *self.classes, *self.methods}


IN_DISTRIBUTION = Pools(IDENTIFIERS, FUNCTIONS, CLASSES, METHODS)

# Held-out names: common in code, no Python keyword or builtin, none of the tasks' fixed words (self, cls, n, set,
# str, ...), and no in-distribution name in any case. Identifiers and functions are kept apart here as well.
HELD_OUT = Pools(
    identifiers=(
        "x", "y", "z", "i", "j", "k", "a", "b", "c", "d", "m", "p", "q", "r", "s", "t", "u", "v", "w", "val",
        "num", "idx", "arr", "lst", "res", "ret", "tmp", "out", "src", "dst", "buf", "cur", "prev", "acc", "elem",
        "ch", "ctx", "doc", "pos", "ref", "env", "opt", "sep", "ext", "dim", "col", "pid", "uid", "addr", "conn",
        "db", "query", "resp", "req", "payload", "rows", "cols", "sample", "samples", "points", "coords", "grid",
        "edge", "edges", "vertex", "left", "right", "lo", "hi", "mid", "low", "high", "first", "last", "head",
        "tail", "dest", "origin", "amount", "price", "cost", "rank", "slot", "bucket", "batch", "kind", "region",
        "score", "mask", "ratio", "radius", "angle", "speed", "balance", "quota", "budget", "epoch", "seed",
    ),
    functions=(
        "connect", "execute", "generate", "extract", "verify", "notify", "submit", "prepare", "initialize",
        "configure", "evaluate", "analyze", "predict", "train", "fit", "scan", "pack", "unpack", "wrap", "attach",
        "detach", "enable", "disable", "schedule", "publish", "subscribe", "serialize", "compress", "inspect",
        "cleanup", "finalize", "measure", "sync", "mount", "shuffle", "commit", "rollback", "upload", "download",
        "install", "deploy", "restore", "backup", "allocate", "release", "acquire", "poll", "ping", "retry",
        "append", "insert", "get", "put", "quote", "escape", "pad", "add", "sub", "exists", "glob", "compare",
        "equal", "test", "skip", "take", "keep", "mark", "fail", "wait", "cycle", "log",
    ),
    classes=(
        "Account", "Player", "Vehicle", "Engine", "Invoice", "Order", "Customer", "Product", "Document",
        "Channel", "Packet", "Device", "Sensor", "Profile", "Ticket", "Report", "Pipeline", "Registry", "Adapter",
        "Proxy", "Factory", "Visitor", "Plugin", "Layer", "Scene", "Sprite", "Camera", "Canvas", "Font", "Theme",
        "Route", "Store", "Agent", "Policy", "Rule", "Batch", "Dataset", "Sampler", "Metric", "Optimizer",
    ),
    methods=("casefold", "swapcase", "capitalize", "lstrip", "rstrip", "isdigit", "isalpha", "isspace",
             "splitlines", "isidentifier", "reverse", "sort", "pop", "popitem", "isnumeric", "isdecimal"),
)

DISTRACTOR_NAMES = ("alpha", "beta", "gamma", "omega", "zeta", "kappa", "sigma", "foo", "bar", "baz", "qux", "spam",
                    "eggs", "ham", "quux", "corge")
"""Names distractor code binds: in no pool, in any case."""

STATEMENTS = (
    "{a} = {n}", "{a} = [{n}, {m}]", "{a}, {b} = {n}, {m}", "{a} = {n} * {m}", "{a} = {{{n}: {m}}}",
    "{a} = ({n}, {m})", "{a} = None", "assert {n} < {n} + {m}", "import math",
)
BLOCKS = (
    "def {a}({b}):\n    return {b} + {n}", "def {a}({b}, {c}):\n    return {b} * {c}",
    "for {a} in range({n}):\n    {b} = {a}", "if {n} > {m}:\n    {a} = {n}",
)
"""Distractor pieces: each complete and runnable on its own (the answer tests execute whole prompts), without
strings or open brackets, so no template that tracks quotes or brackets is disturbed."""
PLACEHOLDERS = {"a", "b", "c", "n", "m"}


def words(*texts: str) -> set[str]:
    """Every identifier-like word in ``texts``.

    Example:
        >>> sorted(words("def f(x):", "x.y"))
        ['def', 'f', 'x', 'y']
    """
    return {w for text in texts for w in re.findall(r"[A-Za-z_]\w*", text)}


def distractor(rng: random.Random, taken: set[str] = frozenset(), answers: set[str] = frozenset()) -> str:
    """One to three distractor pieces (complete statements, or small functions and loops), ending in a blank
    line. Their names come from :data:`DISTRACTOR_NAMES` less ``taken`` (the words of the prompt they precede), so
    they bind nothing the prompt uses; pieces with a word of ``answers`` (``return`` when an answer is ``return``)
    are left out, so they mention no answer.

    Example:
        >>> code = distractor(random.Random(0), answers={"return"})
        >>> code.endswith("\\n\\n") and "return" not in code
        True
    """
    names = [w for w in DISTRACTOR_NAMES if w not in taken]
    usable = [p for p in STATEMENTS + BLOCKS if not (words(p) - PLACEHOLDERS) & answers]
    pieces = rng.sample(usable, rng.randint(1, 3))
    chosen = rng.sample(names, 3 * len(pieces))
    out = []
    for i, piece in enumerate(pieces):
        a, b, c = chosen[3 * i:3 * i + 3]
        n = rng.randint(1, 9)
        # A blank line after every block, as code is written, and one between the distractor and the prompt.
        out.append(piece.format(a=a, b=b, c=c, n=n, m=n + rng.randint(1, 9)) + ("\n\n" if piece in BLOCKS else "\n"))
    code = "".join(out)
    return code if code.endswith("\n\n") else code + "\n"
