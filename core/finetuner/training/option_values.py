"""Values of the options of a class built by name (a loss, a miner, an optimizer) checked
against its signature before it is built: a text where the default is a number, a number that
is not finite, a text where the default is a flag or a pair. Without this they fail deep in a
training step with a ``TypeError`` that names neither the option nor the class."""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError

__all__ = ["check_option_types", "is_number"]

# Options of pytorch-metric-learning losses and miners that take an object (a distance, a
# reducer, a regularizer), which a config file cannot write: a text there fails in the step.
_OBJECT_OPTIONS = frozenset(
    {"distance", "reducer", "embedding_regularizer", "weight_regularizer", "weight_init_func"}
)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind_error(default: Any, value: Any) -> str | None:
    """What is wrong with *value* for an option whose default is *default*, or ``None``."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"takes true or false, not {value!r}"
    if is_number(default) and not is_number(value):
        return f"takes a number (default {default!r}), not {value!r}"
    if isinstance(default, tuple) and not isinstance(value, (list, tuple)):
        return f"takes a list like {list(default)!r}, not {value!r}"
    return None


def check_option_types(cls: type, options: Mapping[str, Any], option: str) -> None:
    """Raise a :class:`ConfigError` naming *option* (``loss_options``, ...), the class and the
    key for a value of the wrong kind, or a number that is not finite."""
    params = inspect.signature(cls).parameters
    for key, value in options.items():
        where = f"{option}: {cls.__name__} option {key!r}"
        param = params.get(key)
        if param is not None and param.default is not inspect.Parameter.empty:
            problem = _kind_error(param.default, value)
            if problem:
                raise ConfigError(f"{where} {problem}.")
        if key in _OBJECT_OPTIONS and isinstance(value, (str, int, float)):
            raise ConfigError(
                f"{where} takes a pytorch-metric-learning object (e.g. "
                f"distances.CosineSimilarity()), not {value!r}; leave it out for the default."
            )
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(is_number(v) and not math.isfinite(v) for v in values):
            raise ConfigError(f"{where} is {value}; give a finite number.")
