"""The face watermark on real footage: written by ``mark_frame`` as Write writes it, read back as ``doublure verify``
reads it (a fresh detection, the face meshed again by the landmark model) after a JPEG at quality 75, a 50% downscale, a crop to the
face and an H.264 re-encode at CRF 23 (through PyAV); unmarked faces are not read as marked; the payload's code
corrects what it claims; bad payloads are refused."""
import av
import cv2
import numpy as np
import pytest
import torch

from doublure.faces import watermark as wm
from doublure.faces.detect import MediapipeBackend
from doublure.faces.face import Coverage, Face, invert_affine
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


def test_the_mark_survives_h264_on_the_small_demo_face(media_dir, tmp_path):
    # the 110 px face of the 256 px demo clip, the hardest case for H.264: each frame's payload read alone
    clip = media_dir / "mead/W009_front_happy_level3_001.mp4"
    frames = [frame_of(clip, index) for index in (24, 26, 28, 30)]
    movie = tmp_path / "marked.mp4"
    with av.open(str(movie), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "23", "preset": "medium"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for rgb in frames:
            planes = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255.0).contiguous()
            wm.mark_frame(planes, [swapped_face(rgb)], PAYLOAD)
            marked = (planes.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
            container.mux(stream.encode(av.VideoFrame.from_ndarray(marked, format="rgb24")))
        container.mux(stream.encode())
    with av.open(str(movie)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == len(frames)
    for index, rgb in enumerate(decoded):
        reading = read_mark([rgb])
        assert reading is not None and reading.found and reading.payload == PAYLOAD, (index, reading)


@pytest.mark.parametrize("shift, scale, turn, linear", [((0.05, -0.04), 1.07, 3.0, False),
                                                       ((-0.04, 0.05), 0.94, -3.0, True)])
def test_the_writer_meshes_from_landmarks_a_few_percent_off(media_dir, shift, scale, turn, linear):
    # the landmarks a swap hands down are tracked and smoothed, a few percent and degrees off a mesh of the written
    # pixels: the writer's passes from them must land within the reader's search; a linear-light frame (an EXR's)
    # is marked on its display encoding and read from that
    rgb = frame_of(media_dir / "plates_1080/demo1_video.mp4", 60)
    face = swapped_face(rgb)
    x0, y0, x1, y1 = face.box
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    c, s = scale * np.cos(np.radians(turn)), scale * np.sin(np.radians(turn))
    moved = face.landmarks.copy()
    moved[:, :2] = (face.landmarks[:, :2] - centre) @ np.array([[c, -s], [s, c]]).T + centre
    moved[:, :2] += (shift[0] * (x1 - x0), shift[1] * (y1 - y0))
    face.landmarks = moved
    planes = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255.0).contiguous()
    if linear:
        planes = planes ** wm.LINEAR_GAIN
    wm.mark_frame(planes, [face], PAYLOAD, linear=linear)
    if linear:
        planes = planes.clamp(min=0.0) ** (1.0 / wm.LINEAR_GAIN)
    marked = (planes.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    _, jpeg = cv2.imencode(".jpg", marked[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 75])
    reading = read_mark([np.ascontiguousarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1])])
    assert reading is not None and reading.found and reading.payload == PAYLOAD, reading


@pytest.mark.parametrize("inside", [True, False])
def test_writer_and_reader_give_the_landmark_model_the_same_pixels(media_dir, inside):
    # the writer samples its float planes, the reader the 8-bit file: the model must get the same input from both
    # (within a level), the ROI's pixels without aliasing (as a 4x supersampled reference), zeros beyond the frame
    rgb = frame_of(media_dir / "plates_1080/demo1_video.mp4", 60)
    h, w = rgb.shape[:2]
    roi = wm._roi(swapped_face(rgb).landmarks)
    if not inside:   # the face's ROI moved over the frame's bottom left corner
        roi[:, 2] = (-wm.LANDMARK_PX * roi[0, 0] / 3, h - wm.LANDMARK_PX * roi[1, 1] * 2 / 3)
    shrink = np.sqrt(abs(np.linalg.det(roi[:, :2])))
    assert shrink > 1.5   # the 1080p face: the k x k average, then bilinear
    planes = [p.numpy() for p in torch.from_numpy(rgb).permute(2, 0, 1).float().div(255.0).contiguous()]
    inputs = []
    for image in (planes, [rgb]):
        part, to_part = wm._near_face(image, roi)
        in_part = to_part[:, :2] @ roi
        in_part[:, 2] += to_part[:, 2]
        inputs.append(wm._model_input(part, in_part) * 255.0)
    written, read = inputs
    assert written.shape == read.shape == (wm.LANDMARK_PX, wm.LANDMARK_PX, 3)
    assert np.abs(written - read).max() <= 1.01
    fine = roi.copy()
    fine[:, :2] /= 4
    fine[:, 2] -= (fine[:, 0] + fine[:, 1]) * 1.5
    supersampled = cv2.warpAffine(rgb.astype(np.float32), fine, (4 * wm.LANDMARK_PX, 4 * wm.LANDMARK_PX),
                                  flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
    reference = cv2.resize(supersampled, (wm.LANDMARK_PX, wm.LANDMARK_PX), interpolation=cv2.INTER_AREA)
    edge = np.ones((wm.LANDMARK_PX, wm.LANDMARK_PX), bool)   # a pixel or two at the frame's edge: softened
    if not inside:
        edge[wm.LANDMARK_PX * 2 // 3 - 3:wm.LANDMARK_PX * 2 // 3 + 3] = False
        edge[:, wm.LANDMARK_PX // 3 - 3:wm.LANDMARK_PX // 3 + 3] = False
    assert np.abs(read - reference)[edge].mean() < 1.5
    if not inside:
        assert read[-wm.LANDMARK_PX // 4:].max() == 0 and read[:, :wm.LANDMARK_PX // 4].max() == 0
        assert read[:wm.LANDMARK_PX // 2, wm.LANDMARK_PX // 2:].mean() > 20


@pytest.mark.parametrize("clip, index", [("mead/W009_front_happy_level3_001.mp4", 30),
                                         ("plates_1080/demo1_video.mp4", 60)])
def test_the_writer_reads_the_face_once_for_mesh_and_mark(media_dir, clip, index):
    # the mark is worked out on the face's luma sampled from the part the writer read for its mesh (averaged k x k
    # on the 1080p face): its projections must be those of the luma sampled from the frame's planes, to a
    # fraction of the lattice's step
    rgb = frame_of(media_dir / clip, index)
    planes = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255.0).contiguous()
    landmarks, near = wm.writing_landmarks(planes, swapped_face(rgb).landmarks)
    to_frame = invert_affine(wm._frame_to_grid(landmarks))
    patterns = wm._code()[0]
    from_frame = patterns @ wm._residual_of(wm._grid_luma(planes, to_frame))
    from_part = patterns @ wm._residual_of(wm._grid_luma(planes, to_frame, near=near))
    assert np.sqrt(np.mean(from_frame ** 2)) > 0.2   # the face's own detail, which the mark moves onto the lattice
    assert np.abs(from_part - from_frame).max() < wm.STEP / 25


def test_the_payload_code_corrects_three_bit_errors_and_refuses_noise():
    codeword = 1.0 - 2.0 * wm._bits(PAYLOAD)[wm.SYNC_BITS:]
    rng = np.random.default_rng(7)
    for flips in range(wm.MAX_ERRORS + 1):
        cosines = codeword * rng.uniform(0.2, 1.0, codeword.size)   # soft readings of every strength
        cosines[rng.choice(codeword.size, flips, replace=False)] *= -1.0
        assert wm.decode_payload(cosines) == (PAYLOAD, flips)
    # the two copies of a bit read against each other: the stronger wins
    weak = codeword.copy()
    weak[0] *= -0.1
    assert wm.decode_payload(weak)[0] == PAYLOAD
    # random readings land within MAX_ERRORS bits of some codeword with a chance of about 4e-6
    noise = [wm.decode_payload(rng.uniform(-1.0, 1.0, codeword.size))[1] for _ in range(300)]
    assert min(noise) > wm.MAX_ERRORS
    with pytest.raises(ValueError, match="coded cosines"):
        wm.decode_payload(np.zeros(24))


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
