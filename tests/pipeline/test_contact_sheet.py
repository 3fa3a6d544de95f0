"""The contact sheet: layout, thumbnails where they belong, the chosen candidate marked, a self-contained page."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iat.pipeline.contact_sheet import (
    CHOSEN, Metrics, SheetCandidate, SheetJob, SheetRun, SheetStyle, layout, render_html, render_png,
    write_contact_sheet,
)

STAGES = ("style_lock", "light_time", "weather_effects")


def colour_of(job: int, cand: int, stage: int) -> tuple[int, int, int]:
    return (40 + 60 * job, 30 + 50 * cand, 20 + 70 * stage)


def make_run(root: Path, *, jobs: int = 2, candidates: int = 3, cutout_job: int | None = 1,
             missing: tuple[int, int, str] | None = None) -> SheetRun:
    """Solid-colour stage outputs (one colour per job, candidate and stage) and finals; candidate 1 is chosen."""
    sheet_jobs = []
    for j in range(jobs):
        cands = []
        for k in range(candidates):
            stages = []
            for s, name in enumerate(STAGES):
                path = root / f"j{j}_c{k}_{name}.png"
                if missing != (j, k, name):
                    Image.new("RGB", (240, 160), colour_of(j, k, s)).save(path)
                stages.append((name, path.name))
            final = root / f"j{j}_c{k}_final.png"
            if j == cutout_job:  # a cut-out: a solid figure on a transparent background
                rgba = np.zeros((160, 240, 4), dtype=np.uint8)
                rgba[40:120, 80:160] = (*colour_of(j, k, 0), 255)
                Image.fromarray(rgba, "RGBA").save(final)
            else:
                Image.new("RGB", (240, 160), colour_of(j, k, 2)).save(final)
            metrics = Metrics(hard_failures=int(k == 2), soft_warnings=k, avg_chroma_exceedance=0.01 * k,
                              quality_score=0.9 - 0.1 * k, notes=("subject_cut",) if k == 2 else ())
            cands.append(SheetCandidate(index=k, seed=100 + k, status="failed_output_guard" if k == 2 else "done",
                                        stages=stages, final=final.name, metrics=metrics,
                                        rank={1: 1, 0: 2}.get(k, k + 1), chosen=k == 1))
        sheet_jobs.append(SheetJob(job_key=f"shot_{j}", prompt=f"prompt of shot {j} <b>&", status="done",
                                   candidates=cands))
    return SheetRun(id="run-1", name="Test run", created="2024-05-01T12:00:00Z", jobs=sheet_jobs, status="done",
                    provider="preview", root=root)


def decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        assert im.mode == "RGB"
        return np.asarray(im)


def thumb_origin(run: SheetRun, style: SheetStyle, job: int, cand: int, column: int) -> tuple[int, int]:
    lay = layout(run, style)
    x = style.margin + cand * (lay.block_w + style.block_gap) + style.pad + column * (style.thumb_w + style.gap)
    y = style.margin + style.header_h + job * (style.job_head_h + lay.block_h + style.job_gap) + style.job_head_h \
        + style.pad + style.stage_label_h
    return x, y


def test_size_follows_the_layout(tmp_path):
    style = SheetStyle()
    run = make_run(tmp_path)
    lay = layout(run, style)
    assert lay.columns == (*STAGES, "final")
    # 4 columns of 160 px thumbs with 4 px gaps and 6 px padding; 3 candidates with 12 px between; 16 px margins.
    assert (lay.block_w, lay.block_h) == (12 + 4 * 160 + 3 * 4, 12 + 14 + 120 + 40)
    assert (lay.width, lay.height) == (32 + 3 * 664 + 2 * 12, 32 + 40 + 2 * (30 + 186) + 14)
    assert decode(render_png(run, style)).shape == (lay.height, lay.width, 3)
    small = SheetStyle(thumb_w=96, thumb_h=64, min_width=100)
    lay = layout(make_run(tmp_path, jobs=6, candidates=4), small)
    assert decode(render_png(make_run(tmp_path, jobs=6, candidates=4), small)).shape == (lay.height, lay.width, 3)
    assert lay.width == 32 + 4 * (12 + 4 * 96 + 12) + 3 * 12


def test_same_data_same_bytes(tmp_path):
    run = make_run(tmp_path)
    assert render_png(run) == render_png(run)
    assert render_html(run) == render_html(run)


def test_each_thumbnail_sits_in_its_job_candidate_and_stage_cell(tmp_path):
    style = SheetStyle()
    run = make_run(tmp_path, cutout_job=None)
    px = decode(render_png(run, style))
    for j in range(2):
        for k in range(3):
            for s in range(len(STAGES) + 1):
                x, y = thumb_origin(run, style, j, k, s)
                centre = px[y + style.thumb_h // 2, x + style.thumb_w // 2]
                expected = colour_of(j, k, min(s, 2))  # the final column shows the last stage's colour here
                assert tuple(int(v) for v in centre) == expected, (j, k, s)


def test_chosen_candidate_is_framed_and_others_are_not(tmp_path):
    style = SheetStyle()
    run = make_run(tmp_path)
    px = decode(render_png(run, style))
    for j in range(2):
        for k in range(3):
            x, y = thumb_origin(run, style, j, k, 0)
            frame = px[y - style.stage_label_h - style.pad + 1, x + 20]  # on the block's top edge
            assert (tuple(int(v) for v in frame) == CHOSEN) == (k == 1), (j, k)


def test_transparent_cutout_shows_a_checkerboard(tmp_path):
    style = SheetStyle()
    run = make_run(tmp_path, cutout_job=1)
    px = decode(render_png(run, style))
    x, y = thumb_origin(run, style, 1, 0, 3)
    cell = px[y:y + style.thumb_h, x:x + style.thumb_w].reshape(-1, 3)
    colours = {tuple(int(v) for v in c) for c in cell}
    assert (204, 204, 204) in colours and (255, 255, 255) in colours
    assert colour_of(1, 0, 0) in colours  # the figure itself


def test_missing_image_is_a_tile_not_a_crash(tmp_path):
    style = SheetStyle()
    run = make_run(tmp_path, missing=(0, 1, "light_time"))
    px = decode(render_png(run, style))
    x, y = thumb_origin(run, style, 0, 1, 1)
    assert tuple(int(v) for v in px[y + 2, x + 2]) == (236, 236, 236)
    assert "missing" in render_html(run)


def test_html_is_self_contained_and_marks_the_chosen(tmp_path):
    run = make_run(tmp_path)
    page = render_html(run)
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower() and "url(" not in page
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 2 * 3 * 4 and all(s.startswith(("data:image/jpeg;base64,", "data:image/png;base64,"))
                                             for s in sources)
    assert any(s.startswith("data:image/png") for s in sources)  # cut-outs keep their checkerboard in PNG
    rows = re.findall(r"<tr(?: class=\"(\w+)\")?><td>(\d+)", page)
    assert sorted((k, c) for c, k in rows) == sorted([("0", ""), ("1", "chosen"), ("2", "failed")] * 2)
    assert page.count("&#10003; chosen") == 2
    assert "prompt of shot 0 &lt;b&gt;&amp;" in page and "<b>&" not in page  # text is escaped
    assert "subject_cut" in page and "Test run" in page


def test_write_contact_sheet_writes_both(tmp_path):
    run = make_run(tmp_path)
    write_contact_sheet(run, tmp_path / "sheet.png", tmp_path / "sheet.html")
    assert (tmp_path / "sheet.png").read_bytes() == render_png(run)
    assert (tmp_path / "sheet.html").read_text(encoding="utf-8") == render_html(run)


@pytest.mark.parametrize("jobs,candidates", [(0, 0), (1, 0)])
def test_empty_runs_still_render(tmp_path, jobs, candidates):
    run = make_run(tmp_path, jobs=jobs, candidates=candidates)
    lay = layout(run)
    assert decode(render_png(run)).shape == (lay.height, lay.width, 3)
    assert "<table>" in render_html(run) or jobs == 0


def test_the_html_page_drops_control_characters(tmp_path):
    """A prompt with control characters must not make the page a binary file (the asset store would refuse it)."""
    run = SheetRun(id="r", name="n\x1b[31m", created="now",
                   jobs=[SheetJob(job_key="a\x00b", prompt="x\x01y\x7fz", status="done")])
    page = render_html(run)
    assert not any(ord(c) < 32 and c not in "\n\t\r" or ord(c) == 127 for c in page)
    assert "xyz" in page and "ab" in page
