"""README's main job, and `iat-sidecar run`, as real processes: a small comic made offline, and where it is."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

from iat.imaging.pngtext import read_text


def test_demo_makes_a_six_shot_comic_offline(tmp_path):
    out = subprocess.run([sys.executable, "-m", "iat", "demo", "--home", str(tmp_path)], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"run [0-9a-f-]{36}: done \(6 done\)", out.stdout), out.stdout
    finals = re.findall(r"^  (\S+)\s+done\s+candidate (\d)\s+(\S+/final\.png)$", out.stdout, re.M)
    assert [f[0] for f in finals] == ["01-harbour", "02-market", "03-storm", "04-night", "05-mira-sheet",
                                      "06-bolt-sheet"]
    for job_key, _, path in finals:
        image = Image.open(path)
        assert image.size == (1536, 1024)  # 768x512 upscaled twice
        assert (image.mode == "RGBA") == job_key.endswith("-sheet")  # the two cut-outs are transparent
    sheet = re.search(r"^contact sheet: (\S+\.html)", out.stdout, re.M).group(1)
    html = Path(sheet).read_text()
    assert "<img" in html and "http://" not in html and html.count("CHOSEN") + html.count("chosen") >= 6
    results = Path(sheet).parent
    log = [json.loads(line) for line in (results / "run.jsonl").read_text().splitlines()]
    assert sum(1 for line in log if line["event"] == "candidate") == 24
    chosen = json.loads((results / "02-market" / f"c{finals[1][1]}-upscale.json").read_text())
    assert chosen["chosen"] is True and chosen["qa"]["hard_failures"] == 0
    assert read_text((results / "02-market" / "c0-style_lock.png").read_bytes())["iat:job"] == "02-market"


def test_run_command_runs_a_csv_shot_list_in_an_existing_project(tmp_path):
    home = tmp_path / "home"
    env = {"IAT_HOME": str(home), "PATH": "/usr/bin:/bin"}
    setup = ("import sys; from iat.app import App; from iat.settings import Settings;"
             "from iat.context import Session; from iat.rpc.protocol import Dispatcher;"
             "app = App(Settings.from_env()); d = Dispatcher(app); s = Session('t', authenticated=True);"
             "d.call('projects.create', {'slug': 'cli', 'name': 'CLI'}, s);"
             "d.call('characters.create', {'slug': 'cli', 'code': 'mira', 'name': 'Mira'}, s); app.close()")
    subprocess.run([sys.executable, "-c", setup], env=env, check=True, timeout=60)
    good = tmp_path / "shots.csv"
    good.write_text("job_key,scene,characters,time_of_day,weather,cutout\n"
                    "a,a harbour,mira,night,snow,no\nb,a field,mira,day,clear,yes\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("job_key,scene,characters\nx,a room,nobody\n")
    refused = subprocess.run([sys.executable, "-m", "iat", "run", "--project", "cli", "--shots", str(bad)],
                             env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "unknown character 'nobody'" in refused.stderr
    assert not (home / "projects" / "cli" / "runs").exists()
    done = subprocess.run([sys.executable, "-m", "iat", "run", "--project", "cli", "--shots", str(good),
                           "--candidates", "2"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2/2 candidates" not in done.stderr and "4/4 candidates" in done.stderr  # the progress bar counted
    assert re.search(r"run [0-9a-f-]{36}: done \(2 done\)", done.stdout)
    sheet = re.search(r"^contact sheet: (\S+\.html)", done.stdout, re.M).group(1)
    assert Path(sheet).is_file() and str(home) in sheet
