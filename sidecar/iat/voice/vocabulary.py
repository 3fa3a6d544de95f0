"""The grammar for short spoken commands: what the copilot understands, as phrases a recognizer can be held to.

`phrases(app, handle)` lists, in a fixed order and without repeats: the command words the copilot's parser acts on
(render, export, sync, check, cancel, upscale, ...), number words, the command phrases of other languages
(iat.copilot.glossary), the project's name and the other projects'
names, the shot keys of recent runs spoken ("s01" -> "s one"; recognizers' vocabularies hold words, not digits)
and the characters' names, all lower case and split into words (anything but letters and digits separates them,
so Korean or accented names stay whole words).

The phrases are the same whatever the model: an engine maps them onto its model's vocabulary and leaves out the
words it does not know (iat.voice.vosk_engine: vosk itself would log "Ignoring word missing in vocabulary" and drop
such a word), so a model in another language still gets a grammar (possibly with only names in it).
"""

from __future__ import annotations

import re

from iat.copilot import context, glossary

MAX_PHRASES = 400  # grammar decoding slows and confuses more with every phrase; commands need few

COMMAND_WORDS = (
    "render", "rerender", "redo", "generate", "run", "runs", "shot", "shots", "export", "sync", "upload", "push",
    "pull", "check", "quality", "qa", "cancel", "stop", "upscale", "remove", "background", "cut", "out", "edit",
    "color", "correct", "status", "cost", "costs", "budget", "list", "show", "instructions", "project", "projects",
    "asset", "image", "last", "latest", "all", "and", "the", "of", "at", "in", "with", "to", "it", "x",
    "yes", "no", "confirm", "help", "dawn", "morning", "noon", "afternoon", "dusk", "sunset", "night", "rain",
    "snow", "fog", "storm", "clear",
)
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(n: int) -> str:
    """0-99 in words ("forty two"); larger numbers digit by digit ("one two three")."""
    if n < 20:
        return NUMBER_WORDS[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + NUMBER_WORDS[n % 10])
    return " ".join(NUMBER_WORDS[int(d)] for d in str(n))


def words(text: str) -> list[str]:
    """Lower-case words of `text`: letters and digits of any script, everything else separates."""
    return re.findall(r"[^\W_]+", str(text).lower())


def spoken_key(key: str) -> str:
    """A shot key as it is said: letters and numbers apart, numbers in words ("s01" -> "s one", "panel-4" ->
    "panel four")."""
    out: list[str] = []
    for word in words(key):
        for run in re.findall(r"\d+|\D+", word):
            out.append(number_words(int(run)) if run.isdigit() else run)
    return " ".join(out)


def phrase(text: str) -> str:
    return " ".join(words(text))


def build(ctx: context.Context) -> list[str]:
    """The phrases for a copilot context (see the module docstring for what and in which order)."""
    items: list[str] = [*COMMAND_WORDS, *NUMBER_WORDS[1:11], *glossary.phrases(), phrase(ctx.project_name)]
    items += [phrase(name) for _, name in sorted(ctx.other_projects.items())]
    items += [spoken_key(key) for key in sorted(ctx.shots)]
    items += [phrase(name) for _, name in sorted(ctx.characters.items())]
    return list(dict.fromkeys(p for p in items if p))[:MAX_PHRASES]


def phrases(app, handle) -> list[str]:
    """The grammar for short commands in the project `handle` (read fresh from its database)."""
    return build(context.build(app, handle))


__all__ = ["phrases", "build", "spoken_key", "number_words", "words", "COMMAND_WORDS"]
