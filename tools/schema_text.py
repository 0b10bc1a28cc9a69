"""Text clean-up shared by the schema generators, so their output depends on the contract only.

msgspec copies docstrings into ``description``; releases disagree on how they dedent the
continuation lines (0.23 strips the indentation, earlier ones keep it). Running every
description through :func:`inspect.cleandoc` gives the same text whichever release made it.
"""

from __future__ import annotations

import inspect
from typing import Any


def clean_descriptions(node: Any) -> Any:
    """Return ``node`` with every ``description`` string cleaned as a docstring is."""
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else clean_descriptions(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [clean_descriptions(item) for item in node]
    return node
