"""Ranking a job's candidates and choosing the best (the job's final asset).

The order, best first (documented in the API and kept stable, so a run's choice can be explained):
    1. fewer hard failures of the QA guard;
    2. fewer soft warnings;
    3. lower average chroma exceedance (how far, on average, pixels go over the style guide's max_chroma);
    4. higher quality score (iat.imaging.quality: a 0..1 blend of the soft metrics);
    5. lower candidate index.
Only candidates whose work finished (status done or failed_output_guard) are ranked; a candidate whose provider
or engine failed (status failed) has no rank. A job whose every ranked candidate has a hard failure is
`failed_output_guard` and chooses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Ranked:
    index: int
    hard_failures: int
    soft_warnings: int
    avg_chroma_exceed: float
    quality_score: float

    @property
    def key(self) -> tuple:
        return (self.hard_failures, self.soft_warnings, round(self.avg_chroma_exceed, 6),
                -round(self.quality_score, 6), self.index)


def rank(candidates: list[Ranked]) -> list[Ranked]:
    """Best first."""
    return sorted(candidates, key=lambda c: c.key)


def choose(candidates: list[Ranked]) -> Ranked | None:
    """The best candidate without a hard failure, or None (the job failed the output guard)."""
    ordered = rank(candidates)
    if not ordered or ordered[0].hard_failures > 0:
        return None
    return ordered[0]
