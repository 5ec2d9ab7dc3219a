"""Sphinx configuration of the repository's site (``make site``; see egmlib.workflow.site).

The sources are staged by :func:`egmlib.workflow.site.stage`: the README as the index page, the
committed notebooks (rendered with their stored outputs, never executed) and a generated API page.
"""

import egmlib

project = "Synthetic atrial electrograms for ECGI"
author = "egmlib contributors"
copyright = "2026, egmlib contributors (MIT licence)"
release = version = egmlib.__version__

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.mathjax"]
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# the notebooks' outputs are the publication: show them as committed, run nothing
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"undoc-members": False}
# the docstrings' reST indentation nits render as block quotes; markup that breaks a page (an
# undefined substitution shows as a "problematic" link) is caught by tests/test_site.py
suppress_warnings = ["myst.header", "docutils"]

html_theme = "sphinx_book_theme"
html_title = project
html_theme_options = {"show_toc_level": 2, "navigation_with_keys": False}
html_show_sourcelink = False
# an electrogram-like trace; without a favicon the browser asks for /favicon.ico (a 404)
html_favicon = "favicon.svg"
# an explicit colour mode: without it pydata-sphinx-theme logs "invalid theme mode" on every page
html_context = {"default_mode": "light"}
