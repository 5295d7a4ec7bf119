"""The checks every config uses, in a leaf module: it imports nothing from glassformer, so any module (the
top-level config, the variant configs, training's configs) can import it without an import cycle.

``glassformer.archs.config`` re-exports all of it; older code imports these names from there.

Example:
    >>> check(3 > 0, "model.d_model", 3, "a positive integer")
"""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A configuration value is not allowed; the message names the field, the value and what is allowed."""


# Tracebacks and reprs name the class by the path users import it from (glassformer.archs.config), which is
# where it lived before this module existed; docstrings elsewhere print that name.
ConfigError.__module__ = "glassformer.archs.config"


def check(ok: bool, field_name: str, value: Any, allowed: str) -> None:
    """Raise :class:`ConfigError` unless ``ok``.

    Example:
        >>> check(3 > 0, "model.d_model", 3, "a positive integer")
        >>> check(-1 > 0, "model.d_model", -1, "a positive integer")
        Traceback (most recent call last):
        ...
        glassformer.archs.config.ConfigError: model.d_model=-1 is not allowed: expected a positive integer
    """
    if not ok:
        raise ConfigError(f"{field_name}={value!r} is not allowed: expected {allowed}")


def check_positive_int(value: Any, field_name: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an int (not a bool) above zero.

    Example:
        >>> check_positive_int(4, "model.n_layers")
    """
    check(isinstance(value, int) and not isinstance(value, bool) and value > 0, field_name, value, "a positive integer")


def check_fraction(value: Any, field_name: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a number in (0, 1].

    Example:
        >>> check_fraction(0.25, "model.activation_sparsity.fraction")
    """
    check(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1, field_name, value,
          "a fraction in (0, 1]")
