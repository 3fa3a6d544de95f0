"""README's main job runs: the offline demo, as a real process."""

import subprocess
import sys


def test_demo_runs_offline(tmp_path):
    out = subprocess.run([sys.executable, "-m", "iat", "demo", "--home", str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "projects.create" in out.stdout and "confirmation_required" in out.stdout
    assert (tmp_path / "projects" / "demo-comic" / "project.db").is_file()
