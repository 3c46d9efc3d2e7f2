"""One thread for numpy's BLAS: the small linear algebra numpy does here (a mesh warp's per-triangle 3x3 inverses,
a thin-plate spline's 140-point system, landmark fits) does not pay for threads it cannot use.

numpy's OpenBLAS runs every call, however small, on a thread per core. Beside torch's own threads in a render each
such call waited for the cores torch held: SwapModel's references on the 1080p plate spent 52 ms a frame in the
inverses of a face mesh's ~900 triangles and 79 ms in one thin-plate solve, 0.2 and 2 ms on one thread
(bench/RESULTS.md, issue 21, session 17). Everything large runs in torch, on its own threads
(``torch.set_num_threads``), which this leaves alone.
"""
from __future__ import annotations


def single_threaded_numpy_blas() -> None:
    """Limit the BLAS libraries loaded in this process (numpy's OpenBLAS; torch links its own statically and is
    not among them) to one thread, from now on."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


__all__ = ["single_threaded_numpy_blas"]
