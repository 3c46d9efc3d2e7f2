"""Provenance on real renders (Read -> FaceDetect -> SwapModel -> Write): Content Credentials read back by
c2pa-python's own reader, a one-pixel change that fails them, the EXR sidecar, the signing identity and its
errors, consent refusing and overriding a render (locally, from the command line, on the farm's client), a
movie rendered in parts on the farm signed once after the join, and ``doublure verify``."""
import json
import os
import stat
import struct
import zlib

import c2pa
import cv2
import numpy as np
import OpenImageIO as oiio
import pytest
import torch
from cryptography import x509

import doublure.nodes  # noqa: F401  (registers the node library)
from doublure import engine
from doublure.app.cli import main
from doublure.engine.provenance import (ConsentRefused, SigningError, identity_from_files, load_identity,
                                        make_override, read_credentials, local_test_identity, trust_anchors)
from doublure.engine.provenance.credentials import DIGITAL_SOURCE_TYPE, SIDECAR_SUFFIX
from doublure.models.arch import IdentityModel, config_for
from doublure.models.dbm import model_digest, rights_record, save_model

CLIP = "mead/W009_front_angry_level3_001.mp4"
FRAMES = 2


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    """A config folder of the module's own: the test identity is made there on first use."""
    folder = str(tmp_path_factory.mktemp("config"))
    saved = os.environ.get("DOUBLURE_CONFIG_DIR")
    os.environ["DOUBLURE_CONFIG_DIR"] = folder
    yield folder
    if saved is None:
        del os.environ["DOUBLURE_CONFIG_DIR"]
    else:
        os.environ["DOUBLURE_CONFIG_DIR"] = saved


def make_model(path, **rights):
    torch.manual_seed(0)
    record = rights_record(**{"subject": "M030", "consent_given_by": "M030 (the actor)", "consent_date": "2024-01-10",
                              "agreement": "AGR-0042", "allowed_uses": "feature,trailer", "expiry": "2099-12-31",
                              **rights}) if rights.get("expiry") != "" else None
    save_model(str(path), IdentityModel(config_for(64, "df", 0.125)),
               {"name": "m030", "face_type": "whole_face", **({"rights": record} if record else {})})
    return str(path)


def shot(media_dir, model, out, types=("png", "jpg", "tif", "exr", "mp4"), use="feature"):
    g = engine.Graph(first=1, last=FRAMES, name="sh010")
    if use:
        g.set_setting("declared_use", use)
    read = g.create("Read", file=str(media_dir / CLIP), first=1, last=FRAMES)
    fd = g.create("FaceDetect", inputs=[read])
    sw = g.create("SwapModel", inputs=[fd], model=model)
    for ext in types:
        name = f"sh010.mp4" if ext == "mp4" else f"sh010.####.{ext}"
        g.create("Write", inputs=[sw], file=str(out / name))
    return g


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, media_dir, config):
    root = tmp_path_factory.mktemp("render")
    model = make_model(root / "m030.dbm")
    out = root / "out"
    g = shot(media_dir, model, out)
    report = g.render(None, f"1-{FRAMES}")
    assert report.ok and len(report.written) == 5 * FRAMES
    return out, model, g


def c2pa_store(path):
    reader = c2pa.Reader(str(path))
    return reader.get_validation_state(), json.loads(reader.json())


@pytest.mark.parametrize("name", ["sh010.0001.png", "sh010.0002.jpg", "sh010.0001.tif", "sh010.mp4"])
def test_signed_outputs_are_valid_for_c2pas_own_reader(rendered, name):
    out, model, _ = rendered
    state, store = c2pa_store(out / name)
    assert state == "Valid"  # intact and signed; the test CA is not in c2pa's default trust list
    failures = [f["code"] for f in store["validation_results"]["activeManifest"].get("failure", [])]
    assert failures == ["signingCredential.untrusted"]
    active = store["manifests"][store["active_manifest"]]
    assertions = {a["label"]: a["data"] for a in active["assertions"]}
    action = assertions["c2pa.actions.v2"]["actions"][0]
    assert action["digitalSourceType"] == DIGITAL_SOURCE_TYPE
    record = assertions["org.doublure.provenance"]
    assert record["synthetic_face"] is True and record["model"] == "m030"
    assert record["model_digest"] == model_digest(model)
    assert "AGR-0042" in record["rights"] and record["graph"] == "sh010"
    assert record["test_identity"] is True and "TEST" in active["signature_info"]["issuer"]
    assert record.get("frame") in (1, 2) or record.get("frames") == f"1-{FRAMES}"


def test_the_test_identity_is_a_ca_and_a_leaf_in_the_users_config(rendered, config):
    folder = os.path.join(config, "test-identity")
    assert stat.S_IMODE(os.stat(os.path.join(folder, "key.pem")).st_mode) == 0o600
    leaf, ca = x509.load_pem_x509_certificates(open(os.path.join(folder, "chain.pem"), "rb").read())
    leaf.verify_directly_issued_by(ca)
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    identity = load_identity()
    assert identity.is_test and identity.chain_pem == local_test_identity().chain_pem  # made once, then reused
    # this machine's verifier trusts its own test CA (and says it is a test identity)
    assert read_credentials(str(rendered[0] / "sh010.0001.png"), trust_anchors()).state == "trusted"


def png_with_one_pixel_changed(src, dst):
    """The PNG's chunks as they are (its manifest included) with one pixel's red code changed in the image data."""
    data = open(src, "rb").read()
    pos, chunks = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunks.append([kind, data[pos + 8:pos + 8 + length]])
        pos += 12 + length
    idat = b"".join(body for kind, body in chunks if kind == b"IDAT")
    raw = bytearray(zlib.decompress(idat))
    raw[1] ^= 0x01    # row 0's first pixel (after the filter byte): a one-code change of its red
    out, written = [data[:8]], False
    for kind, body in chunks:
        if kind == b"IDAT":
            if written:
                continue
            kind, body, written = kind, zlib.compress(bytes(raw)), True
        out.append(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body)))
    open(dst, "wb").write(b"".join(out))


def test_one_pixel_changed_fails_the_credentials(rendered, tmp_path):
    out, _, _ = rendered
    tampered = tmp_path / "tampered.png"
    png_with_one_pixel_changed(out / "sh010.0001.png", tampered)
    assert oiio.ImageBuf(str(tampered)).get_pixels(oiio.UINT8)[0, 0, 0] != \
        oiio.ImageBuf(str(out / "sh010.0001.png")).get_pixels(oiio.UINT8)[0, 0, 0]
    state, store = c2pa_store(tampered)
    assert state == "Invalid"
    codes = [f["code"] for f in store["validation_results"]["activeManifest"]["failure"]]
    assert "assertion.dataHash.mismatch" in codes
    reading = read_credentials(str(tampered), trust_anchors())
    assert reading.state == "invalid" and any("dataHash.mismatch" in p for p in reading.problems)


def test_exr_has_a_sidecar_bound_to_its_bytes(rendered, tmp_path):
    out, model, _ = rendered
    exr = out / "sh010.0002.exr"
    reading = read_credentials(str(exr), trust_anchors())
    assert reading.state == "trusted" and reading.where == "sidecar" and reading.record["frame"] == 2
    assert reading.record["model_digest"] == model_digest(model) and reading.test_identity
    # the header record stays in the EXR
    assert oiio.ImageInput.open(str(exr)).spec().getattribute("doublure:synthetic_face") is not None
    # one pixel changed: the file's hash no longer matches the signed one
    copy = tmp_path / exr.name
    buf = oiio.ImageBuf(str(exr))
    pixel = list(buf.getpixel(10, 10))
    pixel[0] += 0.25
    buf.setpixel(10, 10, pixel)
    buf.write(str(copy))
    (tmp_path / (exr.name + SIDECAR_SUFFIX)).write_text((out / (exr.name + SIDECAR_SUFFIX)).read_text())
    broken = read_credentials(str(copy), trust_anchors())
    assert broken.state == "invalid" and "changed since it was signed" in broken.problems[0]
    # a sidecar edited to claim another model fails its signature
    sidecar = json.loads((out / (exr.name + SIDECAR_SUFFIX)).read_text())
    sidecar["manifest"]["assertions"][1]["data"]["model"] = "someone else"
    (tmp_path / (exr.name + SIDECAR_SUFFIX)).write_text(json.dumps(sidecar))
    buf = oiio.ImageBuf(str(exr))
    buf.write(str(copy))
    assert read_credentials(str(copy), trust_anchors()).state == "invalid"


def test_verify_gives_one_verdict_per_file_and_an_exit_status(rendered, media_dir, tmp_path, capsys):
    out, _, _ = rendered
    plain = tmp_path / "plate.png"
    buf = oiio.ImageBuf(str(media_dir / "stills/astronaut.png"))
    buf.write(str(plain))
    assert main(["verify", str(out / "sh010.0001.png"), str(out / "sh010.mp4"), str(out / "sh010.0001.exr")]) == 0
    text = capsys.readouterr().out
    assert text.count("SYNTHETIC FACE") == 3 and "TEST identity" in text and "model m030" in text
    assert main(["verify", str(plain)]) == 1
    text = capsys.readouterr().out
    assert "no synthetic face found" in text and "credentials: none" in text and "header:      none" in text
    assert main(["verify", str(tmp_path / "missing.png")]) == 2
    assert "missing.png: ERROR: no such file" in capsys.readouterr().out


def test_broken_identity_files_are_named(tmp_path, config):
    folder = os.path.join(config, "test-identity")
    local_test_identity()
    garbage = tmp_path / "cert.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(SigningError, match="cert.pem: not a PEM certificate chain"):
        identity_from_files(str(garbage), os.path.join(folder, "key.pem"))
    other = tmp_path / "other"
    os.environ["DOUBLURE_CONFIG_DIR"] = str(other)
    try:
        other_key = os.path.join(local_test_identity().source, "key.pem")
    finally:
        os.environ["DOUBLURE_CONFIG_DIR"] = config
    with pytest.raises(SigningError, match="does not belong to the certificate"):
        identity_from_files(os.path.join(folder, "chain.pem"), other_key)
    with pytest.raises(SigningError, match="missing.pem: cannot read it"):
        identity_from_files(os.path.join(folder, "chain.pem"), str(tmp_path / "missing.pem"))
    # a studio identity from the environment wins over the test identity, and both variables are needed
    os.environ["DOUBLURE_SIGNING_CERT"] = os.path.join(folder, "chain.pem")
    try:
        with pytest.raises(SigningError, match="set both"):
            load_identity()
        os.environ["DOUBLURE_SIGNING_KEY"] = os.path.join(folder, "key.pem")
        identity = load_identity()
        assert not identity.is_test and identity.source == "DOUBLURE_SIGNING_CERT"
    finally:
        os.environ.pop("DOUBLURE_SIGNING_CERT")
        os.environ.pop("DOUBLURE_SIGNING_KEY", None)


@pytest.mark.parametrize("rights, use, why", [
    ({"expiry": ""}, "feature", "no rights record"),
    ({"consent_date": "2020-01-01", "expiry": "2021-01-01"}, "feature", "rights expired on 2021-01-01"),
    ({}, "advertising", "use 'advertising' is not allowed (allowed: feature, trailer)"),
    ({}, "", "the project declares no use"),
])
def test_consent_refuses_the_render_with_one_message(tmp_path, media_dir, config, rights, use, why):
    model = make_model(tmp_path / "m.dbm", **rights)
    g = shot(media_dir, model, tmp_path / "out", types=("png",), use=use)
    with pytest.raises(ConsentRefused, match="consent does not cover this render: SwapModel1 \\(m030\\): .*" +
                       why.replace("(", "\\(").replace(")", "\\)")):
        g.render(None, "1-1")
    assert not (tmp_path / "out").exists()


def test_override_is_recorded_in_every_frame_and_manifest(tmp_path, media_dir, config, capsys):
    model = make_model(tmp_path / "m.dbm", consent_date="2020-01-01", expiry="2021-01-01")
    g = shot(media_dir, model, tmp_path / "out", types=("png", "exr"))
    project = str(tmp_path / "sh010.dbl")
    g.save(project)
    assert main(["render", project, "-F", "1-2"]) == 1
    assert "consent does not cover this render" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main(["render", project, "-F", "1-2", "--override-consent", "renewal signed 2026-12-01, AGR-0042b"]) == 0
    for frame in (1, 2):
        spec = oiio.ImageInput.open(str(tmp_path / f"out/sh010.000{frame}.exr")).spec()
        record = json.loads(spec.getattribute("doublure:consent_override"))
        assert record["reason"] == "renewal signed 2026-12-01, AGR-0042b"
        assert record["who"] and record["when"].startswith("20") and "expired" in record["overrides"][0]
        manifest = read_credentials(str(tmp_path / f"out/sh010.000{frame}.png"), trust_anchors())
        assert manifest.record["consent_override"]["reason"] == record["reason"]
    assert main(["verify", str(tmp_path / "out/sh010.0001.png")]) == 0
    assert "consent OVERRIDDEN by" in capsys.readouterr().out
    with pytest.raises(engine.DoublureError, match="needs a reason"):
        make_override("  ")


def test_farm_checks_consent_on_the_client_and_signs_the_joined_movie_once(tmp_path, media_dir, config):
    from doublure.farm.render import farm_render

    model = make_model(tmp_path / "m.dbm")
    g = shot(media_dir, model, tmp_path / "out", types=("mp4",), use="advertising")
    project = str(tmp_path / "sh010.dbl")
    g.save(project)
    with pytest.raises(ConsentRefused, match="use 'advertising' is not allowed"):
        farm_render(project, frames="1-4", scheduler="tcp://127.0.0.1:1")  # refused before reaching any scheduler
    g.set_setting("declared_use", "feature")
    g.save(project)
    report = farm_render(project, frames="1-4", workers=1, chunk=2)
    assert report.movies_joined == [(str(tmp_path / "out/sh010.mp4"), 2)]
    assert sorted(os.listdir(tmp_path / "out")) == ["sh010.mp4"]
    state, store = c2pa_store(tmp_path / "out/sh010.mp4")
    assert state == "Valid" and len(store["manifests"]) == 1
    record = {a["label"]: a["data"] for a in store["manifests"][store["active_manifest"]]["assertions"]}
    assert record["org.doublure.provenance"]["frames"] == "1-4"


def test_a_stripped_copy_still_reports_the_watermark(rendered, tmp_path, capsys):
    out, model, _ = rendered
    from doublure.faces.watermark import make_payload, payload_ids

    pixels = oiio.ImageBuf(str(out / "sh010.0001.png")).get_pixels(oiio.UINT8)
    stripped = tmp_path / "screenshot.jpg"
    assert cv2.imwrite(str(stripped), pixels[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 75])  # no header, no manifest
    assert main(["verify", str(stripped)]) == 0
    text = capsys.readouterr().out
    assert "credentials: none" in text and "header:      none" in text
    model_tag, render_tag = payload_ids(make_payload(model_digest(model), "sh010/Write1"))
    assert f"watermark:   found (model tag {model_tag}, render tag {render_tag}" in text
