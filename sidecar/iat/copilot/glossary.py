"""Spoken command phrases in other languages, as the English the offline parser reads.

A speech model returns the words of its own language: a Korean model hears "저장소 동기화", not "sync the storage".
Each entry is a whole phrase (what a recognizer held to a grammar returns as one piece), mapped to a request the
parser already understands; the voice grammar lists the same phrases (iat.voice.vocabulary), so what can be said
is what can be understood. Add languages as their speech models are installed.
"""

from __future__ import annotations

import re

PHRASES: dict[str, dict[str, str]] = {
    "ko": {
        "저장소 동기화": "sync the storage",
        "품질 검사": "check the quality of the last run",
        "비용 보여줘": "show the costs",
        "마지막 지시 취소": "cancel the last instruction",
        "지시 목록": "list the instructions",
        "도움말": "help",
    },
}

_ALL = {phrase: english for table in PHRASES.values() for phrase, english in table.items()}
# Longest first, so a phrase inside a longer one does not win; whole words only.
_PATTERN = re.compile(r"(?<!\w)(" + "|".join(re.escape(p) for p in sorted(_ALL, key=len, reverse=True)) + r")(?!\w)")


def to_english(text: str) -> str:
    """`text` with every known phrase of another language replaced by its English request."""
    return _PATTERN.sub(lambda m: _ALL[m.group(1)], text)


def phrases() -> list[str]:
    """Every phrase of every language (for a recognizer's grammar: a model drops the words it does not know)."""
    return list(_ALL)
