"""Shot lists: the shots of a run, given as a list in the params or as CSV text, validated whole before a run row
exists.

CSV columns (a header row first, names as below, any order; `characters` separated by `;` or `|`):

    job_key, scene, characters, time_of_day, weather, cutout

`job_key` and `scene` are required; `time_of_day` is dawn|day|dusk|night (empty: day), `weather` is
clear|rain|snow|fog (empty: clear), `cutout` is true|false|yes|no|1|0 (empty: false). A malformed row is refused
with its line number.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from iat.errors import InvalidParams
from iat.knowledge.identity import CharacterCode

MAX_SHOTS = 1000
# Printable text and plain whitespace: control characters have no place in a prompt, a log or a contact sheet.
NO_CONTROL = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
CSV_COLUMNS = ("job_key", "scene", "characters", "time_of_day", "weather", "cutout")
_TRUE = {"true", "yes", "1", "y"}
_FALSE = {"false", "no", "0", "n", ""}


class Shot(BaseModel):
    """One shot (a job of the run): what to draw, when, in which weather, and whether to cut it out."""

    # Strict, as the style rules are (iat.knowledge.rules): a flag must be a JSON boolean (not 0 or "yes") and
    # text a JSON string, as the schema says. The CSV form maps its words to these types before validation.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    job_key: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                         description="Stable key of the shot within its run (letters, digits, . _ -)")
    scene: str = Field(min_length=1, max_length=2000, pattern=NO_CONTROL,
                       description="What happens in the shot (text: no control characters)")
    characters: list[CharacterCode] = Field(default_factory=list, max_length=16, json_schema_extra={"uniqueItems": True},
                                  description="Codes of the project's characters in it, each once")
    time_of_day: Literal["dawn", "day", "dusk", "night"] = "day"
    weather: Literal["clear", "rain", "snow", "fog"] = "clear"
    cutout: bool = Field(False, description="Remove the background of the chosen output (transparent PNG)")

    @field_validator("characters")
    @classmethod
    def _unique(cls, codes: list[str]) -> list[str]:
        if len(set(codes)) != len(codes):
            raise ValueError("a character is named twice")
        return codes


def _invalid(message: str, errors: list[dict]) -> InvalidParams:
    return InvalidParams(message, details={"errors": errors})


def parse_shots(shots: list[dict] | None, shots_csv: str | None) -> list[Shot]:
    """The shots of a run from exactly one of the two forms; every problem is invalid_params naming its place."""
    if (shots is None) == (shots_csv is None):
        raise _invalid("give the shots either as `shots` (a list) or as `shots_csv` (CSV text), not both",
                       [{"loc": ["shots"], "msg": "exactly one of shots and shots_csv", "type": "missing"}])
    if shots_csv is not None:
        rows = _csv_rows(shots_csv)
    else:
        rows = [(i, row) for i, row in enumerate(shots)]
    if not rows:
        raise _invalid("the shot list is empty", [{"loc": ["shots"], "msg": "no shots", "type": "too_short"}])
    if len(rows) > MAX_SHOTS:
        raise _invalid(f"a run takes at most {MAX_SHOTS} shots", [{"loc": ["shots"], "msg": "too many shots",
                                                                    "type": "too_long"}])
    out: list[Shot] = []
    seen: dict[str, Any] = {}
    where = "line" if shots_csv is not None else "shot"
    for place, row in rows:
        try:
            shot = Shot.model_validate(row)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            field = ".".join(str(p) for p in first["loc"])
            raise _invalid(f"{where} {place}: {field}: {first['msg']}",
                           [{"loc": ["shots_csv" if where == "line" else "shots", place, *first["loc"]],
                             "msg": first["msg"], "type": first["type"]}]) from None
        if shot.job_key in seen:
            raise _invalid(f"{where} {place}: duplicate job_key {shot.job_key!r} (first at {where} "
                           f"{seen[shot.job_key]})", [{"loc": [place, "job_key"], "msg": "duplicate job_key",
                                                       "type": "duplicate"}])
        seen[shot.job_key] = place
        out.append(shot)
    return out


def _csv_rows(text: str) -> list[tuple[int, dict]]:
    """(line number, row as Shot data) for each data row of the CSV text."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return []
    except csv.Error as exc:
        raise _invalid(f"line 1: malformed CSV: {exc}", [{"loc": ["shots_csv", 1], "msg": str(exc),
                                                          "type": "csv"}]) from None
    names = [h.strip().lower() for h in header]
    unknown = [n for n in names if n not in CSV_COLUMNS]
    missing = [n for n in ("job_key", "scene") if n not in names]
    if unknown or missing or len(set(names)) != len(names):
        problem = (f"unknown column {unknown[0]!r}" if unknown else f"missing column {missing[0]!r}" if missing
                   else "a column is named twice")
        raise _invalid(f"line 1: {problem}; the columns are {', '.join(CSV_COLUMNS)}",
                       [{"loc": ["shots_csv", 1], "msg": problem, "type": "csv_header"}])
    rows: list[tuple[int, dict]] = []
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise _invalid(f"line {reader.line_num}: malformed CSV: {exc}",
                           [{"loc": ["shots_csv", reader.line_num], "msg": str(exc), "type": "csv"}]) from None
        line = reader.line_num
        if not any(v.strip() for v in values):
            continue  # a blank line
        if len(values) != len(names):
            raise _invalid(f"line {line}: {len(values)} fields, the header has {len(names)}",
                           [{"loc": ["shots_csv", line], "msg": "wrong number of fields", "type": "csv"}])
        raw = {n: v.strip() for n, v in zip(names, values)}
        row: dict[str, Any] = {"job_key": raw["job_key"], "scene": raw["scene"]}
        if raw.get("characters"):
            row["characters"] = [c.strip() for c in raw["characters"].replace("|", ";").split(";") if c.strip()]
        for name in ("time_of_day", "weather"):
            if raw.get(name):
                row[name] = raw[name].lower()
        cutout = raw.get("cutout", "").lower()
        if cutout in _TRUE:
            row["cutout"] = True
        elif cutout not in _FALSE:
            raise _invalid(f"line {line}: cutout must be true or false, not {raw['cutout']!r}",
                           [{"loc": ["shots_csv", line, "cutout"], "msg": "not a boolean", "type": "bool_parsing"}])
        rows.append((line, row))
    return rows
