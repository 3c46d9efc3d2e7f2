"""Content Credentials (C2PA) for rendered files with a synthetic face: signing and reading them back.

PNG, JPEG, TIFF, MP4 and MOV carry the manifest inside the file (``c2pa-python``, offline: no time-stamp
authority, no OCSP, no remote manifest). EXR and DPX, which C2PA has no place for, keep the header record and
get a **sidecar** ``<file>.c2pa.json``: the same manifest definition and the file's SHA-256, signed (ECDSA or
EdDSA over the canonical JSON) with the same identity and carrying its certificate chain; any change to the
file's bytes or to the sidecar fails it.

The manifest states the digital source type (``compositeWithTrainedAlgorithmicMedia``), the action, and an
``org.doublure.provenance`` assertion: the ``doublure/...`` record of the frame (model, digest, rights reference,
project, frame or frame range, render id, consent override) and whether the signer is a test identity.
"""
from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import json
import os
import threading
from typing import Any

from ..atomic import atomic_path
from ..errors import DoublureError
from .identity import SigningIdentity, SigningError, load_identity

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
ASSERTION = "org.doublure.provenance"
EMBEDDED_FORMATS = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".tif": "image/tiff",
                    ".tiff": "image/tiff", ".mp4": "video/mp4", ".mov": "video/quicktime"}
SIDECAR_FORMATS = (".exr", ".dpx")
SIDECAR_SUFFIX = ".c2pa.json"
SIDECAR_SCHEMA = "doublure.sidecar-manifest/1"
# Signing: no thumbnail (c2pa's default decodes and re-encodes every frame for one: 110-190 ms of a 1080p
# frame's 2-30) and no read-back of each signature (the tests and ``doublure verify`` read them).
_SIGN_SETTINGS = {"builder": {"thumbnail": {"enabled": False}}, "verify": {"verify_after_sign": False}}
# Reading offline: no OCSP, no remote manifests; trust only what the verifier is given.
_READ_SETTINGS = {"verify": {"verify_trust": True, "remote_manifest_fetch": False, "ocsp_fetch": False}}


class ProvenanceError(DoublureError):
    """Signing failed or a manifest cannot be read: the message names the file."""


def record_of(metadata: dict[str, Any]) -> dict[str, Any]:
    """The provenance record a manifest carries: the ``doublure/...`` keys, without the prefix."""
    return {k.split("/", 1)[1]: v for k, v in metadata.items() if k.startswith("doublure/")}


def is_synthetic(metadata: dict[str, Any]) -> bool:
    """True when the header record says the pixels hold a synthetic face."""
    value = metadata.get("doublure/synthetic_face")
    return value is True or (isinstance(value, str) and value.lower() in ("1", "true")) or value == 1


@functools.lru_cache(maxsize=1)
def _software_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("doublure")
    except PackageNotFoundError:
        return "unknown"


def manifest_definition(path: str, record: dict[str, Any], identity: SigningIdentity) -> dict[str, Any]:
    """The C2PA manifest definition (JSON-able) for a file rendered with a synthetic face."""
    software = _software_version()
    model = record.get("model", "an identity model")
    return {
        "claim_generator_info": [{"name": "Doublure", "version": software}],
        "title": os.path.basename(path),
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": [{
                "action": "c2pa.created", "digitalSourceType": DIGITAL_SOURCE_TYPE,
                "softwareAgent": {"name": "Doublure", "version": software},
                "description": f"a face replaced by the identity model {model}",
            }]}},
            {"label": ASSERTION, "data": {**record, "test_identity": identity.is_test,
                                          "signer": identity.subject}},
        ],
    }


_SIGNERS = threading.local()
_IDENTITY_LOCK = threading.Lock()
_IDENTITY: list = []   # [(where it was looked for, SigningIdentity)]


def current_identity() -> SigningIdentity:
    """:func:`load_identity`, loaded once while the environment and the config file stay as they are (a render
    signs every frame: the certificate is not parsed again for each)."""
    from .identity import config_dir

    settings = os.path.join(config_dir(), "signing.json")
    where = (os.environ.get("DOUBLURE_SIGNING_CERT"), os.environ.get("DOUBLURE_SIGNING_KEY"),
             os.environ.get("DOUBLURE_TRUST_ANCHORS"), settings,
             os.stat(settings).st_mtime_ns if os.path.exists(settings) else None)
    with _IDENTITY_LOCK:
        if not _IDENTITY or _IDENTITY[0][0] != where:
            _IDENTITY[:] = [(where, load_identity())]
        return _IDENTITY[0][1]


def _signer(identity: SigningIdentity):
    """(a c2pa Signer for the identity, the signing settings' Context), one pair per thread (Writes sign on
    writer threads of their own)."""
    import c2pa

    cached = getattr(_SIGNERS, "triple", None)
    if cached is None or cached[0] is not identity:
        try:
            signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(identity.algorithm.encode(), identity.chain_pem,
                                                               identity.key_pem, None))
        except Exception as exc:  # c2pa's own errors name no file
            raise SigningError(f"signing identity {identity.source}: c2pa refuses it ({exc})") from None
        cached = _SIGNERS.triple = (identity, signer, c2pa.Context.from_dict(_SIGN_SETTINGS))
    return cached[1], cached[2]


def sign_file(path: str, metadata: dict[str, Any], identity: SigningIdentity | None = None) -> str:
    """Sign a rendered file in place: the manifest embedded (PNG, JPEG, TIFF, MP4, MOV), or a sidecar beside it
    (EXR, DPX). The file is replaced in one rename; on failure it is removed, so no synthetic frame stays
    unsigned without an error.

    Args:
        path: the written file.
        metadata: its ``doublure/...`` header record.
        identity: who signs (default: :func:`load_identity`).

    Returns:
        the path holding the manifest (``path`` itself, or the sidecar's).

    Raises:
        ProvenanceError / SigningError: naming the file and what went wrong.
    """
    import c2pa

    identity = identity or current_identity()
    ext = os.path.splitext(path)[1].lower()
    definition = manifest_definition(path, record_of(metadata), identity)
    try:
        if ext in SIDECAR_FORMATS:
            return _sign_sidecar(path, definition, identity)
        if ext not in EMBEDDED_FORMATS:
            raise ProvenanceError(f"{path}: cannot carry Content Credentials (a {ext or 'no'} file)")
        with atomic_path(path) as tmp:
            with open(path, "rb") as source, open(tmp, "wb") as dest:
                signer, context = _signer(identity)
                c2pa.Builder(json.dumps(definition), context=context).sign(signer, EMBEDDED_FORMATS[ext], source, dest)
            os.chmod(tmp, os.stat(path).st_mode & 0o777)  # the rendered file's permissions (the umask's)
        return path
    except DoublureError:
        _remove(path)
        raise
    except Exception as exc:
        _remove(path)
        raise ProvenanceError(f"{path}: signing its Content Credentials failed ({exc}); the unsigned file "
                              "was removed") from None


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _sign_sidecar(path: str, definition: dict[str, Any], identity: SigningIdentity) -> str:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    payload = {"schema": SIDECAR_SCHEMA, "manifest": definition,
               "asset": {"file": os.path.basename(path), "sha256": file_sha256(path),
                         "size": os.path.getsize(path)}}
    key = serialization.load_pem_private_key(identity.key_pem, password=None)
    data = _canonical(payload)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(data, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH),
                             hashes.SHA256())
    else:
        signature = key.sign(data)
    sidecar = path + SIDECAR_SUFFIX
    document = {**payload, "signature": {"value": base64.b64encode(signature).decode(),
                                         "certificate_chain": identity.chain_pem.decode()}}
    with atomic_path(sidecar) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=1)
        os.chmod(tmp, os.stat(path).st_mode & 0o777)
    return sidecar


@dataclasses.dataclass
class ManifestReading:
    """What a file's Content Credentials say.

    Attributes:
        state: ``"none"`` (no manifest), ``"invalid"`` (it does not match the file, or its signature fails),
            ``"valid"`` (signed and intact, by a signer this machine does not trust), ``"trusted"``.
        where: ``"embedded"``, ``"sidecar"`` or ``""``.
        signer: the signing certificate's subject (or issuer and common name as c2pa reports them).
        record: the ``org.doublure.provenance`` assertion (empty when absent).
        source_type: the digital source type of the manifest's actions.
        problems: why it is invalid or untrusted, one line each.
    """

    state: str
    where: str = ""
    signer: str = ""
    record: dict[str, Any] = dataclasses.field(default_factory=dict)
    source_type: str = ""
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def test_identity(self) -> bool:
        return bool(self.record.get("test_identity"))


def read_credentials(path: str, trust_anchors_pem: bytes = b"") -> ManifestReading:
    """Read and validate the Content Credentials of ``path`` (embedded or in its sidecar), offline.

    Args:
        path: the file.
        trust_anchors_pem: PEM roots to trust (the studio's, or the local test CA).

    Raises:
        ProvenanceError: the file cannot be read at all.
    """
    if not os.path.isfile(path):
        raise ProvenanceError(f"{path}: no such file")
    if os.path.exists(path + SIDECAR_SUFFIX):
        return _read_sidecar(path, trust_anchors_pem)
    ext = os.path.splitext(path)[1].lower()
    if ext not in EMBEDDED_FORMATS:
        return ManifestReading("none")
    import c2pa

    settings = json.loads(json.dumps(_READ_SETTINGS))
    if trust_anchors_pem:
        settings["trust"] = {"trust_anchors": trust_anchors_pem.decode()}
    try:
        reader = c2pa.Reader(path, context=c2pa.Context.from_dict(settings))
        store = json.loads(reader.json())
        state = reader.get_validation_state()
    except Exception as exc:
        if "ManifestNotFound" in type(exc).__name__ or "no JUMBF" in str(exc):
            return ManifestReading("none")
        return ManifestReading("invalid", "embedded", problems=[f"the manifest cannot be read ({exc})"])
    active = store.get("manifests", {}).get(store.get("active_manifest"), {})
    info = active.get("signature_info") or {}
    record, source_type = {}, ""
    for assertion in active.get("assertions", []):
        if assertion.get("label") == ASSERTION:
            record = assertion.get("data") or {}
        elif assertion.get("label", "").startswith("c2pa.actions"):
            for action in (assertion.get("data") or {}).get("actions", []):
                source_type = action.get("digitalSourceType") or source_type
    results = (store.get("validation_results") or {}).get("activeManifest") or {}
    failures = [f"{f.get('code')}: {f.get('explanation')}" for f in results.get("failure", [])]
    untrusted = [f for f in failures if f.startswith("signingCredential.untrusted")]
    broken = [f for f in failures if f not in untrusted]
    verdict = "invalid" if broken or state == "Invalid" else ("trusted" if state == "Trusted" else "valid")
    signer = ", ".join(v for v in (info.get("common_name"), info.get("issuer")) if v)
    return ManifestReading(verdict, "embedded", signer, record, source_type, broken or untrusted)


def _read_sidecar(path: str, trust_anchors_pem: bytes) -> ManifestReading:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    sidecar = path + SIDECAR_SUFFIX
    try:
        with open(sidecar, encoding="utf-8") as f:
            document = json.load(f)
        signature = document.pop("signature")
        chain = x509.load_pem_x509_certificates(signature["certificate_chain"].encode())
        value = base64.b64decode(signature["value"])
        definition = document["manifest"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return ManifestReading("invalid", "sidecar", problems=[f"{sidecar} cannot be read ({exc})"])
    record = next((a.get("data") or {} for a in definition.get("assertions", []) if a.get("label") == ASSERTION), {})
    source_type = next((act.get("digitalSourceType", "") for a in definition.get("assertions", [])
                        if a.get("label", "").startswith("c2pa.actions") for act in a["data"].get("actions", [])), "")
    leaf = chain[0]
    reading = ManifestReading("valid", "sidecar", leaf.subject.rfc4514_string(), record, source_type)
    public = leaf.public_key()
    data = _canonical(document)
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(value, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public, rsa.RSAPublicKey):
            public.verify(value, data, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH),
                          hashes.SHA256())
        else:
            public.verify(value, data)
        for child, parent in zip(chain, chain[1:]):
            child.verify_directly_issued_by(parent)
    except (InvalidSignature, ValueError, TypeError):
        reading.state = "invalid"
        reading.problems.append(f"{os.path.basename(sidecar)}: the signature does not match its content")
        return reading
    asset = document.get("asset") or {}
    if asset.get("sha256") != file_sha256(path):
        reading.state = "invalid"
        reading.problems.append(f"{os.path.basename(path)} changed since it was signed (its SHA-256 differs "
                                "from the sidecar's)")
        return reading
    anchors = x509.load_pem_x509_certificates(trust_anchors_pem) if trust_anchors_pem else []
    if any(chain[-1] == anchor or _issued_by(chain[-1], anchor) for anchor in anchors):
        reading.state = "trusted"
    else:
        reading.problems.append("signing certificate untrusted")
    return reading


def _issued_by(cert, anchor) -> bool:
    try:
        cert.verify_directly_issued_by(anchor)
        return True
    except Exception:
        return False
