"""The jinja2 environment shared by every HTML page (templates/ is shipped as the package interp.templates).

Autoescape is always on: ids, transcripts and concept names come from data files and are untrusted.
"""

from __future__ import annotations

from typing import Any

import jinja2


def template_environment(strict: bool = True) -> Any:
    """A jinja2 Environment over the package templates, autoescaping everything.

    ``strict`` raises on undefined template variables (a bug); ``strict=False`` lets a template probe optional
    attributes (``ChainableUndefined``).
    """
    return jinja2.Environment(
        loader=jinja2.PackageLoader("interp.templates", ""),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined if strict else jinja2.ChainableUndefined,
    )
