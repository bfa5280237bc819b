"""SFT rows longer than ``max_length``: dropped by name (``overlong_policy: drop``, as ms-swift's
default does) or an error (``error``), never cut. ``morelib.sft`` applies it to the Stage 1 set
and the label-only sets, counting each row with :mod:`morelib.token_counts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from morelib.token_counts import count_tokens
from morelib.vision_tokens import PixelLimits, processor_limits

OVERLONG_POLICIES = ("drop", "error")
SHOW_IDS = 10  # dropped rows named in the message


class OverlongRowsError(ValueError):
    """Rows longer than ``max_length`` with ``overlong_policy="error"``."""


@dataclass
class OverlongResult:
    """Rows kept, and the ``(id, length)`` of every row dropped for being longer than ``max_length``."""

    kept: list
    dropped: list[tuple[str, int]] = field(default_factory=list)
    max_length: int | None = None

    def message(self) -> str:
        if not self.dropped:
            return f"all {len(self.kept)} rows fit max_length={self.max_length}"
        ids = ", ".join(f"{i} ({n})" for i, n in self.dropped[:SHOW_IDS])
        more = f" and {len(self.dropped) - SHOW_IDS} more" if len(self.dropped) > SHOW_IDS else ""
        return (f"{len(self.dropped)} of {len(self.kept) + len(self.dropped)} rows are longer than "
                f"max_length={self.max_length} tokens: {ids}{more}")


def _row_id(row) -> str:
    if isinstance(row, Mapping):
        return str(row["id"])
    if isinstance(row, (tuple, list)):
        return str(row[0])
    return str(getattr(row, "id"))


def apply_overlong_policy(rows_with_lengths: Iterable[tuple[Any, int]], max_length: int | None,
                          policy: str = "drop") -> OverlongResult:
    """Keep the rows that fit ``max_length``; ``drop`` the others (counted and named, as ms-swift's
    default does) or raise :class:`OverlongRowsError` (``error``). Never truncates a row.

    ``rows_with_lengths``: ``(row, tokens)`` pairs; a row's id is ``row["id"]``, ``row[0]`` or ``row.id``.
    ``max_length=None`` keeps everything.
    """
    if policy not in OVERLONG_POLICIES:
        raise ValueError(f"overlong_policy={policy!r}: expected one of {OVERLONG_POLICIES}")
    kept, dropped = [], []
    for row, length in rows_with_lengths:
        if max_length is not None and length > max_length:
            dropped.append((_row_id(row), int(length)))
        else:
            kept.append(row)
    result = OverlongResult(kept, dropped, max_length)
    if dropped and policy == "error":
        raise OverlongRowsError(result.message() + " (overlong_policy=error; raise max_length, lower max_pixels, "
                                "or use overlong_policy=drop)")
    if not kept and dropped:
        raise OverlongRowsError(result.message() + ": no row is left to train on")
    return result


def sft_row_lengths(samples_by_id: Mapping[str, Any], rows: Sequence[tuple[str, str]], processor,
                    limits: PixelLimits | None = None,
                    prompt_fn: Callable | None = None) -> list[tuple[tuple[str, str], int]]:
    """``((id, completion), tokens)`` for SFT rows: what :func:`apply_overlong_policy` takes."""
    limits = limits or processor_limits(processor)
    samples = [samples_by_id[i] for i, _ in rows]
    counts = count_tokens(samples, processor, limits, {i: c for i, c in rows}, prompt_fn)
    out = []
    for row, count in zip(rows, counts):
        if count.error:
            raise ValueError(f"SFT row {row[0]}: {count.error}")
        out.append((row, count.total()))
    return out


