"""The identity model file (``.dbm``): a folder (or a zip of the same files) holding

- ``weights.safetensors``: the network weights (safetensors: loading runs no code, never unpickles);
- ``model.json``: ``{"schema": "doublure.model/1", "architecture": {...}, "resolution", "face_type",
  "encoding", "training": {...}, "facesets": {...}, "rights": {...}, "weights_sha256", ...}``;
- while training, also ``optimizer.safetensors`` (the optimiser's tensors) and ``train_state.json`` (its
  other state, the iteration, the loss log position), so ``--resume`` continues exactly. No pickles.

The **rights record** (``model.json["rights"]``) says whose face it is (``subject``), who gave consent and
when (``consent_given_by``, ``consent_date``), the agreement reference (``agreement``), the allowed uses
(``allowed_uses``, a list) and an ``expiry`` date (ISO ``YYYY-MM-DD``). A model whose record is missing
or expired still loads, with a loud warning in the log and ``LoadedModel.rights_warning`` set for the UI.

Writes are atomic: a folder is written beside the target under a temporary name and swapped in with two
renames (a crash between them leaves ``<name>.old``, which :func:`resolve_model_path` falls back to); a
zip is written to a temporary file and renamed over the target.
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
import tempfile
import zipfile
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load_bytes
from safetensors.torch import save as st_save_bytes

from doublure.engine.atomic import atomic_path
from doublure.engine.errors import DoublureError

from .arch import IdentityModel, ModelConfig

log = logging.getLogger("doublure.models")

MODEL_SCHEMA = "doublure.model/1"
WEIGHTS = "weights.safetensors"
META = "model.json"
OPTIMIZER = "optimizer.safetensors"
TRAIN_STATE = "train_state.json"
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
    if not rights:
        return ["no rights record (whose face, who consented, agreement, allowed uses, expiry)"]
    problems = [f"rights record has no {name}" for name in RIGHTS_FIELDS if not rights.get(name)]
    expiry = rights.get("expiry")
    if expiry:
        try:
            if datetime.date.fromisoformat(expiry) < (today or datetime.date.today()):
                problems.append(f"rights expired on {expiry}")
        except ValueError:
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


def _replace_dir(tmp: str, path: str) -> None:
    """Swap a fully written folder in for ``path``."""
    old = path + ".old"
    if os.path.isdir(old):
        shutil.rmtree(old)
    if os.path.lexists(path):
        os.replace(path, old)
    os.replace(tmp, path)
    if os.path.isdir(old):
        shutil.rmtree(old, ignore_errors=True)
    elif os.path.exists(old):
        os.unlink(old)


def resolve_model_path(path: str) -> str:
    """``path``, or ``path + ".old"`` when a crash interrupted a folder swap between its two renames."""
    if not os.path.exists(path) and os.path.isdir(path + ".old"):
        log.warning("%s: using %s.old left by an interrupted save", path, path)
        return path + ".old"
    return path


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
               train_state: dict | None = None, as_zip: bool | None = None) -> dict[str, Any]:
    """Write a ``.dbm`` atomically.

    Args:
        path: the model path (a folder, or a zip when ``as_zip`` or when ``path`` is an existing zip file).
        model: the network; its config goes into ``model.json["architecture"]``.
        meta: the rest of ``model.json`` (training summary, facesets, rights, name...).
        optimizer_state: ``optimizer.state_dict()`` to store for resuming, or None.
        train_state: JSON-able training state for resuming (iteration, seed...), or None.

    Returns:
        The ``model.json`` dict as written (with ``weights_sha256``).
    """
    path = os.fspath(path)
    if as_zip is None:
        as_zip = os.path.isfile(path)
    weights = state_to_bytes(model.state_dict())
    full = dict(meta)
    full.update({"schema": MODEL_SCHEMA, "architecture": model.cfg.to_json(), "resolution": model.cfg.res,
                 "weights_sha256": _sha256(weights),
                 "saved": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    files = {WEIGHTS: weights, META: (json.dumps(full, indent=1) + "\n").encode()}
    if optimizer_state is not None:
        opt_bytes, opt_meta = optimizer_to_files(optimizer_state)
        files[OPTIMIZER] = opt_bytes
        train_state = dict(train_state or {}, optimizer=opt_meta, optimizer_sha256=_sha256(opt_bytes))
    if train_state is not None:
        files[TRAIN_STATE] = (json.dumps(train_state, indent=1) + "\n").encode()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if as_zip:
        _write_zip(path, files)
    else:
        tmp = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
        try:
            for name, data in files.items():
                _write_bytes(os.path.join(tmp, name), data)
            _replace_dir(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return full


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
    """``model.json`` of a model, checked for its schema and architecture (weights are not read)."""
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
        ModelConfig.from_json(meta.get("architecture") or {})
    except (DoublureError, TypeError) as exc:
        raise ModelFileError(f"model file {path}: {exc}") from None
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
    return hashlib.sha256(json.dumps([meta["architecture"], meta["weights_sha256"], meta.get("face_type"),
                                      meta.get("name"), meta.get("rights")], sort_keys=True).encode()).hexdigest()


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
    """

    model: IdentityModel
    meta: dict[str, Any]
    digest: str
    path: str
    rights_warning: str = ""

    @property
    def rights(self) -> dict[str, Any]:
        return self.meta.get("rights") or {}

    @property
    def name(self) -> str:
        return self.meta.get("name") or os.path.basename(os.path.normpath(self.path))


def load_weights(path: str) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify a model's weights (checksum against ``model.json``). Never unpickles.

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
    except (SafetensorError, ValueError) as exc:
        raise ModelFileError(f"model file {path}: {WEIGHTS} is corrupt ({exc})") from None
    return ModelConfig.from_json(meta["architecture"]), state, meta


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
    return LoadedModel(model, meta, model_digest(path), path, warning)


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
    opt = None
    if "optimizer" in state:
        data = files.get(OPTIMIZER)
        if data is None or _sha256(data) != state.get("optimizer_sha256"):
            raise ModelFileError(f"model file {path}: {OPTIMIZER} is missing or does not match its checksum")
        opt = optimizer_from_files(data, state["optimizer"])
    return state, opt


# ------------------------------------------------------------------------------------------- card

def model_card(path: str) -> str:
    """A human-readable summary of a model (``doublure info model.dbm``): architecture, training, facesets
    and the rights record, with a loud line when the rights are missing or expired."""
    meta = read_meta(path)
    arch = meta["architecture"]
    lines = [f"Identity model {meta.get('name') or os.path.basename(os.path.normpath(path))}",
             f"  file: {os.path.abspath(path)}",
             f"  digest: {model_digest(path)[:16]}",
             f"  architecture: {arch['arch']} at {arch['res']} px, face type {meta.get('face_type', '?')}; "
             f"encoder {arch['e_ch']}, decoder {arch['d_ch']}, mask {arch['d_mask_ch']}, code {arch['ae_dims']}, "
             f"{arch.get('res_blocks', 1)} residual block(s) per upscale"]
    tr = meta.get("training") or {}
    if tr:
        lines.append(f"  training: {tr.get('iterations', 0)} iterations, batch {tr.get('batch', '?')}, "
                     f"{tr.get('elapsed_s', 0) / 60:.1f} min on {tr.get('device', '?')} ({tr.get('precision', '?')})")
        loss = tr.get("loss") or {}
        if loss.get("last"):
            lines.append("  loss (mean of last iterations): " +
                         ", ".join(f"{k} {v:.4f}" for k, v in sorted(loss["last"].items())))
        if tr.get("from"):
            lines.append(f"  started from: {tr['from']}")
    for role, label in (("a", "plate actor (A)"), ("b", "target actor (B)"), ("pretrain", "pretraining")):
        for fs in (meta.get("facesets") or {}).get(role, []):
            lines.append(f"  faceset {label}: {fs.get('path')} ({fs.get('items')} faces, sha256 {fs.get('digest', '')[:12]})")
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
    _write_zip(out, _read_files(folder, (WEIGHTS, META)))


def _write_zip(path: str, files: dict[str, bytes]) -> None:
    """An uncompressed zip of ``files``, written atomically (weights barely compress; stored reads fast)."""
    with atomic_path(path, suffix="") as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
            for name, data in files.items():
                zf.writestr(name, data)


__all__ = ["LoadedModel", "ModelFileError", "consent_problems", "has_training_state", "load_model", "load_weights", "model_card",
           "model_digest", "read_meta", "read_training_state", "rights_problems", "rights_record", "rights_reference",
           "save_model", "zip_model"]
