"""Command-line entry point (filled in by later layers)."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    return 0
