"""The ``fit-options`` directive: the table of :func:`finetuner.fit`'s options, made from
:class:`finetuner.config.FitConfig` when the site is built, so it cannot fall behind the code.

In a MyST page::

    ```{fit-options}
    ```
"""

from __future__ import annotations

import re
from typing import Any

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

COLUMNS = ("option", "default", "limits", "on resume", "meaning")
WIDTHS = (16, 14, 10, 9, 51)


def _inline(text: str) -> nodes.paragraph:
    """A paragraph of *text* in which `backticked` parts are code."""
    paragraph = nodes.paragraph()
    for i, part in enumerate(re.split(r"`([^`]+)`", text)):
        if part:
            paragraph += nodes.literal(part, part) if i % 2 else nodes.Text(part)
    return paragraph


def _row(cells: list[str]) -> nodes.row:
    row = nodes.row()
    for cell in cells:
        entry = nodes.entry()
        entry += _inline(cell)
        row += entry
    return row


class FitOptions(SphinxDirective):
    has_content = False

    def run(self) -> list[nodes.Node]:
        from finetuner.config import option_rows

        group = nodes.tgroup(cols=len(COLUMNS))
        for width in WIDTHS:
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        head += _row([name.capitalize() for name in COLUMNS])
        body = nodes.tbody()
        for row in option_rows():
            body += _row([f"`{row['option']}`", *(row[c] for c in COLUMNS[1:])])
        group += head
        group += body
        table = nodes.table(classes=["fit-options"])
        table += group
        return [table]


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("fit-options", FitOptions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
