"""Sphinx configuration of the finetuner documentation.

Build from the repository root, with finetuner and every first-party plugin installed:

    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import sys
from pathlib import Path

import finetuner

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "finetuner"
author = "the finetuner authors"
copyright = "the finetuner authors"
release = finetuner.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "fit_options",  # docs/_ext: the options table, made from FitConfig
]

source_suffix = {".md": "markdown"}
root_doc = "index"
# docs/README.md explains how to build the site; it is not a page of it.
exclude_patterns = ["_build", "_ext", "README.md", "Thumbs.db", ".DS_Store"]

# MyST: ::: fences for directives, and anchors for headings down to level 3 so that
# pages can link to a section with [text](page.md#section-title).
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# autodoc: members in the order of the source, type hints in the signature.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"

# Broken references to documented objects are not errors (nitpicky is off): docstrings name
# types such as torch.nn.Module that this site does not document.
nitpicky = False

html_theme = "furo"
html_title = f"finetuner {release}"
pygments_style = "sphinx"
pygments_dark_style = "monokai"
