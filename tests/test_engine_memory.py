"""The allocator's thresholds for frames (``engine.memory.keep_freed_frames``). Each case runs in a fresh
interpreter: glibc's thresholds are per process and move with what it frees."""
import platform
import subprocess
import sys

import pytest

# where three 1080p RGBA frames are allocated: the heap, or mappings of their own (unmapped when freed)
WHERE_FRAMES_GO = """
import sys, torch
from doublure.engine.memory import keep_freed_frames
print(keep_freed_frames() if sys.argv[1] == "tuned" else None)

def mapping(address):
    for line in open("/proc/self/maps"):
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= address < end:
            return fields[5] if len(fields) > 5 else "anonymous"

frames = [torch.ones(4, 1080, 1920) for _ in range(3)]
print(*(mapping(frame.data_ptr()) for frame in frames))
"""


def run(mode: str, **env: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", WHERE_FRAMES_GO, mode], capture_output=True, text=True,
                          timeout=120, env={"PATH": "", **env})
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or not sys.platform.startswith("linux"),
                    reason="the thresholds are glibc's")
def test_frames_come_from_the_heap_once_set():
    assert run("default") == ["None"] + ["anonymous"] * 3  # glibc maps each anew until it has freed one
    assert run("tuned") == ["True"] + ["[heap]"] * 3


def test_a_users_setting_wins():
    assert run("tuned", MALLOC_TRIM_THRESHOLD_="1000000")[0] == "False"
