"""Sphinx configuration for the threadkit docs."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import threadkit

project = "threadkit"
author = "threadkit developers"
copyright = "2026, threadkit developers"
release = threadkit.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.doctest",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
myst_enable_extensions = ["colon_fence"]
exclude_patterns = ["_build"]

html_theme = "furo"
html_title = f"threadkit {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# No network at build time: the standard library is linked from a bundled inventory only when
# one is present, never fetched.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
nitpicky = False

# Docstring examples use the public names unqualified.
doctest_global_setup = "import threadkit\nfrom threadkit import *"
