"""The identity model file (``.dbm``): a folder (or a zip of the same files) holding

- ``weights.safetensors``: the network weights (safetensors: loading runs no code, never unpickles);
- ``model.json``: ``{"schema": "doublure.model/1", "architecture": {...}, "resolution", "face_type",
  "encoding", "training": {...}, "facesets": {...}, "rights": {...}, "weights_sha256", ...}``;
- optionally ``detail.safetensors``: the detail stage (:mod:`doublure.models.detail`), described by
  ``model.json["detail"]`` (``architecture``, ``weights_sha256``, ``identity_sha256``: the identity weights it
  was trained on, ``training``); written by ``doublure train --detail``;
- optionally ``references.safetensors``: the target's reference faces (:mod:`doublure.models.references`),
  described by ``model.json["references"]`` (``sha256``, ``count``, ``size``, ``faceset``, ``clips``); written by
  ``doublure references``, kept as training continues the model;
- while training, also ``optimizer.safetensors`` (the optimiser's tensors) and ``train_state.json`` (its
  other state, the iteration, the loss log position), so ``--resume`` continues exactly. No pickles.

The **rights record** (``model.json["rights"]``) says whose face it is (``subject``), who gave consent and
when (``consent_given_by``, ``consent_date``), the agreement reference (``agreement``), the allowed uses
(``allowed_uses``, a list) and an ``expiry`` date (ISO ``YYYY-MM-DD``). A model whose record is missing
or expired still loads, with a loud warning in the log and ``LoadedModel.rights_warning`` set for the UI.

Writes are atomic at every instant: a folder is written beside the target under a temporary name and
exchanged with the old one in one step (``engine.atomic.atomic_folder``: where the file system cannot, a
process killed between its renames leaves a complete folder that :func:`resolve_model_path` reads and the
next save puts back); a zip is written to a temporary file and renamed over the target. What killed saves
left (temporary folders and files) is removed, and logged, when the next save of the same model starts.

Faceset paths in ``model.json`` are stored relative to the folder holding the model (the card names no
folder of the machine that built it); :func:`read_meta` gives them back as stored.
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import zipfile
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load_bytes
from safetensors.torch import save as st_save_bytes

from doublure.engine.atomic import atomic_folder, atomic_path, pause_for_test, recover_folder, \
    remove_stale_temps, resolve_folder
from doublure.engine.errors import DoublureError

from .arch import IdentityModel, ModelConfig
from .card import check_card, check_weights

if TYPE_CHECKING:
    from .detail import DetailNet

log = logging.getLogger("doublure.models")

MODEL_SCHEMA = "doublure.model/1"
WEIGHTS = "weights.safetensors"
META = "model.json"
OPTIMIZER = "optimizer.safetensors"
REFERENCES = "references.safetensors"
TRAIN_STATE = "train_state.json"
DETAIL = "detail.safetensors"
RIGHTS_FIELDS = ("subject", "consent_given_by", "consent_date", "agreement", "allowed_uses", "expiry")


class ModelFileError(DoublureError):
    """A model file that is missing, corrupt, of an unknown schema or architecture."""


# ------------------------------------------------------------------------------------------ rights

def rights_record(subject: str = "", consent_given_by: str = "", consent_date: str = "", agreement: str = "",
                  allowed_uses: list[str] | tuple[str, ...] | str = (), expiry: str = "") -> dict[str, Any]:
    """A rights record dict; ``allowed_uses`` may be a comma-separated string. Dates are ISO ``YYYY-MM-DD``,
    the expiry after the consent. Raises DoublureError naming the field that is wrong."""
    if isinstance(allowed_uses, str):
        allowed_uses = [u.strip() for u in allowed_uses.split(",") if u.strip()]
    dates = {name: _iso_date(name, value) for name, value in (("consent_date", consent_date), ("expiry", expiry))
             if value}
    if len(dates) == 2 and dates["expiry"] <= dates["consent_date"]:
        raise DoublureError(f"rights expiry {expiry} is not after consent_date {consent_date}")
    return {"subject": subject, "consent_given_by": consent_given_by, "consent_date": consent_date,
            "agreement": agreement, "allowed_uses": list(allowed_uses), "expiry": expiry}


def _iso_date(field: str, value: str) -> datetime.date:
    # Only the YYYY-MM-DD form: Python also reads 20240110 and week dates, which a record should not hold.
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return datetime.date.fromisoformat(value)
    except ValueError:  # a day or month out of range
        pass
    raise DoublureError(f"rights {field} {value!r} is not a date (YYYY-MM-DD)")


def rights_problems(rights: dict[str, Any] | None, today: datetime.date | None = None) -> list[str]:
    """What is wrong with a rights record: missing fields, a past expiry. Empty when it is in order."""
    if not isinstance(rights, dict) or not rights:
        return ["no rights record (whose face, who consented, agreement, allowed uses, expiry)"]
    problems = [f"rights record has no {name}" for name in RIGHTS_FIELDS if not rights.get(name)]
    expiry = rights.get("expiry")
    if expiry:
        try:
            if datetime.date.fromisoformat(expiry) < (today or datetime.date.today()):
                problems.append(f"rights expired on {expiry}")
        except (ValueError, TypeError):
            problems.append(f"rights expiry {expiry!r} is not a date")
    return problems


def consent_problems(rights: dict[str, Any] | None, use: str, today: datetime.date | None = None) -> list[str]:
    """Why the rights record does not cover a render for the project's declared ``use`` (research,
    advertising, feature...): its :func:`rights_problems`, and the use when the allowed uses leave it out
    (compared without case). Empty when consent covers the render."""
    problems = rights_problems(rights, today)
    allowed = [str(u).strip().lower() for u in (rights or {}).get("allowed_uses") or []]
    if use and allowed and use.strip().lower() not in allowed:
        problems.append(f"use {use!r} is not allowed (allowed: {', '.join(allowed)})")
    return problems


def rights_reference(rights: dict[str, Any] | None) -> str:
    """A one-line reference for provenance metadata: subject, agreement and expiry."""
    if not rights:
        return "none"
    return (f"subject={rights.get('subject') or '?'}; agreement={rights.get('agreement') or '?'}; "
            f"expiry={rights.get('expiry') or '?'}")


# ------------------------------------------------------------------------------------ atomic writes

def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def resolve_model_path(path: str) -> str:
    """``path``, or the complete folder a save killed between its renames left (``atomic_folder``); also
    ``path + ".old"``, what saves of Doublure before issue 26 left in that case."""
    found = resolve_folder(path)
    if found == path and not os.path.exists(path) and os.path.isdir(path + ".old"):
        found = path + ".old"
    if found != path:
        log.warning("%s: using %s, left by an interrupted save", path, found)
    return found


def clean_leftovers(path: str) -> list[str]:
    """Put back or remove what killed saves of the model at ``path`` left (a model folder under a side name,
    temporary folders and files); each repair is logged. Called as a save or a training run starts."""
    path = os.fspath(path)
    legacy = path + ".old"   # what a save before issue 26 left when killed between its renames
    done = []
    if os.path.isdir(legacy):
        if os.path.exists(path):
            shutil.rmtree(legacy, ignore_errors=True)
            done.append(f"removed {legacy}, left by an interrupted save")
        else:
            os.rename(legacy, path)
            done.append(f"restored {path} from {legacy}, left by an interrupted save")
        log.warning("%s", done[-1])
    if os.path.isfile(path):   # a zip: its temporaries are files
        for tmp in remove_stale_temps([path]):
            done.append(f"removed {tmp}, left by a killed save")
            log.warning("%s", done[-1])
        return done
    return done + recover_folder(path)


def _relative_facesets(meta: dict[str, Any], model_path: str) -> dict[str, Any]:
    """``meta`` with each faceset's absolute ``path`` made relative to the folder holding the model."""
    base = os.path.dirname(os.path.abspath(model_path))
    facesets = meta.get("facesets")
    if not isinstance(facesets, dict):
        return meta
    relative = {}
    for role, entries in facesets.items():
        relative[role] = [dict(fs, path=os.path.relpath(fs["path"], base))
                          if isinstance(fs, dict) and isinstance(fs.get("path"), str) and os.path.isabs(fs["path"])
                          else fs for fs in entries] if isinstance(entries, list) else entries
    return dict(meta, facesets=relative)


# -------------------------------------------------------------------------------- tensors <-> files

def state_to_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """A flat tensor dict as safetensors bytes (tensors made contiguous, moved to the CPU)."""
    return st_save_bytes({k: v.detach().to("cpu").contiguous() for k, v in state.items()})


def optimizer_to_files(state: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """Split a ``torch.optim`` state dict into safetensors bytes (every tensor) and a JSON-able dict (the rest).

    Tensor entries ``state[i][name]`` become keys ``"state.i.name"``; other values stay in the JSON.
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = value
            else:
                scalars.setdefault(str(idx), {})[name] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return state_to_bytes(tensors), {"param_groups": groups, "scalars": scalars}


def optimizer_from_files(data: bytes, meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`optimizer_to_files`: a state dict for ``optimizer.load_state_dict``."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in st_load_bytes(data).items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for idx, entry in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


# ------------------------------------------------------------------------------------------- save

def save_model(path: str, model: IdentityModel, meta: dict[str, Any], *, optimizer_state: dict | None = None,
               train_state: dict | None = None, as_zip: bool | None = None,
               parts_from: str | None = None) -> dict[str, Any]:
    """Write a ``.dbm`` atomically.

    Args:
        path: the model path (a folder, or a zip when ``as_zip`` or when ``path`` is an existing zip file).
        model: the network; its config goes into ``model.json["architecture"]``.
        meta: the rest of ``model.json`` (training summary, facesets, rights, name...).
        optimizer_state: ``optimizer.state_dict()`` to store for resuming, or None.
        train_state: JSON-able training state for resuming (iteration, seed...), or None.
        parts_from: the model whose detail stage and reference faces ``meta`` names (default: ``path``
            itself; a model adapted from another takes them from it).

    Returns:
        The ``model.json`` dict as written (with ``weights_sha256``).
    """
    path = os.fspath(path)
    if as_zip is None:
        as_zip = os.path.isfile(path)
    weights = state_to_bytes(model.state_dict())
    full = _relative_facesets(meta, path)
    full.update({"schema": MODEL_SCHEMA, "architecture": model.cfg.to_json(), "resolution": model.cfg.res,
                 "weights_sha256": _sha256(weights),
                 "saved": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    files = {WEIGHTS: weights}
    _carry_detail(parts_from or path, full, files)
    _carry_references(parts_from or path, full, files)
    files[META] = (json.dumps(full, indent=1) + "\n").encode()
    if optimizer_state is not None:
        opt_bytes, opt_meta = optimizer_to_files(optimizer_state)
        files[OPTIMIZER] = opt_bytes
        train_state = dict(train_state or {}, optimizer=opt_meta, optimizer_sha256=_sha256(opt_bytes))
    if train_state is not None:
        files[TRAIN_STATE] = (json.dumps(train_state, indent=1) + "\n").encode()
    _write_model_files(path, files, as_zip)
    return full


def _carried_file(path: str, meta: dict[str, Any], field: str, name: str, checksum: str, what: str) -> bytes | None:
    """The bytes of the optional file ``name`` of the model at ``path`` that ``meta[field]`` names (its
    ``checksum`` key holding the file's sha256), for a save that continues the model; None, with the field
    dropped from ``meta`` (and a log line where the card named a file that is gone), where there is none."""
    card = meta.get(field)
    if not isinstance(card, dict):
        meta.pop(field, None)
        return None
    existing = resolve_model_path(path)
    data = _read_files(existing, (name,)).get(name) if os.path.exists(existing) else None
    if data is None or _sha256(data) != card.get(checksum):
        log.warning("%s: the model card names %s, not in the model any more; left out", path, what)
        meta.pop(field)
        return None
    return data


def _carry_detail(path: str, meta: dict[str, Any], files: dict[str, bytes]) -> None:
    """Keep the detail stage of the model at ``path`` when ``meta`` (its card, as training continues it) names
    it: continuing the identity part (adapting it to a shot, more iterations) changes its renderings little,
    and the stage keeps drawing the same person's detail. It is rebound to the new identity weights; the
    identity iteration it was trained at stays recorded, so the card tells how far the identity has moved
    since. A stage whose file is gone is dropped from the card, with a log line."""
    data = _carried_file(path, meta, "detail", DETAIL, "weights_sha256", "its detail stage")
    if data is not None:
        files[DETAIL] = data
        meta["detail"] = dict(meta["detail"], identity_sha256=_sha256(files[WEIGHTS]))


def _carry_references(path: str, meta: dict[str, Any], files: dict[str, bytes]) -> None:
    """Keep the reference faces of the model at ``path`` when ``meta`` names them: they are the target's own
    faces, whatever the identity weights. A bank whose file is gone is dropped from the card, with a log line."""
    data = _carried_file(path, meta, "references", REFERENCES, "sha256", "its reference faces")
    if data is not None:
        files[REFERENCES] = data


def save_references(path: str, bank_bytes: bytes, card: dict[str, Any]) -> dict[str, Any]:
    """Add (or replace) the reference faces of an existing model, atomically; everything else is kept.

    Args:
        path: the model (.dbm folder or zip).
        bank_bytes: :func:`doublure.models.references.bank_to_bytes`.
        card: ``model.json["references"]`` without its checksum (``count``, ``size``, ``faceset``, ``clips``).

    Returns:
        The ``model.json`` dict as written.
    """
    path = os.fspath(path)
    meta = read_meta(path)
    files = _read_files(path, (WEIGHTS, META, DETAIL, OPTIMIZER, TRAIN_STATE))
    meta["references"] = dict(card, sha256=_sha256(bank_bytes))
    files[REFERENCES] = bank_bytes
    files[META] = (json.dumps(meta, indent=1) + "\n").encode()
    _write_model_files(path, files, as_zip=os.path.isfile(resolve_model_path(path)))
    return meta


def load_references(path: str, meta: dict[str, Any]):
    """The model's reference bank (:class:`doublure.models.references.ReferenceBank`), or None where the card
    names none. A missing, altered or corrupt bank raises ModelFileError naming the file."""
    from .references import ReferenceError, bank_from_bytes

    refs = meta.get("references")
    if not refs:
        return None
    if not isinstance(refs, dict):
        raise ModelFileError(f"model file {path}: {META} field 'references' must be an object")
    data = _read_files(path, (REFERENCES,)).get(REFERENCES)
    if data is None or _sha256(data) != refs.get("sha256"):
        raise ModelFileError(f"model file {path}: {REFERENCES} is missing or does not match its checksum")
    try:
        return bank_from_bytes(data, f"model file {path}: {REFERENCES}")
    except ReferenceError as exc:
        raise ModelFileError(str(exc)) from None


def _write_model_files(path: str, files: dict[str, bytes], as_zip: bool) -> None:
    """Write a model's files as a zip, or as a folder swapped in whole (see the module's note on atomicity);
    what a killed earlier save left is cleaned up first."""
    clean_leftovers(path)
    if as_zip:
        _write_zip(path, files)
        return
    with atomic_folder(path) as tmp:
        for index, (name, data) in enumerate(files.items()):
            _write_bytes(os.path.join(tmp, name), data)
            if index == 0:
                pause_for_test("model-writing")


def save_detail(path: str, net: "DetailNet", detail_meta: dict[str, Any]) -> dict[str, Any]:
    """Add (or replace) the detail stage of an existing model, atomically; the identity part, the rights
    record and any training state are kept as they are.

    Args:
        path: the model (.dbm folder or zip).
        net: the trained detail network; its config goes into ``model.json["detail"]["architecture"]``.
        detail_meta: the rest of ``model.json["detail"]`` (``training``, ``facesets``...).

    Returns:
        The ``model.json`` dict as written.
    """
    path = os.fspath(path)
    meta = read_meta(path)
    files = _read_files(path, (WEIGHTS, META, OPTIMIZER, TRAIN_STATE, REFERENCES))
    weights = state_to_bytes(net.state_dict())
    meta["detail"] = dict(detail_meta, architecture=net.cfg.to_json(), weights_sha256=_sha256(weights),
                          identity_sha256=meta["weights_sha256"],
                          identity_iteration=int((meta.get("training") or {}).get("iterations", 0)))
    files[DETAIL] = weights
    files[META] = (json.dumps(meta, indent=1) + "\n").encode()
    _write_model_files(path, files, as_zip=os.path.isfile(resolve_model_path(path)))
    return meta


def load_detail(path: str, meta: dict[str, Any]) -> tuple["DetailNet | None", str]:
    """The detail stage of a model, checked against its identity part.

    Returns:
        (network in eval mode on the CPU, "") or (None, why it is not used): none stored, or stored for other
        identity weights (a retrained identity part draws other faces than the ones it learned from). A
        corrupt detail file raises ModelFileError naming the file.
    """
    from .detail import DetailConfig, DetailNet

    detail = meta.get("detail")
    if not detail:
        return None, "no detail stage"
    if not isinstance(detail, dict):
        raise ModelFileError(f"model file {path}: {META} field 'detail' must be an object")
    if detail.get("identity_sha256") != meta.get("weights_sha256"):
        return None, (f"model {path}: its detail stage was trained on other identity weights; retrain it with "
                      f"`doublure train --detail --out {path} --target ...`")
    data = _read_files(path, (DETAIL,)).get(DETAIL)
    if data is None:
        raise ModelFileError(f"model file {path}: {META} names a detail stage but {DETAIL} is missing")
    if _sha256(data) != detail.get("weights_sha256"):
        raise ModelFileError(f"model file {path}: {DETAIL} is not the detail stage {META} records (its checksum "
                             f"differs: another model's detail stage, or a damaged copy); put back this model's, "
                             f"or train one with `doublure train --detail --out {path} --target ...`")
    try:
        cfg = DetailConfig.from_json(detail.get("architecture"))
    except DoublureError as exc:
        raise ModelFileError(f"model file {path}: detail stage: {exc}") from None
    if cfg.res != (meta.get("architecture") or {}).get("res"):
        raise ModelFileError(f"model file {path}: detail stage takes {cfg.res} px faces but the identity part "
                             f"renders {meta['architecture'].get('res')} px")
    try:
        state = st_load_bytes(data)
        check_weights(cfg, state)
    except (SafetensorError, ValueError, RuntimeError, OverflowError, TypeError) as exc:
        raise ModelFileError(f"model file {path}: {DETAIL} is unusable: {exc}") from None
    net = DetailNet(cfg)
    net.load_state_dict(state)
    return net.eval(), ""


# ------------------------------------------------------------------------------------------- load

def _read_files(path: str, names: tuple[str, ...]) -> dict[str, bytes]:
    """The named files of a .dbm folder or zip that exist."""
    path = resolve_model_path(path)
    if not os.path.exists(path):
        raise ModelFileError(f"model file {path} does not exist")
    out: dict[str, bytes] = {}
    if os.path.isdir(path):
        for name in names:
            p = os.path.join(path, name)
            if os.path.isfile(p):
                with open(p, "rb") as f:
                    out[name] = f.read()
        return out
    try:
        with zipfile.ZipFile(path) as zf:
            present = set(zf.namelist())
            for name in names:
                if name in present:
                    out[name] = zf.read(name)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFileError(f"model file {path} is neither a .dbm folder nor a readable zip: {exc}") from None
    return out


def read_meta(path: str) -> dict[str, Any]:
    """``model.json`` of a model, every field checked for its type and range (``models.card``; weights are not
    read). Raises ModelFileError naming the file and the field."""
    raw = _read_files(path, (META,)).get(META)
    if raw is None:
        raise ModelFileError(f"model file {path} has no {META}")
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"model file {path}: {META} is corrupt ({exc})") from None
    if not isinstance(meta, dict) or meta.get("schema") != MODEL_SCHEMA:
        schema = meta.get("schema") if isinstance(meta, dict) else None
        raise ModelFileError(f"model file {path}: unknown schema {schema!r} (expected {MODEL_SCHEMA})")
    try:
        check_card(meta)
    except ValueError as exc:
        raise ModelFileError(f"model file {path}: {META} field {exc}") from None
    return meta


def _identity(path: str) -> tuple:
    path = resolve_model_path(path)
    parts = [path]
    for p in ((os.path.join(path, WEIGHTS), os.path.join(path, META)) if os.path.isdir(path) else (path,)):
        try:
            st = os.stat(p)
            parts.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            parts.append("missing")
    return tuple(parts)


@functools.lru_cache(maxsize=64)
def _digest_for(identity: tuple) -> str:
    meta = read_meta(identity[0])
    # Name, face type and rights travel into every rendered frame's provenance, so they are content too: two
    # files with the same weights under different rights records must not share a cache entry or a hash.
    content = [meta["architecture"], meta["weights_sha256"], meta.get("face_type"), meta.get("name"), meta.get("rights")]
    if _detail_digest(meta) is not None:   # so that a model without one keeps the digest it always had
        content.append(_detail_digest(meta))
    if isinstance(meta.get("references"), dict):
        content.append({"references": meta["references"].get("sha256")})
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _detail_digest(meta: dict[str, Any]) -> str | None:
    detail = meta.get("detail")
    return detail.get("weights_sha256") if isinstance(detail, dict) else None


def model_digest(path: str) -> str:
    """The model's content digest (architecture, weights checksum, face type, name and rights record), cached
    by the files' size and mtime.

    This is what a SwapModel hashes and what keys the shared weight cache. Raises ModelFileError for a
    missing or unreadable model.
    """
    return _digest_for(_identity(os.fspath(path)))


@dataclasses.dataclass
class LoadedModel:
    """A model ready for inference.

    Attributes:
        model: the network, in eval mode, on the requested device.
        meta: ``model.json``.
        digest: :func:`model_digest`.
        path: where it was loaded from.
        rights_warning: empty when the rights record is in order, else what is wrong (the UI shows it).
        detail: the detail stage (:mod:`doublure.models.detail`) on the same device, or None.
        detail_note: why there is no detail stage, when there is none.
        references: the target's reference faces (:mod:`doublure.models.references`), or None.
    """

    model: IdentityModel
    meta: dict[str, Any]
    digest: str
    path: str
    rights_warning: str = ""
    detail: "DetailNet | None" = None
    detail_note: str = ""
    references: Any = None

    @property
    def rights(self) -> dict[str, Any]:
        return self.meta.get("rights") or {}

    @property
    def name(self) -> str:
        return self.meta.get("name") or os.path.basename(os.path.normpath(self.path))


def load_weights(path: str) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify a model's weights: the checksum against ``model.json``, then every tensor against the
    architecture the card declares (names, shapes, finite values: ``models.card.check_weights``), so that a
    network is only ever built from numbers its weights agree with. Never unpickles.

    Returns:
        (config, state dict on the CPU, model.json).
    """
    meta = read_meta(path)
    files = _read_files(path, (WEIGHTS,))
    data = files.get(WEIGHTS)
    if data is None:
        raise ModelFileError(f"model file {path} has no {WEIGHTS}")
    if _sha256(data) != meta.get("weights_sha256"):
        raise ModelFileError(f"model file {path}: {WEIGHTS} does not match its checksum (corrupt or replaced)")
    try:
        state = st_load_bytes(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError, TypeError) as exc:
        raise ModelFileError(f"model file {path}: {WEIGHTS} is corrupt ({exc})") from None
    cfg = ModelConfig.from_json(meta["architecture"])
    try:
        check_weights(cfg, state)
    except ValueError as exc:
        raise ModelFileError(f"model file {path}: {WEIGHTS} {exc}") from None
    return cfg, state, meta


def load_model(path: str, device: torch.device | str = "cpu") -> LoadedModel:
    """Load a ``.dbm`` for inference; warns loudly (log + ``rights_warning``) when the rights record is
    missing or expired. Raises ModelFileError naming the file when it is missing, corrupt or unknown."""
    path = os.fspath(path)
    cfg, state, meta = load_weights(path)
    model = IdentityModel(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelFileError(f"model file {path}: weights do not fit architecture {cfg.arch}: {exc}") from None
    model.to(device).eval()
    problems = rights_problems(meta.get("rights"))
    warning = ""
    if problems:
        warning = f"model {path}: " + "; ".join(problems)
        log.warning("RIGHTS WARNING: %s", warning)
    detail, detail_note = load_detail(path, meta)
    if detail is not None:
        detail.to(device)
    elif meta.get("detail"):
        log.warning("%s: the swap runs without its detail stage", detail_note)
    return LoadedModel(model, meta, model_digest(path), path, warning, detail, detail_note,
                       load_references(path, meta))


def has_training_state(path: str) -> bool:
    """Whether a model holds its training state (``train_state.json``), as checkpoints do; a model shipped as
    weights and card alone (``weights.safetensors`` + ``model.json``) does not."""
    return TRAIN_STATE in _read_files(path, (TRAIN_STATE,))


def read_training_state(path: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The training state of a checkpoint: (``train_state.json`` dict, optimizer state dict or None)."""
    files = _read_files(path, (TRAIN_STATE, OPTIMIZER))
    if TRAIN_STATE not in files:
        raise ModelFileError(f"model file {path} has no training state to resume from ({TRAIN_STATE})")
    try:
        state = json.loads(files[TRAIN_STATE])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"model file {path}: {TRAIN_STATE} is corrupt ({exc})") from None
    if not isinstance(state, dict):
        raise ModelFileError(f"model file {path}: {TRAIN_STATE} must hold an object")
    for field, kinds in (("iteration", int), ("elapsed_s", (int, float)), ("seed", int)):
        value = state.get(field)
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool) or value < 0
                                  or value != value or value == float("inf")):
            raise ModelFileError(f"model file {path}: {TRAIN_STATE} field {field} must be a number >= 0, "
                                 f"got {value!r:.40}")
    if not isinstance(state.get("iteration"), int):
        raise ModelFileError(f"model file {path}: {TRAIN_STATE} has no iteration")
    opt = None
    if "optimizer" in state:
        data = files.get(OPTIMIZER)
        if data is None or _sha256(data) != state.get("optimizer_sha256"):
            raise ModelFileError(f"model file {path}: {OPTIMIZER} is missing or does not match its checksum")
        try:
            opt = optimizer_from_files(data, state["optimizer"])
        except (SafetensorError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
            raise ModelFileError(f"model file {path}: {TRAIN_STATE} field optimizer or {OPTIMIZER} is not an "
                                 f"optimiser state ({type(exc).__name__}: {exc})") from None
    return state, opt


# ------------------------------------------------------------------------------------------- card

def model_card(path: str) -> str:
    """A human-readable summary of a model (``doublure info model.dbm``): architecture, training, facesets
    and the rights record, with a loud line when the rights are missing or expired."""
    meta = read_meta(path)
    arch = ModelConfig.from_json(meta["architecture"])
    lines = [f"Identity model {meta.get('name') or os.path.basename(os.path.normpath(path))}",
             f"  file: {os.path.abspath(path)}",
             f"  digest: {model_digest(path)[:16]}",
             f"  architecture: {arch.arch} at {arch.res} px, face type {meta.get('face_type') or '?'}; "
             f"encoder {arch.e_ch}, decoder {arch.d_ch}, mask {arch.d_mask_ch}, code {arch.ae_dims}, "
             f"{arch.res_blocks} residual block(s) per upscale"]
    tr = meta.get("training") or {}
    if tr:
        lines.append(f"  training: {tr.get('iterations') or 0} iterations, batch {tr.get('batch') or '?'}, "
                     f"{(tr.get('elapsed_s') or 0) / 60:.1f} min on {tr.get('device') or '?'} "
                     f"({tr.get('precision') or '?'})")
        loss = tr.get("loss") or {}
        if loss.get("last"):
            lines.append("  loss (mean of last iterations): " +
                         ", ".join(f"{k} {v:.4f}" for k, v in sorted(loss["last"].items())))
        if tr.get("from"):
            lines.append(f"  started from: {tr['from']}")
    detail = meta.get("detail")
    if isinstance(detail, dict):
        darch, dtr = detail.get("architecture") or {}, detail.get("training") or {}
        res = darch.get("res", 0)
        stale = detail.get("identity_sha256") != meta.get("weights_sha256")
        lines.append(f"  detail stage: {res} -> {res * darch.get('scale', 0)} px, {darch.get('channels')} channels, "
                     f"{darch.get('blocks')} blocks; {dtr.get('iterations', 0)} iterations, "
                     f"{dtr.get('elapsed_s', 0) / 60:.1f} min on {dtr.get('device', '?')}"
                     + ("; !! trained on other identity weights: not used" if stale else ""))
        identity_now = int(tr.get("iterations", 0))
        if stale:   # --resume would refuse it: only a new stage fits these identity weights
            lines.append(f"  the swap runs without it; train one for these weights with `doublure train --detail "
                         f"--out {path} --target ...`")
        elif tr.get("from"):   # an adapted model counts its own iterations from its base's weights
            lines.append(f"  detail stage trained on {tr['from']} at its iteration {detail.get('identity_iteration')}; "
                         f"the identity continued {identity_now} iterations since (`doublure train --detail "
                         f"--resume` refreshes the stage)")
        elif detail.get("identity_iteration") is not None and detail["identity_iteration"] != identity_now:
            lines.append(f"  detail stage trained at identity iteration {detail['identity_iteration']}, identity now "
                         f"at {identity_now} (`doublure train --detail --resume` refreshes it)")
        for fs in detail.get("facesets", []):
            lines.append(f"  faceset detail (B): {fs.get('path')} ({fs.get('items')} faces, "
                         f"native {fs.get('native_side') or '?'} px)")
    else:
        lines.append("  detail stage: none (the swap is drawn at the identity model's resolution)")
    refs = meta.get("references")
    if isinstance(refs, dict):
        clips = refs.get("clips") or []
        lines.append(f"  reference faces: {refs.get('count')} of the target at {refs.get('size')} px, from "
                     f"{refs.get('faceset')}" + (f" ({len(clips)} clip(s): {', '.join(clips)})" if clips else "")
                     + "; SwapModel draws the face from them (knob 'references')")
    else:
        lines.append("  reference faces: none (`doublure references MODEL.dbm --faceset DIR` adds them)")
    for role, label in (("a", "plate actor (A)"), ("b", "target actor (B)"), ("pretrain", "pretraining")):
        for fs in (meta.get("facesets") or {}).get(role) or []:
            clips = fs.get("clips") or []
            lines.append(f"  faceset {label}: {fs.get('path')} ({fs.get('items')} faces, sha256 "
                         f"{(fs.get('digest') or '')[:12]})"
                         + (f" from {len(clips)} clip(s): {', '.join(clips)}" if clips else ""))
    rights = meta.get("rights") or {}
    lines.append("  rights:")
    for name in RIGHTS_FIELDS:
        value = rights.get(name)
        if isinstance(value, list):
            value = ", ".join(value)
        lines.append(f"    {name}: {value or '-'}")
    for problem in rights_problems(rights):
        lines.append(f"  !! RIGHTS WARNING: {problem}")
    return "\n".join(lines)


def zip_model(folder: str, out: str) -> None:
    """Pack a .dbm folder into a single-file zip (inference files only; training state left out)."""
    _write_zip(out, _read_files(folder, (WEIGHTS, META, DETAIL, REFERENCES)))


def _write_zip(path: str, files: dict[str, bytes]) -> None:
    """An uncompressed zip of ``files``, written atomically (weights barely compress; stored reads fast)."""
    with atomic_path(path, suffix="") as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
            for name, data in files.items():
                zf.writestr(name, data)


__all__ = ["LoadedModel", "ModelFileError", "consent_problems", "has_training_state", "load_model", "load_weights", "model_card",
           "model_digest", "read_meta", "read_training_state", "rights_problems", "rights_record", "rights_reference",
           "load_detail", "load_references", "save_detail", "save_model", "save_references", "zip_model"]
