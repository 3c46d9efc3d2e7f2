"""numpy's BLAS runs on one thread once the engine is imported (engine/threads.py); torch keeps its threads."""
import json
import os
import subprocess
import sys

PROBE = """
import json, numpy, torch, threadpoolctl
torch.set_num_threads(2)
def blas():
    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
before = blas()
import doublure.engine
a = numpy.random.default_rng(0).random((50, 3, 3)) + 3 * numpy.eye(3)
inverse_ok = bool(numpy.allclose(numpy.linalg.inv(a) @ a, numpy.eye(3)))
print(json.dumps({"before": before, "after": blas(), "torch": torch.get_num_threads(), "inverse_ok": inverse_ok}))
"""


def test_importing_the_engine_leaves_numpys_blas_one_thread_and_torch_its_own():
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2")      # a machine where numpy's BLAS would use two
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["before"] == [2] and seen["after"] == [1], seen
    assert seen["torch"] == 2 and seen["inverse_ok"], seen
