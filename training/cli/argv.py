"""Rewrites of the command line before jsonargparse reads it, each for a reason jsonargparse cannot handle itself.

:func:`prepare_argv` applies them in order: aliased flags (``finetune --from``), positional lists
(``compare DIR DIR``), analysis settings given as top-level flags (``analyze DIR --level node``), and dotted flags
under the MLP union (``--model.mlp.k 16``).

Example:
    >>> prepare_argv(["analyze", "runs/tiny", "--level", "node", "--mask.steps=50"])
    ['analyze', 'runs/tiny', '--analysis.level', 'node', '--analysis.mask.steps=50']
"""

from __future__ import annotations

import json
from dataclasses import fields

import yaml

from glassformer.analysis.config import AnalysisConfig

FLAG_ALIASES = {"finetune": {"--from": "--parent"}}
"""Flags spelled otherwise than their parameter, per command: ``from`` is a Python keyword."""
POSITIONAL_LISTS = {"compare": "model_dirs"}
"""Commands whose list parameter is given as positional arguments (``compare DIR DIR ... --out X``)."""
ANALYSIS_COMMANDS = ("analyze", "compare")
"""Commands taking an ``analysis`` config whose fields may be given as top-level flags (``--n_pairs 32``)."""
ANALYSIS_FIELDS = tuple(f.name for f in fields(AnalysisConfig))
UNION_FIELDS = ("--model.mlp",)
"""Flags whose type is a union of dataclasses (the MLP variant, chosen by ``kind``)."""


def prepare_argv(argv: list[str]) -> list[str]:
    """Every rewrite of this module, in the order they depend on each other.

    Example:
        >>> prepare_argv(["finetune", "--from", "runs/tiny", "--model.mlp.k", "16"])
        ['finetune', '--parent', 'runs/tiny', '--model.mlp', '{"k": 16}']
    """
    return merge_union_flags(prefix_analysis_flags(gather_positional_lists(map_flag_aliases(list(argv)))))


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


def prefix_analysis_flags(argv: list[str]) -> list[str]:
    """For ``analyze`` and ``compare``, read ``--level node`` (any field of AnalysisConfig, dotted ones too) as
    ``--analysis.level node``, so the analysis settings keep their short flags.

    Example:
        >>> prefix_analysis_flags(["compare", "[a, b]", "--n_pairs", "8", "--out", "r"])
        ['compare', '[a, b]', '--analysis.n_pairs', '8', '--out', 'r']
    """
    if not argv or argv[0] not in ANALYSIS_COMMANDS:
        return list(argv)
    out = [argv[0]]
    for arg in argv[1:]:
        name = arg[2:].split("=", 1)[0].split(".", 1)[0] if arg.startswith("--") else None
        out.append(f"--analysis.{arg[2:]}" if name in ANALYSIS_FIELDS else arg)
    return out


def gather_positional_lists(argv: list[str]) -> list[str]:
    """Turn the positional arguments of a POSITIONAL_LISTS command into the one JSON list jsonargparse reads.

    Flags (and the value after a flag without ``=``) stay in place; a single argument that is already a list
    (``[a, b]``) is left alone.

    Example:
        >>> gather_positional_lists(["compare", "runs/a", "runs/b", "--out", "r"])
        ['compare', '["runs/a", "runs/b"]', '--out', 'r']
    """
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


def merge_union_flags(argv: list[str]) -> list[str]:
    """Rewrite ``--model.mlp.k 16`` into the mapping form ``--model.mlp '{"k": 16}'``.

    jsonargparse resolves a dotted flag under a union of dataclasses against the first member that has the field,
    silently dropping the ``kind`` (and the other values) that a YAML file set; the mapping form merges into the
    current value instead. Values are read as YAML scalars, as jsonargparse itself would read them.

    Example:
        >>> merge_union_flags(["train", "--model.mlp.k", "16", "--model.mlp.skip=true"])
        ['train', '--model.mlp', '{"k": 16, "skip": true}']
    """
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


def plugin_modules(argv: list[str]) -> list[str]:
    """The modules named by ``--plugins`` anywhere in ``argv`` (``--plugins m``, ``--plugins=m``,
    ``--plugins '[m1, m2]'``): imported before the rest is parsed, so their tasks are valid choices.

    Example:
        >>> plugin_modules(["analyze", "runs/x", "--plugins", "[my_tasks, more]", "--tasks", "my_task"])
        ['my_tasks', 'more']
    """
    found: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--plugins" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--plugins="):
            value = arg.split("=", 1)[1]
        else:
            continue
        parsed = yaml.safe_load(value)
        found += [str(m) for m in parsed] if isinstance(parsed, list) else [str(parsed)]
    return found
