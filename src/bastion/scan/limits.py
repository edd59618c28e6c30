"""Budgets that keep a hostile file from exhausting the machine.

Every budget, when reached, ends the analysis of that input with a
`scan.limit-exceeded` finding: the file is reported as not analysed, never as clean.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True, slots=True)
class ScanLimits:
    """Safety limits for one scan; the defaults suit real checkpoints of hundreds of GB."""

    max_depth: int = 8
    """Containers inside containers (zip in tar in gzip ...)."""
    max_members: int = 100_000
    """Members of one archive."""
    max_expanded_bytes: int = 16 * GiB
    """Bytes decompressed over the whole scan of one top-level file."""
    max_compression_ratio: int = 200
    """Expanded/compressed ratio tolerated once a member passes `ratio_grace_bytes`."""
    ratio_grace_bytes: int = 32 * MiB
    max_pickle_opcodes: int = 50_000_000
    max_memo_entries: int = 5_000_000
    max_stack_items: int = 5_000_000
    max_open_marks: int = 100_000
    """Real pickles nest MARKs a few dozen deep; each open one holds a list."""
    max_inline_bytes: int = 1 * MiB
    """Longer pickle strings and byte strings are skipped, not kept in memory."""
    max_text_bytes: int = 16 * MiB
    """Text scanned for secrets and templates per member."""
    max_header_bytes: int = 100 * MiB
    """safetensors and GGUF headers, Keras configs."""
    max_embedded_pickles: int = 64
    """Pickles nested inside pickles (pickle.loads of a literal) analysed per file."""


DEFAULT_LIMITS = ScanLimits()
