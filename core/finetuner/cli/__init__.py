"""The ``finetuner`` command line (the console script ``finetuner.cli:main``).

``app``
    :func:`main` and :func:`build_parser`: errors as one ``error:`` line, ``--debug``.
``commands``
    the built-in commands: ``fit``, ``resume``, ``demo``, ``runs``, ``models``, ``data``.
``listing``
    ``finetuner plugins``: installed plugins, one line each.
``plugin_commands``
    the commands plugins declare in the ``finetuner.commands`` entry-point group, imported
    only when they run.
"""

from .app import build_parser, main
from .listing import plugin_rows

__all__ = ["build_parser", "main", "plugin_rows"]
