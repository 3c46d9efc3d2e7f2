"""The face watermark on real footage: written by ``mark_frame`` as Write writes it, read back as ``doublure verify``
reads it (a fresh detection, the face meshed again) after a JPEG at quality 75, a 50% downscale and a crop to the
face; unmarked faces are not read as marked; bad payloads are refused."""
import av
import cv2
import numpy as np
import pytest
import torch

from doublure.faces import watermark as wm
from doublure.faces.detect import MediapipeBackend
from doublure.faces.face import Coverage, Face
from doublure.faces.verify import read_mark

PAYLOAD = wm.make_payload("4f1c0e9d2b", "sh010/Write1")


def frame_of(path, index):
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i == index:
                return f.to_ndarray(format="rgb24")


def swapped_face(rgb):
    """The frame's face as SwapModel hands it down: its landmarks and a coverage over them."""
    with MediapipeBackend(detection_range="short+full", video=False) as detector:
        raw = detector.detect(rgb)[0]
    x0, y0, x1, y1 = raw.box
    gx, gy = (x1 - x0) * 0.25, (y1 - y0) * 0.25
    h, w = rgb.shape[:2]
    win = (max(int(y0 - gy), 0), min(int(y1 + gy), h), max(int(x0 - gx), 0), min(int(x1 + gx), w))
    return Face(track_id=0, box=raw.box, landmarks=raw.landmarks, iris=np.zeros((2, 3)), pose=(0, 0, 0),
                coverage=Coverage(win, torch.ones((1, win[1] - win[0], win[3] - win[2]))))


@pytest.mark.parametrize("clip, index", [("mead/W009_front_happy_level3_001.mp4", 30),
                                         ("plates_1080/demo1_video.mp4", 100)])
def test_the_mark_survives_jpeg_downscale_and_a_crop_to_the_face(media_dir, clip, index):
    rgb = frame_of(media_dir / clip, index)
    face = swapped_face(rgb)
    planes = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255.0).contiguous()
    wm.mark_frame(planes, [face], PAYLOAD)
    marked = (planes.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    changed = np.abs(marked.astype(int) - rgb.astype(int))
    y0, y1, x0, x1 = face.coverage.window
    assert changed[y0:y1, x0:x1].mean() > 0.3 and changed.sum() == changed[y0:y1, x0:x1].sum()
    _, jpeg = cv2.imencode(".jpg", marked[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 75])
    copies = {"jpeg q75": np.ascontiguousarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1]),
              "half": cv2.resize(marked, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA),
              "crop": np.ascontiguousarray(marked[y0:y1, x0:x1])}
    for attack, copy in copies.items():
        reading = read_mark([copy])
        assert reading is not None and reading.found and reading.payload == PAYLOAD, (attack, reading)
    unmarked = read_mark([rgb])
    assert unmarked is not None and not unmarked.found and unmarked.sync_z < wm.SYNC_Z


def test_unmarked_faces_are_not_read_as_marked(media_dir):
    frames = [frame_of(media_dir / clip, 10) for clip in ("people/d0.mp4", "pexels/single_face.mp4",
                                                         "actors/s18.mp4", "mead/M030_front_neutral_level1_001.mp4")]
    readings = [read_mark([f]) for f in frames if f is not None]
    assert len(readings) >= 3 and all(r is not None and not r.found for r in readings)


def test_payload_and_crc():
    # CRC-8 (poly 0x07, init 0) against a byte-wise reference on the check string "12"
    def reference(data):
        crc = 0
        for byte in data:
            crc ^= byte
            for _ in range(8):
                crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        return crc
    assert wm.crc8(0x3132, 16) == reference(b"12")
    assert wm.payload_ids(PAYLOAD) == (f"{PAYLOAD >> 8:02x}", f"{PAYLOAD & 0xFF:02x}")
    assert wm.make_payload("4f1c0e9d2b", "sh010/Write2") != PAYLOAD
    with pytest.raises(ValueError, match="not a 16-bit"):
        wm.embed(torch.zeros(3, 8, 8), [], 1 << 16)
