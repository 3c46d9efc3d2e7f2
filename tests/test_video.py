"""Video through PyAV on real footage: exact frame access, writing H.264/ProRes, broken files."""
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from doublure.engine import video
from doublure.engine.errors import MediaError

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
MEAD = MEDIA / "mead" / "M030_front_angry_level3_001.mp4"
MULTI_GOP = MEDIA / "pexels" / "face_noface.mov"  # 960x540 with a keyframe every 30 frames


@pytest.fixture(scope="module")
def mead_frames():
    with video.VideoReader(MEAD) as reader:
        return [reader.read(i) for i in range(reader.frame_count)]


def test_mead_probe():
    with video.VideoReader(MEAD) as reader:
        assert (reader.frame_count, reader.fps, reader.width, reader.height) == (98, 25, 256, 256)


def test_random_access_equals_sequential_decode(mead_frames):
    with video.VideoReader(MEAD) as reader:
        for index in (60, 3, 97, 0, 61, 40):
            np.testing.assert_array_equal(reader.read(index), mead_frames[index], err_msg=f"frame {index}")


def test_seek_lands_on_exact_frame_across_keyframes():
    with video.VideoReader(MULTI_GOP) as reader:
        sequential = [reader.read(i) for i in range(70)]
    with av.open(str(MULTI_GOP)) as container:  # what a naive seek returns: the keyframe before
        stream = container.streams.video[0]
        pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None)
        container.seek(pts[45], stream=stream)
        naive = next(container.decode(stream))
        assert naive.pts != pts[45]
    with video.VideoReader(MULTI_GOP) as reader:
        for index in (45, 31, 29, 69, 0, 30):
            np.testing.assert_array_equal(reader.read(index), sequential[index], err_msg=f"frame {index}")


def test_sequential_reads_do_not_seek():
    with video.VideoReader(MEAD) as reader:
        reader.read(20)
        seeks = reader.seeks
        for index in range(21, 40):
            reader.read(index)
        assert reader.seeks == seeks


def test_one_reader_shared_by_threads(mead_frames):
    errors = []
    with video.VideoReader(MEAD) as reader:
        def worker(indices):
            for i in indices:
                if not np.array_equal(reader.read(i), mead_frames[i]):
                    errors.append(i)
        threads = [threading.Thread(target=worker, args=(range(s, 98, 7),)) for s in (0, 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


@pytest.mark.parametrize("codec,ext,tolerance", [
    ("h264", ".mp4", 0.02), ("prores_422hq", ".mov", 0.005), ("prores_4444", ".mov", 0.005),
])
def test_writer_roundtrip_with_provenance(tmp_path, mead_frames, codec, ext, tolerance):
    path = tmp_path / f"out{ext}"
    provenance = {"synthetic_face": True, "model": "sha256:abc", "rights": "AGR-7"}
    writer = video.VideoWriter(path, codec=codec, fps=Fraction(24000, 1001), crf=12,
                               metadata={"doublure/provenance": provenance, "doublure/graph": "sh010"})
    for frame in mead_frames[:6]:
        writer.write(frame)
    assert not path.exists(), "the video appears only when finished"
    writer.close()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    with video.VideoReader(path) as reader:
        assert (reader.frame_count, reader.fps, reader.width, reader.height) == (6, Fraction(24000, 1001), 256, 256)
        assert reader.metadata["doublure/provenance"] == provenance
        assert reader.metadata["doublure/graph"] == "sh010"
        for i in (0, 5, 2):
            assert np.abs(reader.read(i) - mead_frames[i]).mean() < tolerance


def test_writer_refuses_an_unknown_preset(tmp_path):
    with pytest.raises(MediaError, match=r"a\.mp4: unknown preset 'quick'"):
        video.VideoWriter(tmp_path / "a.mp4", preset="quick")
    assert list(tmp_path.iterdir()) == []


def test_writer_abort_and_bad_input_leave_nothing(tmp_path, mead_frames):
    writer = video.VideoWriter(tmp_path / "a.mp4")
    writer.write(mead_frames[0])
    writer.abort()
    with pytest.raises(MediaError, match="even size"):
        video.VideoWriter(tmp_path / "b.mp4").write(np.zeros((5, 8, 3), np.float32))
    with pytest.raises(MediaError, match=r"prores_4444 goes in \.mov"):
        video.VideoWriter(tmp_path / "c.mp4", codec="prores_4444")
    assert list(tmp_path.iterdir()) == []


def test_missing_and_out_of_range(tmp_path):
    with pytest.raises(MediaError, match=r"missing video file .*nope\.mp4"):
        video.VideoReader(tmp_path / "nope.mp4")
    with video.VideoReader(MEAD) as reader:
        with pytest.raises(MediaError, match=r"frame 98 is out of range for .*angry_level3_001\.mp4 \(frames 0-97\)"):
            reader.read(98)


def test_truncated_videos_name_file_and_frame(tmp_path, mead_frames):
    whole = tmp_path / "whole.mp4"
    writer = video.VideoWriter(whole, codec="h264")
    for frame in mead_frames[:30]:
        writer.write(frame)
    writer.close()
    data = whole.read_bytes()
    # Index at the front (faststart): the frames before the cut decode, the ones after fail by name.
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with video.VideoReader(cut) as reader:
        assert reader.frame_count == 30
        reader.read(0)
        with pytest.raises(MediaError, match=r"(truncated video .*cut\.mp4: frame 29 is missing)"):
            reader.read(29)
    # Index at the end (MEAD's layout): nothing can be opened.
    headless = tmp_path / "headless.mp4"
    headless.write_bytes(MEAD.read_bytes()[:40000])
    with pytest.raises(MediaError, match=r"cannot open video .*headless\.mp4"):
        video.VideoReader(headless)


@pytest.mark.parametrize("codec,ext", [("h264", "mp4"), ("prores_422hq", "mov")])
def test_writer_takes_code_values_as_it_rounds_floats(tmp_path, mead_frames, codec, ext):
    """Code values given as they are encode to the same file as the float frames they round from."""
    frames = [f * 1.1 - 0.05 for f in mead_frames[:3]]  # values beyond [0, 1] are clipped either way
    paths = []
    for given in ("float", "codes"):
        path = tmp_path / f"{given}.{ext}"
        writer = video.VideoWriter(path, codec=codec, preset="ultrafast")
        channels, dtype = writer.code_type
        top = float(np.iinfo(dtype).max)
        for frame in frames:
            writer.write(frame if given == "float" else (np.clip(frame, 0.0, 1.0) * top + 0.5).astype(dtype))
        writer.close()
        paths.append(path)
    assert channels == 3 and (dtype == np.uint8) == (codec == "h264")
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_join_videos_decodes_to_the_parts_frames_bit_for_bit(tmp_path):
    """Parts written alike (an H.264 movie's farm chunks, B-frames and all) join without encoding again:
    the joined file decodes to the parts' frames, its timestamps run on evenly, and its tags are the first
    part's with the whole movie's keys given."""
    rng = np.random.default_rng(0)
    frames = [np.clip(rng.normal(0.5, 0.2, (64, 96, 3)), 0, 1).astype(np.float32) for _ in range(23)]
    parts = []
    for first, last in ((0, 10), (10, 20), (20, 23)):
        part = str(tmp_path / f"part{first}.mp4")
        writer = video.VideoWriter(part, fps=24, metadata={"doublure/frames": f"{first + 1}-{last}",
                                                           "doublure/synthetic_face": True})
        for pixels in frames[first:last]:
            writer.write(pixels)
        writer.close()
        parts.append(part)
    joined = str(tmp_path / "movie.mp4")
    video.join_videos(parts, joined, {"doublure/frames": "1-23"})
    decoded_parts = []
    for part in parts:
        with video.VideoReader(part) as reader:
            decoded_parts += [reader.read(i) for i in range(reader.frame_count)]
    with video.VideoReader(joined) as reader:
        assert reader.frame_count == 23
        assert all(np.array_equal(reader.read(i), decoded_parts[i]) for i in range(23))
        assert reader.metadata["doublure/frames"] == "1-23" and reader.metadata["doublure/synthetic_face"] is True
    with av.open(joined) as container:
        stream = container.streams.video[0]
        pts = sorted(p.pts for p in container.demux(stream) if p.dts is not None)
    assert len(set(np.diff(pts))) == 1

    other = str(tmp_path / "other.mp4")
    writer = video.VideoWriter(other, fps=24)
    writer.write(np.zeros((32, 48, 3), np.float32))
    writer.close()
    with pytest.raises(MediaError, match="encoded unlike"):
        video.join_videos([parts[0], other], str(tmp_path / "bad.mp4"))
    assert not (tmp_path / "bad.mp4").exists()
    with pytest.raises(MediaError, match="no parts"):
        video.join_videos([], str(tmp_path / "none.mp4"))


def test_windows_of_frames_around_each_frame_decode_every_frame_once():
    """SwapModel's temporal work reads +-10 frames around each frame it makes: with the reader's recent
    frames kept, stepping through the shot decodes each frame once and seeks only at the start."""
    with video.VideoReader(MULTI_GOP) as reader:
        expected = {}
        for centre in range(40, 50):
            for index in list(range(centre - 10, centre + 11)) + [centre]:
                expected.setdefault(index, reader.read(index))
                np.testing.assert_array_equal(reader.read(index), expected[index], err_msg=f"frame {index}")
        assert reader.decodes == len(expected) == 30
        assert reader.seeks <= 1
    with video.VideoReader(MULTI_GOP) as fresh:  # what was kept is what a fresh decode gives
        for index in (30, 45, 59):
            np.testing.assert_array_equal(fresh.read(index), expected[index])


def test_a_window_read_backwards_first_is_one_forward_decode():
    """SwapModel asks for its frame, then the frames before it nearest first, then those after: the read that
    seeks keeps the frames it passes on the way, so the window costs one seek and one decode per frame."""
    with video.VideoReader(MEAD) as reader:
        window = [50] + list(range(49, 39, -1)) + list(range(51, 61))
        got = {index: reader.read(index) for index in window}
        assert reader.seeks == 1
        assert reader.decodes == video.KEPT_BEFORE_SEEK + 1 + 10
    with video.VideoReader(MEAD) as fresh:
        for index in (40, 49, 60):
            np.testing.assert_array_equal(fresh.read(index), got[index], err_msg=f"frame {index}")


def test_previews_are_the_frames_scaled_whether_kept_or_decoded():
    with video.VideoReader(MEAD) as reader:
        w, h = reader.preview_size
        assert (w, h) == (64, 64)
        decoded = reader.preview_codes(70)[0].copy()   # decoded from the keyframe, keeping frames 0-69
        assert decoded.shape == (h, w, 3) and reader.has_preview(69) and not reader.has_preview(71)
        full = reader.read(70)
        # the decoder's area filter: each preview pixel is the mean of a 4x4 block of the frame (codes)
        blocks = full.reshape(h, 4, w, 4, 3).mean(axis=(1, 3)) * 255
        assert np.abs(blocks - decoded).mean() < 1.5
        reader.start_preview_pass()
        reader._preview_pass.join(timeout=60)
        assert reader.preview_pass_done()
        assert all(reader.has_preview(i) for i in range(reader.frame_count))
        np.testing.assert_array_equal(reader.preview_codes(70)[0], decoded)
    with video.VideoReader(MEAD) as fresh:   # a preview decoded alone is the one the pass kept
        fresh.start_preview_pass()
        fresh._preview_pass.join(timeout=60)
        np.testing.assert_array_equal(fresh.preview_codes(70)[0], decoded)
