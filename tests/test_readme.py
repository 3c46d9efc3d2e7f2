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


def test_engine_api_examples_run(tmp_path, monkeypatch):
    """docs/ENGINE_API.md's examples, in order in one namespace: the node it defines, then a script using it."""
    text = (ROOT / "docs" / "ENGINE_API.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 2, "the engine API page has lost an example"
    clip = Path("resources") / "demo" / "media" / "W009_front_happy_level3_001.mp4"
    (tmp_path / clip.parent).mkdir(parents=True)
    shutil.copy(ROOT / clip, tmp_path / clip)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/ENGINE_API.md", "exec"), namespace)
    img = namespace["img"]
    assert img.tensor.shape[0] == 3 and img.tensor.dim() == 3
    assert (tmp_path / "shot.dbl").exists()
