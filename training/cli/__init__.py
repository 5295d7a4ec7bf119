"""The ``glassformer`` command line: a dispatch table over typed functions (jsonargparse).

Each command is a plain function in its own module whose typed signature is the CLI schema: every config field
can be set in a YAML file (``--config``) or by a flag (``--model.d_model 128``). The argv rewrites jsonargparse
needs live in :mod:`.argv`; the work itself in ``glassformer.training`` and :mod:`glassformer.training.orchestrate`.

Exit status: 0 done; 1 training diverged (the message names the step, the quantity and the last good checkpoint);
2 a bad flag, config, file, plugin or model directory (the message names it; ``GLASSFORMER_DEBUG=1`` shows the
traceback); 130 (Ctrl-C) or 143 (SIGTERM): training stopped after writing ``OUT/checkpoints/last.ckpt``, and the
message gives the command that resumes it (the same command with ``--resume true``).
"""

from __future__ import annotations

import os
import signal
import sys

from glassformer.training.cli.analyze import analyze
from glassformer.training.cli.argv import plugin_modules, prepare_argv
from glassformer.training.cli.compare import compare
from glassformer.training.cli.evaluate import evaluate
from glassformer.training.cli.export import export
from glassformer.training.cli.finetune import finetune
from glassformer.training.cli.generate import generate
from glassformer.training.cli.logs import configure_logging
from glassformer.training.cli.plugins import load_plugins
from glassformer.training.cli.sweep import sweep
from glassformer.training.cli.train import train

COMMANDS = {"train": train, "eval": evaluate, "generate": generate, "analyze": analyze, "finetune": finetune,
            "compare": compare, "sweep": sweep, "export": export}

# ValueError covers ConfigError, ModelDirError and CheckpointError; OSError a path that cannot be read or written;
# ImportError a --plugins module that cannot be imported.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, OSError, ImportError)


def build_parser():
    """The parser ``main`` uses (jsonargparse over COMMANDS), for tests and for tools that inspect the schema.

    Example:
        >>> cfg = build_parser().parse_args(["train", "--model.d_model", "64"])
        >>> cfg.train.model.d_model
        64
    """
    from jsonargparse import auto_parser

    return auto_parser(COMMANDS, as_positional=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``glassformer`` console script.

    Example:
        >>> main(["train", "--config", "configs/debug.yaml", "--out", "runs/debug"])  # doctest: +SKIP
    """
    from jsonargparse import CLI

    configure_logging()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        # Plugins first: the tasks they register are valid choices when the analysis settings are parsed.
        load_plugins(plugin_modules(argv))
        CLI(COMMANDS, args=prepare_argv(argv), as_positional=True)
    except FloatingPointError as e:  # glassformer.training.guards.TrainingDiverged, without importing Lightning
        _fail(e, 1)
    except USER_ERRORS as e:
        _fail(e.args[0] if isinstance(e, KeyError) and e.args else e, 2)
    except KeyboardInterrupt:
        # Outside training (reading the corpus, writing the model directory); training itself stops cleanly.
        print("\nglassformer: interrupted", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)


def _fail(message: object, status: int) -> None:
    if os.environ.get("GLASSFORMER_DEBUG"):
        raise  # the exception being handled, with its traceback
    print(f"glassformer: error: {message}", file=sys.stderr)
    sys.exit(status)


__all__ = ["main", "build_parser", "COMMANDS", "USER_ERRORS"]
