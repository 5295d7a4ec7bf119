"""How the command line prints glassformer's log messages: ``glassformer: ...`` on stderr, once.

Example:
    >>> configure_logging(); configure_logging()  # idempotent
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("glassformer")


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
