"""A movie (one file for every frame) on the farm: each chunk renders a part beside the movie, a hidden file
named by its frames and kept by a re-run when complete; once every part is there the client joins them into the
movie without encoding again (``video.join_videos``), so a movie renders as fast as a sequence."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from .report import FarmReport


def movie_part_path(path: str, frames: Sequence[int]) -> str:
    """The part of the movie at ``path`` that the chunk over ``frames`` renders: a hidden file beside it, named
    by the chunk's first and last frames."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.part{frames[0]}-{frames[-1]}{os.path.splitext(name)[1]}")


def is_complete_movie(path: str, frames: int, graph_hash: str | None = None) -> bool:
    """True if the video at ``path`` opens and holds ``frames`` frames (a part a re-run can keep) and, when
    ``graph_hash`` is given, was rendered from that graph (``FileOutputNode.version_of``, in its metadata)."""
    from doublure.engine.errors import MediaError
    from doublure.engine.video import VideoReader

    if not os.path.exists(path):
        return False
    try:
        with VideoReader(path) as reader:
            return reader.frame_count == frames and (
                graph_hash is None or reader.metadata.get("doublure/graph_hash") == graph_hash)
    except MediaError:
        return False


def join_movies(graph: Any, plan: list[tuple[tuple[str, ...], tuple[int, ...]]], report: "FarmReport") -> None:
    """Join each movie Write's parts into its movie once every part is complete, then remove them; a movie
    with a part missing (a failed frame) is listed in the report and its parts kept for a re-run."""
    import av

    from doublure.engine.provenance import is_synthetic, sign_file
    from doublure.engine.video import join_videos, metadata_from_tags

    for name in dict.fromkeys(n for names, _ in plan for n in names):
        node = graph[name]
        if not node.renders_as_one_file():
            continue
        movie = node.one_file()
        chunks = [frames for names, frames in plan if name in names]
        parts = [movie_part_path(movie, frames) for frames in chunks]
        missing = sum(not is_complete_movie(part, len(frames)) for part, frames in zip(parts, chunks))
        if missing:
            report.movies_waiting.append((movie, missing))
            continue
        join_videos(parts, movie, {"doublure/frames": f"{chunks[0][0]}-{chunks[-1][-1]}"})
        with av.open(movie) as joined:
            tags = metadata_from_tags(dict(joined.metadata))
        if is_synthetic(tags):
            sign_file(movie, tags)
        for part in parts:
            os.remove(part)
        report.movies_joined.append((movie, len(parts)))
