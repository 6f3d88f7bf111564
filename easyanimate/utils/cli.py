"""Helpers for the entry-point scripts."""

from __future__ import annotations

import sys


def not_implemented(feature: str, issue: str) -> int:
    """Say plainly that a feature is not built yet; the caller exits non-zero with this code."""
    print(f"not implemented yet: {feature} ({issue}). Nothing was generated.", file=sys.stderr)
    return 2
