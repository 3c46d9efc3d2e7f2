"""Farm rendering on a real Dask LocalCluster (2 worker processes on loopback) with the real Read and Write.

Worker processes are slow to start on a small machine, so one cluster (``cluster`` fixture) serves the
tests that name a scheduler; ``farm_render(workers=2)`` starts its own in the first test.
"""
import dataclasses
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from distributed import Client
from distributed.security import Security

import doublure.nodes  # noqa: F401  (registers Read and Write)
from doublure import engine
from doublure.engine import colour, imageio, video
from doublure.farm.chunk import ChunkTask, render_chunk
from doublure.farm.cluster import cluster_address, start_local_cluster
from doublure.farm.movies import movie_part_path
from doublure.farm.paths import apply_path_map, map_path, parse_path_map
from doublure.farm.render import farm_render, plan_chunks
from doublure.farm.report import FarmReport
from farm_nodes import FarmTestNodes
from test_read_write import start_atomic_write

FRAMES = 20


def _project(path: Path, read_file: str, write_file: str, last: int = FRAMES, read_last: int = FRAMES,
             grain: bool = False, track: bool = False) -> str:
    """Read -> Dot -> Write saved to ``path``; with ``track``, Read -> FaceDetect (tracked, tracks stored
    beside the project) -> Write; with ``grain``, the tracked FaceDetect and a Grain (analysed; its pattern
    is seeded by the frame) before the Write."""
    graph = engine.Graph(first=1, last=last)
    node = graph.create("Read", file=read_file, first=1, last=read_last)
    for type_name in ("FaceDetect", "Grain") if grain else ("FaceDetect",) if track else ("Dot",):
        below = graph.create(type_name)
        below.set_input(0, node)
        node = below
    graph.create("Write", file=write_file).set_input(0, node)
    graph.save(str(path))  # the track file goes beside the project
    if grain or track:
        graph.node("FaceDetect1").action_track(graph)
    if grain:
        graph.node("Grain1")["analysis_samples"] = 2
        graph.node("Grain1").action_analyse(graph)
    graph.save(str(path))
    return str(path)


def _frames_on_disk(folder: Path) -> list[Path]:
    """Visible frame files (a killed writer may leave a hidden temporary, never a visible partial file)."""
    return sorted(p for p in folder.iterdir() if p.suffix == ".exr" and not p.name.startswith("."))


def _all_complete(folder: Path) -> list[int]:
    """Frame numbers of the files that open and decode fully."""
    return [int(p.name.split(".")[1]) for p in _frames_on_disk(folder) if imageio.is_complete_image(p)]


@pytest.fixture(scope="module")
def cluster():
    cluster = start_local_cluster(2, gpus=0)
    client = Client(cluster, set_as_default=False)
    client.wait_for_workers(2, timeout=120)
    yield cluster, client
    client.close()
    cluster.close()


def test_local_cluster_renders_frames_identical_to_one_process(tmp_path, media_dir):
    clip = str(media_dir / "mead" / "M030_front_angry_level3_001.mp4")
    project = _project(tmp_path / "shot.dbl", clip, str(tmp_path / "farm" / "f.####.exr"), grain=True)
    seen = []
    report = farm_render(project, frames=f"1-{FRAMES}", workers=2, chunk=3,
                         progress=lambda done, total: seen.append((done, total)))
    assert isinstance(report, FarmReport) and report.ok
    assert sorted(f for _, f in report.written) == list(range(1, FRAMES + 1))
    assert len({c.pid for c in report.chunks}) == 2  # both workers rendered
    assert seen[-1] == (FRAMES, FRAMES) and all(d1 <= d2 for (d1, _), (d2, _) in zip(seen, seen[1:]))

    graph = engine.load(project)
    graph.node("Write1")["file"] = str(tmp_path / "local" / "f.####.exr")
    engine.render(graph)
    for frame in range(1, FRAMES + 1):
        farm = imageio.read_image(tmp_path / "farm" / f"f.{frame:04d}.exr")
        local = imageio.read_image(tmp_path / "local" / f"f.{frame:04d}.exr")
        assert np.array_equal(farm.pixels, local.pixels), frame
        assert farm.metadata["doublure/frame"] == frame
    graph.node("Grain1")["disable"] = True  # the grain did something the frames agree on
    graph.node("Write1")["file"] = str(tmp_path / "plain" / "f.####.exr")
    engine.render(graph, frames="1")
    plain = imageio.read_image(tmp_path / "plain" / "f.0001.exr").pixels
    assert not np.allclose(imageio.read_image(tmp_path / "farm" / "f.0001.exr").pixels, plain, atol=1e-3)
    assert "frames/s" in report.summary()


def test_cluster_listens_on_loopback_only(cluster):
    cluster, client = cluster
    assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
    workers = client.scheduler_info()["workers"]
    assert len(workers) == 2
    for address, info in workers.items():
        assert address.startswith("tls://127.0.0.1:") and info["nanny"].startswith("tls://127.0.0.1:")
    for pid in [os.getpid(), *client.run(os.getpid).values()]:  # scheduler and nannies run in this process
        listening = [c.laddr for c in psutil.Process(pid).net_connections("inet") if c.status == psutil.CONN_LISTEN]
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening


def test_a_second_client_without_the_clusters_credentials_is_refused(cluster):
    """Another user on the machine reaches the loopback port: without this render's certificate no
    connection is made, so nothing runs on the workers (it did, over plain TCP)."""
    cluster, client = cluster
    address = cluster.scheduler_address
    plain = address.replace("tls://", "tcp://")
    with pytest.raises((OSError, TimeoutError)):
        Client(plain, timeout=5, set_as_default=False)
    # TLS with a certificate of its own (the same kind of temporary one) is refused by the handshake too
    with pytest.raises((OSError, TimeoutError)):
        Client(address, security=Security.temporary(), timeout=5, set_as_default=False)
    assert set(client.run(lambda: 1).values()) == {1}  # the render's own client still runs on the workers


def test_killed_worker_job_completes_every_frame_once(tmp_path, media_dir, cluster):
    cluster, client = cluster
    plate = str(media_dir / "people" / "d11.mp4")  # 512 px: slow enough to interrupt mid-chunk
    out = tmp_path / "out"
    project = _project(tmp_path / "shot.dbl", plate, str(out / "f.####.exr"))
    killed = []

    def kill_a_busy_worker(done, total):
        # Once frames are coming back, kill a worker in the middle of a chunk.
        if killed or done < 1:
            return
        busy = [address for address, keys in client.processing().items() if keys]
        if busy:
            pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    report = farm_render(project, **cluster_address(cluster), chunk=5, progress=kill_a_busy_worker)
    assert killed and report.ok
    assert killed[0] not in {c.pid for c in report.chunks}  # its chunk was finished by another process
    assert sorted(f for _, f in report.written + report.skipped) == list(range(1, FRAMES + 1))
    files = _frames_on_disk(out)
    assert [p.name for p in files] == [f"f.{f:04d}.exr" for f in range(1, FRAMES + 1)]
    assert _all_complete(out) == list(range(1, FRAMES + 1))
    # the chunk that ran again removed the temporary the killed worker was writing, if it was mid-write
    assert sorted(os.listdir(out)) == [p.name for p in files]
    client.wait_for_workers(2, timeout=120)  # the nanny restarted the killed worker


def test_rerun_removes_the_temporary_of_a_killed_writer(tmp_path, media_dir, cluster):
    cluster, client = cluster
    out = tmp_path / "out"
    project = _project(tmp_path / "shot.dbl", str(media_dir / "people" / "d11.mp4"), str(out / "f.####.exr"),
                       last=4)
    farm_render(project, **cluster_address(cluster), chunk=2)
    os.unlink(out / "f.0003.exr")
    killed, tmp = start_atomic_write(out / "f.0003.exr")
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    report = farm_render(project, **cluster_address(cluster), chunk=2)
    assert report.stale_temps == [tmp] and report.written == [("Write1", 3)]
    assert sorted(os.listdir(out)) == [f"f.{f:04d}.exr" for f in range(1, 5)]
    assert "removed 1 temporary file(s)" in report.summary()


def test_interrupted_render_resumes_with_only_missing_frames(tmp_path, media_dir, cluster, capsys):
    cluster, client = cluster
    plate = str(media_dir / "people" / "d11.mp4")  # 512 px: slow enough to interrupt mid-chunk
    out = tmp_path / "out"
    project = _project(tmp_path / "shot.dbl", plate, str(out / "f.####.exr"))

    def interrupt(done, total):
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        farm_render(project, **cluster_address(cluster), chunk=2, progress=interrupt)
    assert "could not confirm" not in capsys.readouterr().err  # the client waited for every chunk to stop
    present = _all_complete(out)
    assert 4 <= len(present) < FRAMES
    time.sleep(1.0)
    assert _all_complete(out) == present  # the interrupt stopped every chunk: nothing still writes

    report = farm_render(project, **cluster_address(cluster), chunk=2, progress=True)
    assert sorted(f for _, f in report.skipped) == present
    assert sorted(f for _, f in report.written) == sorted(set(range(1, FRAMES + 1)) - set(present))
    assert _all_complete(out) == list(range(1, FRAMES + 1))
    printed = capsys.readouterr().err  # the progress bar, then the totals and one line per worker
    assert f"{FRAMES}/{FRAMES} frames" in printed and "ETA" in printed
    assert f"{FRAMES - len(present)} written, {len(present)} skipped" in printed
    assert sum(line.startswith("  tls://127.0.0.1:") for line in printed.splitlines()) == 2


def _corrupt_sequence(folder: Path) -> None:
    """10 small EXR frames, frame 7 truncated to half its bytes."""
    folder.mkdir(parents=True)
    for frame in range(1, 11):
        pixels = np.full((16, 24, 3), frame / 10, np.float32)
        imageio.write_image(folder / f"plate.{frame:04d}.exr", pixels, file_type="exr", datatype="float")
    broken = folder / "plate.0007.exr"
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])


def test_corrupt_frame_reported_and_path_map_applied_on_workers(tmp_path, cluster):
    cluster, client = cluster
    _corrupt_sequence(tmp_path / "storage" / "plates")
    # The project names storage as the workers' mount /farm-storage; workers see it at tmp_path/storage.
    project = _project(tmp_path / "shot.dbl", "/farm-storage/plates/plate.####.exr",
                       "/farm-storage/out/out.####.exr", last=10)
    path_map = [f"/farm-storage={tmp_path / 'storage'}"]
    # the frame timeout guards the run: a truncated EXR once left OIIO's reader waiting forever on a worker
    report = farm_render(project, **cluster_address(cluster), chunk=4, path_map=path_map, proxy=0.5,
                         frame_timeout=60)
    assert [(node, frame) for node, frame, _ in report.failures] == [("Write1", 7)]
    assert imageio.read_image(tmp_path / "storage" / "out" / "out.0001.exr").pixels.shape == (8, 12, 3)  # proxy
    assert "plate.0007.exr" in report.failures[0][2]
    assert "FAILED Write1 frame 7" in report.summary()
    assert _all_complete(tmp_path / "storage" / "out") == [1, 2, 3, 4, 5, 6, 8, 9, 10]

    # with three frames of a chunk computing at once on each worker, the job still halts naming frame 7
    with pytest.raises(engine.DoublureError, match="frame 7"):
        farm_render(project, **cluster_address(cluster), chunk=4, path_map=path_map, halt_on_error=True,
                    frame_timeout=60, frame_workers=3)
    with pytest.raises(engine.DoublureError, match="--frame-workers 0: give 1 or more"):
        farm_render(project, **cluster_address(cluster), frame_workers=0)


def _stall_project(path: Path, out: Path, marker: str) -> str:
    graph = engine.Graph(first=1, last=10)
    stall = graph.create("TestStall", stall_frame=7, marker=marker)
    graph.create("Write", file=str(out / "f.####.exr")).set_input(0, stall)
    graph.save(str(path))
    return str(path)


def test_a_stalled_frame_ends_its_worker_and_its_chunk_runs_again(tmp_path, cluster):
    """Frame 7 blocks (as a read from a hung file server would) on the first attempt only: after the frame
    timeout its worker process ends, the nanny starts another, the chunk runs again and the job completes,
    the stall named in the report."""
    cluster, client = cluster
    client.register_plugin(FarmTestNodes())
    out = tmp_path / "out"
    marker = tmp_path / "stalled-once"
    project = _stall_project(tmp_path / "shot.dbl", out, str(marker))
    start = time.monotonic()
    report = farm_render(project, **cluster_address(cluster), chunk=5, frame_timeout=3)
    assert marker.exists() and report.ok and time.monotonic() - start < 90
    assert sorted(f for _, f in report.written + report.skipped) == list(range(1, 11))
    assert _all_complete(out) == list(range(1, 11))
    assert [(frame, seconds) for frame, _, seconds, _ in report.stalls] == [(7, 3.0)]
    assert "farm_nodes.py" in report.stalls[0][3]  # where the frame was stuck: the stalling node's code
    assert "frame 7 did not finish within 3 s" in report.summary()
    client.wait_for_workers(2, timeout=120)


def test_a_frame_that_always_stalls_fails_the_job_naming_it(tmp_path, cluster):
    cluster, client = cluster
    client.register_plugin(FarmTestNodes())
    project = _stall_project(tmp_path / "shot.dbl", tmp_path / "out", "")
    # two attempts instead of Dask's default four keep the test short
    allowed = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures)
    client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", 1))
    try:
        # three frames of a chunk computing at once: frames 8 and 9 are done while 7 hangs, and 7 is named
        with pytest.raises(engine.DoublureError, match="frame 7 did not finish within 2 s, on every worker"):
            farm_render(project, **cluster_address(cluster), chunk=5, frame_timeout=2, frame_workers=3)
    finally:
        client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", allowed))
    assert _all_complete(tmp_path / "out") == [1, 2, 3, 4, 5, 6]
    client.wait_for_workers(2, timeout=120)
    with pytest.raises(engine.DoublureError, match="frame-timeout 0"):
        farm_render(project, **cluster_address(cluster), frame_timeout=0)


def test_path_mapped_worker_uses_the_stored_tracks(tmp_path, media_dir, monkeypatch):
    """A shot tracked where the artist sees it, rendered by a worker that sees a copy of the show at another
    root through --path-map: the worker reads the stored tracks (no detection); a different plate there does
    not pass for the tracked one. ``render_chunk`` is what a worker runs; here it runs in this process so the
    detector's constructions can be counted."""
    from doublure.nodes import facedetect

    built = []

    class CountingBackend(facedetect.MediapipeBackend):
        def __init__(self, *args, **kwargs):
            built.append(args)
            super().__init__(*args, **kwargs)

    show = tmp_path / "studio" / "show"
    (show / "media").mkdir(parents=True)
    shutil.copy2(media_dir / "mead" / "M030_front_surprised_level3_001.mp4", show / "media" / "plate.mp4")
    project = _project(show / "shot.dbl", str(show / "media" / "plate.mp4"), str(show / "out" / "f.####.exr"),
                       last=4, read_last=4, track=True)
    farm_root = tmp_path / "farm"
    shutil.copytree(tmp_path / "studio", farm_root / "studio", copy_function=shutil.copy2)  # keeps the times
    (tmp_path / "studio").rename(tmp_path / "elsewhere")  # the worker cannot reach the artist's paths
    monkeypatch.setattr(facedetect, "MediapipeBackend", CountingBackend)
    path_map = parse_path_map([f"{tmp_path / 'studio'}={farm_root / 'studio'}"])
    task = ChunkTask(project, ("Write1",), (1, 2, 3, 4), path_map)
    result = render_chunk(task)
    assert result.error is None and result.failures == [] and len(result.written) == 4
    assert _all_complete(farm_root / "studio" / "show" / "out") == [1, 2, 3, 4]
    assert built == []  # the stored tracks were valid on the worker: nothing was detected

    # another plate under the same name at the worker's mount: the tracks do not describe it
    shutil.copy2(media_dir / "mead" / "W009_front_surprised_level3_001.mp4",
                 farm_root / "studio" / "show" / "media" / "plate.mp4")
    os.unlink(farm_root / "studio" / "show" / "out" / "f.0001.exr")
    result = render_chunk(dataclasses.replace(task, frames=(1,)))
    assert result.written == [("Write1", 1)] and built


def test_path_map_rules():
    pairs = parse_path_map(["/mnt/a=/net/b", "/mnt/a/deep=/fast/deep/"])
    assert pairs == (("/mnt/a", "/net/b"), ("/mnt/a/deep", "/fast/deep"))
    assert map_path("/mnt/a/shot/plate.exr", pairs) == "/net/b/shot/plate.exr"
    assert map_path("/mnt/a/deep/x.exr", pairs) == "/fast/deep/x.exr"  # the longest prefix wins
    assert map_path("/mnt/ab/x.exr", pairs) == "/mnt/ab/x.exr"  # whole components only
    assert map_path("relative/x.exr", pairs) == "relative/x.exr"
    with pytest.raises(engine.DoublureError, match="FROM=TO"):
        parse_path_map(["/mnt/a"])

    graph = engine.Graph()
    read = graph.create("Read", file="/mnt/a/plate.####.exr")
    graph.create("Write", file="out/f.####.exr").set_input(0, read)
    graph.create("Write", file="../../../mnt/a/deep/f.####.exr").set_input(0, read)  # as a project stores it
    changes = apply_path_map(graph, pairs, project_dir="/home/me/shots")
    assert changes == [("Read1", "file", "/mnt/a/plate.####.exr", "/net/b/plate.####.exr"),
                       ("Write2", "file", "../../../mnt/a/deep/f.####.exr", "/fast/deep/f.####.exr")]
    assert graph.node("Write1")["file"] == "out/f.####.exr"  # not under a mapped folder: unchanged


def test_every_write_shares_the_chunks_movies_in_parts():
    graph = engine.Graph(first=1, last=25)
    read = graph.create("Read", file="plate.mp4")
    graph.create("Write", file="out/f.####.exr").set_input(0, read)
    graph.create("Write", file="out/review.mov").set_input(0, read)
    plan = plan_chunks(graph, None, None, 10)
    assert plan == [(("Write1", "Write2"), tuple(range(1, 11))), (("Write1", "Write2"), tuple(range(11, 21))),
                    (("Write1", "Write2"), tuple(range(21, 26)))]
    assert movie_part_path("/show/out/review.mov", range(11, 21)) == "/show/out/.review.mov.part11-20.mov"
    with pytest.raises(engine.DoublureError, match="chunk"):
        plan_chunks(graph, None, None, 0)


def test_a_movie_renders_in_parts_joined_and_a_rerun_keeps_the_parts_done(tmp_path, media_dir, cluster):
    """The H.264 movie's chunks render on both workers into parts beside it, joined without encoding again:
    its frames are the EXR sequence's frames, encoded; a part left by an interrupted job is kept."""
    cluster, _ = cluster
    clip = str(media_dir / "mead" / "M030_front_angry_level3_001.mp4")
    out = tmp_path / "out"
    project = _project(tmp_path / "shot.dbl", clip, str(out / "f.####.exr"))
    graph = engine.load(project)
    graph.create("Write", file=str(out / "review.mp4")).set_input(0, graph.node("Dot1"))
    graph.save(project)
    # an earlier job that stopped after its first chunk: that part is there, the movie is not
    first = render_chunk(ChunkTask(project, ("Write2",), tuple(range(1, 5))))
    assert first.error is None and (out / ".review.mp4.part1-4.mp4").exists()
    report = farm_render(project, **cluster_address(cluster), chunk=4)
    assert report.ok and report.movies_joined == [(str(out / "review.mp4"), 5)] and not report.movies_waiting
    assert sorted(f for w, f in report.skipped if w == "Write2") == [1, 2, 3, 4]
    assert sorted(f for w, f in report.written if w == "Write2") == list(range(5, FRAMES + 1))
    assert len({c.pid for c in report.chunks}) == 2
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no parts or temporaries left
    assert "joined" in report.summary()
    with video.VideoReader(str(out / "review.mp4")) as movie:
        assert movie.frame_count == FRAMES and movie.metadata["doublure/frames"] == f"1-{FRAMES}"
        assert movie.metadata["doublure/graph"] == graph.settings["name"]   # the rest of the parts' tags
        # each movie frame is, in luma (4:2:0 keeps it whole), nearest to the EXR of its own frame
        luma = np.array([0.2126, 0.7152, 0.0722], np.float32)
        encoded = {f: colour.convert(np.ascontiguousarray(imageio.read_image(out / f"f.{f:04d}.exr").pixels[..., :3]),
                                     "ACEScg", "srgb") @ luma for f in range(1, FRAMES + 1)}
        for frame in (1, 4, 5, 13, FRAMES):  # parts' first and last frames among them
            errors = {f: np.abs(movie.read(frame - 1) @ luma - e).mean() for f, e in encoded.items()}
            assert min(errors, key=errors.get) == frame and errors[frame] < 0.01, (frame, errors[frame])


def test_more_workers_than_gpus_share_them_round_robin():
    cluster = start_local_cluster(3, gpus=2)   # on a machine without GPUs the workers just see no CUDA
    try:
        specs = [cluster.worker_spec[name]["options"] for name in sorted(cluster.worker_spec)]
        assert [s["env"]["CUDA_VISIBLE_DEVICES"] for s in specs] == ["0", "1", "0"]
        assert all(s["resources"] == {"GPU": 1} for s in specs)   # one chunk at a time each
        # each worker's frame cache takes its share of its GPU's quarter: two on GPU 0, one on GPU 1
        assert [s["env"]["DOUBLURE_PROCESSES_PER_GPU"] for s in specs] == ["2", "1", "2"]
    finally:
        cluster.close()


def test_the_restarting_cluster_overrides_a_method_dask_still_has():
    """farm.cluster keeps lost workers by overriding SpecCluster._update_worker_status (no public setting
    does it per cluster): a Dask that renamed it would silently lose workers again."""
    from distributed.deploy.spec import SpecCluster

    assert "_update_worker_status" in vars(SpecCluster)


def test_scheduler_and_workers_are_exclusive(tmp_path):
    with pytest.raises(engine.DoublureError, match="not both"):
        farm_render(str(tmp_path / "x.dbl"), scheduler="tcp://127.0.0.1:1", workers=2)
