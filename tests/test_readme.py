"""The README's scripting example runs as written (OpenImageIO's habit: documentation examples are tests)."""
import os
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_example_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "the README has no python example"
    # Run from a copy of the paths the example names, so the test writes nothing into the checkout.
    shutil.copytree(ROOT / "resources" / "demo" / "media", tmp_path / "resources" / "demo" / "media")
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    frames = sorted(os.listdir(tmp_path / "out"))
    assert frames == sorted(["sh010.dbl"] + [f"sh010.{f:04d}.exr" for f in range(1, 11)])
