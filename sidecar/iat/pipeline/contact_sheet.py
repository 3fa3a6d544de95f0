"""A run's contact sheet, as a PNG and as a self-contained HTML page, from plain data.

One row per job; in it, each candidate's stage outputs left to right and its final (or cut-out) image, under a
label with its rank and QA metrics; the chosen candidate framed in green. Transparent images sit on a
checkerboard. The HTML page embeds every thumbnail as a data: URI and needs no script or network.

The renderer knows nothing of the database: the runner fills the dataclasses below. The same data gives the same
bytes: no clock, no dict-order dependence, Pillow's built-in bitmap font, fixed encoder settings.
"""

from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

PathLike = str | os.PathLike


@dataclass(frozen=True)
class Metrics:
    hard_failures: int = 0
    soft_warnings: int = 0
    avg_chroma_exceedance: float = 0.0
    quality_score: float | None = None
    notes: tuple[str, ...] = ()  # names of the failed checks and warnings, shown beside the counts


@dataclass(frozen=True)
class SheetCandidate:
    index: int
    seed: int | None
    status: str
    stages: Sequence[tuple[str, PathLike | None]] = ()  # (stage name, output image) in pipeline order
    final: PathLike | None = None  # the selected output of this candidate: post-processed, or its cut-out
    metrics: Metrics | None = None
    rank: int | None = None
    chosen: bool = False


@dataclass(frozen=True)
class SheetJob:
    job_key: str
    prompt: str
    status: str
    candidates: Sequence[SheetCandidate] = ()


@dataclass(frozen=True)
class SheetRun:
    id: str
    name: str
    created: str
    jobs: Sequence[SheetJob] = ()
    status: str = ""
    provider: str = ""
    root: PathLike | None = None  # relative image paths are read from here


@dataclass(frozen=True)
class SheetStyle:
    thumb_w: int = 160
    thumb_h: int = 120  # images are fitted into this box, aspect kept
    gap: int = 4  # between thumbnails of one candidate
    pad: int = 6  # inside a candidate's frame
    block_gap: int = 12  # between candidates
    margin: int = 16
    header_h: int = 40  # run title and facts
    job_head_h: int = 30  # job key, status and prompt
    stage_label_h: int = 14  # stage name above each thumbnail
    label_h: int = 40  # rank and metrics under a candidate
    job_gap: int = 14
    min_width: int = 640
    html_jpeg_quality: int = 82


@dataclass(frozen=True)
class Layout:
    columns: tuple[str, ...]  # stage names in order, then "final"
    block_w: int
    block_h: int
    width: int
    height: int


BACKGROUND = (250, 250, 248)
INK = (30, 30, 36)
MUTED = (110, 110, 120)
CHOSEN = (30, 150, 60)
FAILED = (190, 40, 40)
FRAME = (200, 200, 205)
FINAL = "final"


def layout(run: SheetRun, style: SheetStyle = SheetStyle()) -> Layout:
    """Where everything goes; the PNG's size is exactly `width` x `height`."""
    columns: list[str] = []
    for job in run.jobs:
        for cand in job.candidates:
            for name, _ in cand.stages:
                if name not in columns:
                    columns.append(name)
    columns.append(FINAL)
    n = len(columns)
    kmax = max([len(job.candidates) for job in run.jobs] + [1])
    block_w = 2 * style.pad + n * style.thumb_w + (n - 1) * style.gap
    block_h = 2 * style.pad + style.stage_label_h + style.thumb_h + style.label_h
    width = max(style.min_width, 2 * style.margin + kmax * block_w + (kmax - 1) * style.block_gap)
    jobs = len(run.jobs)
    height = 2 * style.margin + style.header_h + jobs * (style.job_head_h + block_h) + max(0, jobs - 1) * style.job_gap
    return Layout(tuple(columns), block_w, block_h, width, height)


def render_png(run: SheetRun, style: SheetStyle = SheetStyle()) -> bytes:
    return _Sheet(run, style).png()


def render_html(run: SheetRun, style: SheetStyle = SheetStyle()) -> str:
    return _Sheet(run, style).html()


def write_contact_sheet(run: SheetRun, png_path: PathLike, html_path: PathLike,
                        style: SheetStyle = SheetStyle()) -> None:
    """Both files, reading and shrinking each image once."""
    sheet = _Sheet(run, style)
    Path(png_path).write_bytes(sheet.png())
    Path(html_path).write_text(sheet.html(), encoding="utf-8")


# --- internals ---


def _font() -> ImageFont.ImageFont:
    # The bitmap font compiled into Pillow: no FreeType, so the same glyphs on every machine.
    loader = getattr(ImageFont, "load_default_imagefont", None)
    return loader() if loader else ImageFont.load_default()  # type: ignore[return-value]


_CONTROL = {c: None for c in (*range(0, 9), 11, 12, *range(14, 32), 127)}


def _escape(text: str, quote: bool = True) -> str:
    """HTML-escaped text without control characters (which would make the page a binary file)."""
    return html.escape(str(text).translate(_CONTROL), quote=quote)


def _ascii(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text.replace("\n", " "))


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _checkerboard(size: tuple[int, int], cell: int = 8) -> Image.Image:
    w, h = size
    board = Image.new("RGB", size, (255, 255, 255))
    d = ImageDraw.Draw(board)
    for y in range(0, h, cell):
        for x in range((y // cell % 2) * cell, w, 2 * cell):
            d.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(204, 204, 204))
    return board


@dataclass
class _Thumb:
    image: Image.Image | None  # RGB, checkerboard already behind any transparency; None: missing or unreadable
    transparent: bool = False
    problem: str = ""
    uri: str = ""  # the HTML page's data: URI, made once


@dataclass
class _Sheet:
    run: SheetRun
    style: SheetStyle
    _cache: dict[str, _Thumb] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lay = layout(self.run, self.style)
        self.font = _font()

    # thumbnails, each read once per sheet

    def thumb(self, path: PathLike | None) -> _Thumb:
        if path is None:
            return _Thumb(None, problem="none")
        full = Path(path)
        if self.run.root is not None and not full.is_absolute():
            full = Path(self.run.root) / full
        key = str(full)
        if key not in self._cache:
            self._cache[key] = self._load(full)
        return self._cache[key]

    def _load(self, path: Path) -> _Thumb:
        try:
            with Image.open(path) as src:
                src.load()
                transparent = src.mode in ("RGBA", "LA", "PA") or "transparency" in src.info
                image = src.convert("RGBA" if transparent else "RGB")
        except FileNotFoundError:
            return _Thumb(None, problem="missing")
        except Exception:  # any decoding failure: shown as a tile, never a broken sheet
            return _Thumb(None, problem="unreadable")
        image.thumbnail((self.style.thumb_w, self.style.thumb_h), Image.Resampling.LANCZOS)
        if transparent:
            if image.getchannel("A").getextrema()[0] == 255:
                transparent = False  # an alpha channel with nothing see-through
                image = image.convert("RGB")
            else:
                board = _checkerboard(image.size)
                board.paste(image, (0, 0), image)
                image = board
        return _Thumb(image, transparent)

    # PNG

    def text(self, d: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, fill, max_w: int) -> None:
        text = _ascii(text)
        if self.font.getlength(text) > max_w:
            while text and self.font.getlength(text + "...") > max_w:
                text = text[:-1]
            text += "..."
        d.text(xy, text, font=self.font, fill=fill)

    def png(self) -> bytes:
        s, lay, run = self.style, self.lay, self.run
        sheet = Image.new("RGB", (lay.width, lay.height), BACKGROUND)
        d = ImageDraw.Draw(sheet)
        inner = lay.width - 2 * s.margin
        x0, y = s.margin, s.margin
        self.text(d, (x0, y), f"Contact sheet: {run.name}", INK, inner)
        facts = f"run {run.id}   created {run.created}"
        facts += f"   status {run.status}" if run.status else ""
        facts += f"   provider {run.provider}" if run.provider else ""
        self.text(d, (x0, y + 14), facts, MUTED, inner)
        cands = sum(len(j.candidates) for j in run.jobs)
        self.text(d, (x0, y + 26), f"{len(run.jobs)} jobs, {cands} candidates; columns: {', '.join(lay.columns)}",
                  MUTED, inner)
        y += s.header_h
        for j, job in enumerate(run.jobs):
            colour = FAILED if job.status.startswith("failed") else INK
            title = f"{job.job_key}   [{job.status}]   {len(job.candidates)} candidates"
            self.text(d, (x0, y + 2), title, colour, inner)
            self.text(d, (x0, y + 15), job.prompt, MUTED, inner)
            top = y + s.job_head_h
            for k, cand in enumerate(job.candidates):
                self.block(sheet, d, cand, x0 + k * (lay.block_w + s.block_gap), top)
            y = top + lay.block_h + s.job_gap
        buf = io.BytesIO()
        sheet.save(buf, format="PNG", compress_level=6, optimize=False)
        return buf.getvalue()

    def block(self, sheet: Image.Image, d: ImageDraw.ImageDraw, cand: SheetCandidate, x: int, y: int) -> None:
        s, lay = self.style, self.lay
        box = [x, y, x + lay.block_w - 1, y + lay.block_h - 1]
        if cand.chosen:
            d.rectangle(box, fill=(232, 246, 235), outline=CHOSEN, width=3)
        else:
            d.rectangle(box, fill=(255, 255, 255), outline=FRAME, width=1)
        images = dict((name, path) for name, path in cand.stages)
        for c, column in enumerate(lay.columns):
            tx = x + s.pad + c * (s.thumb_w + s.gap)
            ty = y + s.pad + s.stage_label_h
            thumb = self.thumb(cand.final if column == FINAL else images.get(column))
            label = "cutout" if column == FINAL and thumb.transparent else column
            self.text(d, (tx, y + s.pad), label, MUTED, s.thumb_w)
            d.rectangle([tx, ty, tx + s.thumb_w - 1, ty + s.thumb_h - 1], fill=(236, 236, 236))
            if thumb.image is not None:
                iw, ih = thumb.image.size
                sheet.paste(thumb.image, (tx + (s.thumb_w - iw) // 2, ty + (s.thumb_h - ih) // 2))
            else:
                self.text(d, (tx + 6, ty + s.thumb_h // 2 - 6), thumb.problem, MUTED, s.thumb_w - 12)
        ly = y + s.pad + s.stage_label_h + s.thumb_h + 3
        width = lay.block_w - 2 * s.pad
        head = f"#{cand.index}   rank {cand.rank if cand.rank is not None else '-'}   seed {cand.seed}"
        if cand.chosen:
            head += "   CHOSEN"
        status_colour = CHOSEN if cand.chosen else FAILED if cand.status.startswith("failed") else INK
        self.text(d, (x + s.pad, ly), f"{head}   [{cand.status}]", status_colour, width)
        m = cand.metrics
        if m is None:
            self.text(d, (x + s.pad, ly + 12), "no QA report", MUTED, width)
        else:
            self.text(d, (x + s.pad, ly + 12),
                      f"hard {m.hard_failures}   soft {m.soft_warnings}   chroma over {_fmt(m.avg_chroma_exceedance)}"
                      f"   score {_fmt(m.quality_score)}", FAILED if m.hard_failures else INK, width)
            if m.notes:
                self.text(d, (x + s.pad, ly + 24), ", ".join(m.notes), MUTED, width)

    # HTML

    def data_uri(self, thumb: _Thumb) -> str:
        if thumb.uri:
            return thumb.uri
        buf = io.BytesIO()
        if thumb.transparent:  # the checkerboard is baked in, and PNG keeps its squares crisp
            thumb.image.save(buf, format="PNG", compress_level=6, optimize=False)
            mime = "image/png"
        else:
            thumb.image.save(buf, format="JPEG", quality=self.style.html_jpeg_quality, optimize=False)
            mime = "image/jpeg"
        thumb.uri = f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"
        return thumb.uri

    def cell(self, path: PathLike | None, alt: str) -> str:
        thumb = self.thumb(path)
        if thumb.image is None:
            return f'<td class="img none">{_escape(thumb.problem)}</td>'
        w, h = thumb.image.size
        return (f'<td class="img"><img src="{self.data_uri(thumb)}" width="{w}" height="{h}" '
                f'alt="{_escape(alt)}"></td>')

    def html(self) -> str:
        run, lay = self.run, self.lay
        e = _escape
        out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
               f"<title>Contact sheet: {e(run.name)}</title>", f"<style>{_CSS}</style></head><body>",
               f"<h1>Contact sheet: {e(run.name)}</h1>",
               f'<p class="meta">run <code>{e(run.id)}</code> &middot; created {e(run.created)}'
               + (f" &middot; status {e(run.status)}" if run.status else "")
               + (f" &middot; provider {e(run.provider)}" if run.provider else "")
               + f" &middot; {len(run.jobs)} jobs</p>"]
        for job in run.jobs:
            failed = " failed" if job.status.startswith("failed") else ""
            out.append(f'<section class="job{failed}"><h2>{e(job.job_key)} '
                       f'<span class="status">{e(job.status)}</span></h2>')
            heads = "".join(f"<th>{e(c)}</th>" for c in lay.columns)
            out.append(f'<p class="prompt">{e(job.prompt)}</p><table><thead><tr><th>#</th><th>rank</th><th>seed</th>'
                       f"<th>status</th>{heads}<th>metrics</th></tr></thead><tbody>")
            for cand in job.candidates:
                images = dict((name, path) for name, path in cand.stages)
                failed = cand.status.startswith("failed")
                cls = ' class="chosen"' if cand.chosen else ' class="failed"' if failed else ""
                mark = ' <span class="badge">&#10003; chosen</span>' if cand.chosen else ""
                cells = "".join(self.cell(cand.final if c == FINAL else images.get(c),
                                          f"{job.job_key} candidate {cand.index} {c}") for c in lay.columns)
                out.append(f"<tr{cls}><td>{cand.index}{mark}</td><td>{'' if cand.rank is None else cand.rank}</td>"
                           f"<td>{'' if cand.seed is None else cand.seed}</td><td>{e(cand.status)}</td>{cells}"
                           f"<td>{self.metrics_html(cand.metrics)}</td></tr>")
            out.append("</tbody></table></section>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"

    @staticmethod
    def metrics_html(m: Metrics | None) -> str:
        if m is None:
            return '<span class="muted">no QA report</span>'
        rows = [("hard failures", str(m.hard_failures)), ("soft warnings", str(m.soft_warnings)),
                ("avg chroma exceedance", _fmt(m.avg_chroma_exceedance)), ("quality score", _fmt(m.quality_score))]
        body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
        notes = f'<p class="notes">{_escape(", ".join(m.notes))}</p>' if m.notes else ""
        return f"<dl>{body}</dl>{notes}"


_CSS = (
    "body{font:14px/1.4 system-ui,sans-serif;margin:16px;background:#fafaf8;color:#1e1e24}"
    "h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:18px 0 2px}.meta,.prompt,.muted,.notes{color:#6e6e78}"
    ".prompt{margin:0 0 6px;max-width:80em}.status{font-weight:normal;color:#6e6e78}.failed h2{color:#be2828}"
    "table{border-collapse:collapse}th,td{border:1px solid #ddd;padding:4px;vertical-align:top;text-align:left}"
    "td.img{text-align:center;vertical-align:middle}td.none{color:#6e6e78;width:160px}"
    "tr.failed td{color:#be2828}"
    "tr.chosen td{background:#e8f6eb;border-top:3px solid #1e963c;border-bottom:3px solid #1e963c}"
    ".badge{display:block;color:#1e963c;font-weight:bold;white-space:nowrap}"
    "dl{margin:0;display:grid;grid-template-columns:auto auto;gap:0 8px;font-size:12px}dd{margin:0}"
    ".notes{font-size:12px;margin:2px 0 0;max-width:16em}"
)
