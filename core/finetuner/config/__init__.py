"""The options of a fit: :class:`FitConfig`, their one source, and YAML config files.

``options``
    :class:`FitConfig`: every option's type, default, limits and meaning; validation, what a
    resumed run must keep, what a run records, and the documentation's options table.
``declared``
    What the declarations say: the options a resumed run keeps, the run's config record and
    the documentation's options table.
``file``
    Fit options read from a YAML config file, with errors that point at the file and line.
"""

from __future__ import annotations

from .declared import describe_data, option_rows, recorded_options, resume_checked_options
from .file import fit_config_from_options, load_fit_config
from .options import FIT_OPTIONS, FitConfig, format_validation_error, validate_fit_options

__all__ = [
    "FIT_OPTIONS",
    "FitConfig",
    "describe_data",
    "fit_config_from_options",
    "format_validation_error",
    "load_fit_config",
    "option_rows",
    "recorded_options",
    "resume_checked_options",
    "validate_fit_options",
]
