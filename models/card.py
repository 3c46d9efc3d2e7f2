"""Checks of what a ``.dbm`` file holds before anything is built from it: the card's fields (``model.json``)
against their types and ranges, and the weights against the architecture the card declares.

A model file may come from anywhere (a vendor, a shared drive), so nothing in it is trusted: the network is
built only from numbers that agree with the weights' tensor shapes (an architecture is first laid out on
torch's ``meta`` device, which allocates nothing), and weights holding NaN or infinity are refused. Each
check raises ``ValueError("<field>: <what is wrong>")``; :mod:`doublure.models.dbm` adds the file's name.
"""
from __future__ import annotations

import math
import re
from typing import Any

import torch

from .arch import IdentityModel, ModelConfig
from .detail import DetailConfig, DetailNet

# The card's optional fields and their kinds: "string", "integer" (>= 0), "number" (finite, >= 0),
# "boolean", "object" (a dict), or a nested table for an object whose fields are checked in turn.
_RIGHTS = {"subject": "string", "consent_given_by": "string", "consent_date": "string", "agreement": "string",
           "allowed_uses": "strings", "expiry": "string"}
_FACESET = {"path": "string", "items": "integer", "digest": "string", "size": "integer", "face_type": "string",
            "clips": "strings", "every": "integer"}
_TRAINING = {"iterations": "integer", "batch": "integer", "elapsed_s": "number", "device": "string",
             "precision": "string", "from": "string", "rollbacks": "integer", "pretrain": "boolean",
             "hyper": "object", "loss": {"first": "numbers", "last": "numbers"}}
# the detail stage's card (its architecture is checked by DetailConfig when it is built)
_DETAIL = {"architecture": "object", "weights_sha256": "string", "identity_sha256": "string",
           "identity_iteration": "integer", "training": "object"}
# the reference faces' card (their tensors are checked by doublure.models.references when they are read)
_REFERENCES = {"sha256": "string", "count": "integer", "size": "integer", "faceset": "string", "clips": "strings"}
CARD_FIELDS: dict[str, Any] = {"name": "string", "face_type": "string", "encoding": "string", "saved": "string",
                               "resolution": "integer", "rights": _RIGHTS, "training": _TRAINING,
                               "facesets": "facesets", "detail": _DETAIL, "references": _REFERENCES}


def _kind_problem(value: Any, kind: Any) -> str | None:
    """What is wrong with ``value`` for ``kind`` (None: nothing). Nested tables are checked by the caller."""
    if kind == "string":
        return None if isinstance(value, str) else "must be a string"
    if kind == "integer":
        return None if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else \
            "must be a whole number >= 0"
    if kind == "number":
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
            and value >= 0 else "must be a finite number >= 0"
    if kind == "boolean":
        return None if isinstance(value, bool) else "must be true or false"
    if kind == "object":
        return None if isinstance(value, dict) else "must be an object"
    if kind == "strings":
        return None if isinstance(value, list) and all(isinstance(v, str) for v in value) else \
            "must be a list of strings"
    if kind == "numbers":
        return None if isinstance(value, dict) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value.values()) \
            else "must be an object of finite numbers"
    raise AssertionError(kind)


def _check_fields(data: dict, table: dict[str, Any], where: str) -> None:
    for name, kind in table.items():
        value = data.get(name)
        field = f"{where}{name}"
        if value is None:   # every card field is optional (null or absent) but the ones read_meta requires
            continue
        if isinstance(kind, dict):
            if not isinstance(value, dict):
                raise ValueError(f"{field}: must be an object, got {type(value).__name__}")
            _check_fields(value, kind, field + ".")
        elif kind == "facesets":
            _check_facesets(value, field)
        elif (problem := _kind_problem(value, kind)) is not None:
            raise ValueError(f"{field}: {problem}, got {value!r:.60}")


def _check_facesets(value: Any, field: str) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{field}: must be an object of faceset lists, got {type(value).__name__}")
    for role, entries in value.items():
        if not isinstance(entries, list):
            raise ValueError(f"{field}.{role}: must be a list, got {type(entries).__name__}")
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ValueError(f"{field}.{role}[{index}]: must be an object, got {type(entry).__name__}")
            _check_fields(entry, _FACESET, f"{field}.{role}[{index}].")


def check_card(meta: dict[str, Any]) -> ModelConfig:
    """Check a card's fields (its ``schema`` is checked by the caller) and return its architecture.

    Raises:
        ValueError: ``"<field>: <what is wrong>"`` for the first field of a wrong type or out of range.
    """
    try:
        cfg = ModelConfig.from_json(meta.get("architecture"))
    except Exception as exc:  # DoublureError from the config's checks, TypeError from a missing value
        raise ValueError(f"architecture: {exc}") from None
    digest = meta.get("weights_sha256")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"weights_sha256: must be 64 hexadecimal digits, got {digest!r:.70}")
    _check_fields(meta, CARD_FIELDS, "")
    if meta.get("resolution") is not None and meta["resolution"] != cfg.res:
        raise ValueError(f"resolution: {meta['resolution']} but the architecture's res is {cfg.res}")
    return cfg


def expected_shapes(cfg: ModelConfig | DetailConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of the network ``cfg`` describes (a ``ModelConfig``, or a ``DetailConfig`` for the detail
    stage), by name, with its shape; nothing is allocated."""
    with torch.device("meta"):
        model = DetailNet(cfg) if isinstance(cfg, DetailConfig) else IdentityModel(cfg)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def check_weights(cfg: ModelConfig | DetailConfig, state: dict[str, torch.Tensor]) -> None:
    """Check that the weights are exactly the tensors ``cfg``'s network has (the identity network's
    ``ModelConfig`` or the detail stage's ``DetailConfig``), with its shapes, floating point and finite.

    Raises:
        ValueError: naming the first tensor missing, unexpected, of another shape or dtype, or holding NaN or
        infinity.
    """
    shapes = expected_shapes(cfg)
    arch = getattr(cfg, "arch", "detail stage")
    missing = sorted(set(shapes) - set(state))
    if missing:
        raise ValueError(f"weights: tensor {missing[0]} of the {arch} architecture is missing "
                         f"({len(missing)} missing)")
    extra = sorted(set(state) - set(shapes))
    if extra:
        raise ValueError(f"weights: tensor {extra[0]} is not part of the {arch} architecture")
    for name, shape in shapes.items():
        tensor = state[name]
        if tuple(tensor.shape) != shape:
            raise ValueError(f"weights: tensor {name} is {tuple(tensor.shape)}, but the card's architecture "
                             f"makes it {shape}")
        if not tensor.is_floating_point():
            raise ValueError(f"weights: tensor {name} holds {tensor.dtype}, not floating point numbers")
        if not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(f"weights: tensor {name} holds {bad} NaN or infinite value(s)")
