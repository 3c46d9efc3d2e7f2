"""Cut a clip in two at a fraction of its frames, so one part can feed a model and the other stay unseen for the
benches (issue 21). Both parts are re-encoded nearly losslessly (H.264 CRF 14) at the clip's rate.

    python resources/demo/cut_clip.py SRC FRACTION FIRST_PART REST
"""
import sys

import av


def main(src: str, fraction: float, first_part: str, rest: str) -> None:
    with av.open(src) as clip:
        stream = clip.streams.video[0]
        rate = stream.average_rate
        frames = [f.to_ndarray(format="rgb24") for f in clip.decode(stream)]
    cut = int(len(frames) * fraction)
    for name, part in ((first_part, frames[:cut]), (rest, frames[cut:])):
        with av.open(name, "w") as out:
            video = out.add_stream("libx264", rate=rate)
            video.width, video.height, video.pix_fmt = part[0].shape[1], part[0].shape[0], "yuv420p"
            video.options = {"crf": "14"}
            for frame in part:
                out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            out.mux(video.encode())


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4])
