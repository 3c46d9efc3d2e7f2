"""Issue 26: fuzzed model files (card, weights, training state). Every way of reading a model either works or
raises one ModelFileError naming the file; a card's numbers never build a network its weights disagree with,
and weights holding NaN or infinity are refused naming the tensor."""
import contextlib
import hashlib
import json
import os
import shutil
import tempfile

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings, strategies as st
from safetensors.torch import load as st_load_bytes
from safetensors.torch import save as st_save_bytes

from doublure.models.arch import IdentityModel, config_for
from doublure.models.dbm import (ModelFileError, load_model, model_card, model_digest, read_meta,
                                 read_training_state, save_model)
from doublure.models.train import make_optimizer

FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-2, 2 ** 40) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny checkpoint (weights, card with facesets and rights, optimiser and training state): its files."""
    path = str(tmp_path_factory.mktemp("fuzz") / "seed.dbm")
    torch.manual_seed(0)
    model = IdentityModel(config_for(64, "liae", 0.125))
    optimizer = make_optimizer(model, 1e-4, (0.5, 0.999))
    model(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))[0][0].mean().backward()
    optimizer.step()
    save_model(path, model, {"name": "seed", "face_type": "whole_face", "encoding": "srgb",
                             "facesets": {"a": [{"path": "/x/a", "items": 3, "digest": "ab", "size": 64}]},
                             "training": {"iterations": 1, "batch": 1, "elapsed_s": 1.0, "device": "cpu",
                                          "loss": {"first": {"dssim": 0.5}, "last": {"dssim": 0.4}}},
                             "rights": {"subject": "M030", "allowed_uses": ["film"], "expiry": "2099-01-01"}},
               optimizer_state=optimizer.state_dict(), train_state={"iteration": 1, "seed": 0, "elapsed_s": 1.0})
    files = ModelFiles()
    for name in os.listdir(path):
        with open(os.path.join(path, name), "rb") as f:
            files[name] = f.read()
    return files


class ModelFiles(dict):
    """A model's files by name (a short repr: hypothesis prints the test's arguments)."""

    def __repr__(self):
        return f"<model files {sorted(self)}>"


@contextlib.contextmanager
def model_folder(files):
    folder = tempfile.mkdtemp(prefix="doublure-fuzz-")
    try:
        path = os.path.join(folder, "fuzzed.dbm")
        os.mkdir(path)
        for name, data in files.items():
            with open(os.path.join(path, name), "wb") as f:
                f.write(data)
        yield path
    finally:
        shutil.rmtree(folder)


def read_every_way(path):
    """What the app, the CLI and training read of a model; returns how many worked. Any failure must be a
    ModelFileError naming the file."""
    worked = 0
    for read in (read_meta, model_digest, model_card, load_model, read_training_state):
        try:
            read(path)
            worked += 1
        except ModelFileError as exc:
            assert path in str(exc), exc
    return worked


def json_paths(value, prefix=()):
    """Every key path into a JSON value (dict keys and list indices)."""
    paths = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            paths += json_paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths += json_paths(item, prefix + (index,))
    return paths


def mutated(data, where, op, value):
    data = json.loads(json.dumps(data))
    if not where:
        return value
    parent = data
    for key in where[:-1]:
        parent = parent[key]
    if op == "delete":
        del parent[where[-1]]
    else:
        parent[where[-1]] = value
    return data


def with_card(files, card, weights=None):
    out = dict(files)
    if weights is not None:
        out["weights.safetensors"] = weights
        card = dict(card, weights_sha256=hashlib.sha256(weights).hexdigest())
    out["model.json"] = json.dumps(card).encode()
    return out


@FUZZ
@given(data=st.data())
def test_a_fuzzed_card_loads_or_is_refused_naming_the_file(checkpoint, data):
    card = json.loads(checkpoint["model.json"])
    where = data.draw(st.sampled_from(json_paths(card)), "where")
    op = data.draw(st.sampled_from(["set", "delete"]) if where else st.just("set"), "op")
    value = data.draw(json_values, "value")
    with model_folder(dict(checkpoint, **{"model.json": json.dumps(mutated(card, where, op, value)).encode()})) as path:
        read_every_way(path)


@FUZZ
@given(data=st.data())
def test_a_fuzzed_training_state_resumes_or_is_refused_naming_the_file(checkpoint, data):
    state = json.loads(checkpoint["train_state.json"])
    where = data.draw(st.sampled_from(json_paths(state)), "where")
    op = data.draw(st.sampled_from(["set", "delete"]) if where else st.just("set"), "op")
    value = data.draw(json_values, "value")
    with model_folder(dict(checkpoint, **{"train_state.json": json.dumps(mutated(state, where, op, value)).encode()})) \
            as path:
        try:
            read_training_state(path)   # the only reader of the training state
        except ModelFileError as exc:
            assert path in str(exc), exc


@FUZZ
@given(data=st.data())
def test_fuzzed_weights_with_a_matching_checksum_are_refused_naming_file_and_tensor(checkpoint, data):
    card = json.loads(checkpoint["model.json"])
    raw = checkpoint["weights.safetensors"]
    state = st_load_bytes(raw)
    name = data.draw(st.sampled_from(sorted(state)), "tensor")
    kind = data.draw(st.sampled_from(["shape", "nan", "inf", "int", "drop", "extra", "truncate", "flip"]), "kind")
    if kind == "truncate":
        weights = raw[:data.draw(st.integers(0, len(raw) - 1), "at")]
    elif kind == "flip":
        at = data.draw(st.integers(0, min(len(raw) - 1, 4096)), "at")   # the header and the first tensors
        weights = raw[:at] + bytes([raw[at] ^ data.draw(st.integers(1, 255), "bits")]) + raw[at + 1:]
    else:
        tensor = state[name]
        if kind == "shape":
            shape = data.draw(st.lists(st.integers(1, 6), min_size=1, max_size=4).filter(
                lambda drawn: tuple(drawn) != tuple(tensor.shape)), "shape")
            state[name] = torch.zeros(shape)
        elif kind in ("nan", "inf"):
            tensor.view(-1)[data.draw(st.integers(0, tensor.numel() - 1), "at")] = float(kind)
        elif kind == "int":
            state[name] = tensor.to(torch.int32)
        elif kind == "drop":
            del state[name]
        else:
            state["decoder.extra.weight"] = torch.zeros(2)
        weights = st_save_bytes(state)
    with model_folder(with_card(checkpoint, card, weights)) as path:
        if kind == "flip":   # a flipped bit of a value may leave a sound model: either is fine
            read_every_way(path)
            return
        with pytest.raises(ModelFileError) as refused:
            load_model(path)
        assert path in str(refused.value)
        if kind in ("nan", "inf", "shape", "int", "drop"):
            assert name in str(refused.value)


@FUZZ
@given(field=st.sampled_from(["e_ch", "d_ch", "d_mask_ch", "ae_dims", "res", "res_blocks", "depth"]),
       value=st.integers(-5, 2 ** 50))
@example(field="res", value=96)   # a res the architecture's checks allow, not the card's resolution (CI, session 17)
def test_a_card_asking_for_another_network_than_its_weights_is_refused_before_building_it(checkpoint, field, value):
    card = json.loads(checkpoint["model.json"])
    card["architecture"][field] = value
    with model_folder(with_card(checkpoint, card)) as path:
        if json.dumps(card["architecture"]) == json.dumps(json.loads(checkpoint["model.json"])["architecture"]):
            return   # drew the value the model has
        # a res the checks allow but the card's resolution contradicts is refused by that field
        with pytest.raises(ModelFileError, match="model.json field (architecture|resolution)|weights.safetensors "
                                                 "weights: tensor"):
            load_model(path)


def test_the_named_failures(checkpoint):
    card = json.loads(checkpoint["model.json"])
    state = st_load_bytes(checkpoint["weights.safetensors"])
    name = sorted(state)[3]
    state[name].view(-1)[0] = float("nan")
    with model_folder(with_card(checkpoint, card, st_save_bytes(state))) as path:
        with pytest.raises(ModelFileError, match=rf"fuzzed.dbm: weights.safetensors weights: tensor {name} holds 1 "
                                                 r"NaN or infinite"):
            load_model(path)
    huge = dict(card, architecture=dict(card["architecture"], e_ch=1 << 40))
    with model_folder(with_card(checkpoint, huge)) as path:
        with pytest.raises(ModelFileError, match=r"model.json field architecture: model e_ch must be 1..1024"):
            read_meta(path)
    wide = dict(card, architecture=dict(card["architecture"], e_ch=1024, ae_dims=8192))
    with model_folder(with_card(checkpoint, wide)) as path:   # within bounds, but not what the weights hold
        with pytest.raises(ModelFileError, match=r"weights: tensor .* is \(\d+, 3, 5, 5\), but the card's "
                                                 r"architecture makes it \(1024, 3, 5, 5\)"):
            load_model(path)
    for field, value, says in (("rights", ["a"], "field rights: must be an object"),
                               ("training", {"elapsed_s": float("nan")}, "field training.elapsed_s: must be a finite"),
                               ("facesets", {"a": "x"}, "field facesets.a: must be a list")):
        with model_folder(with_card(checkpoint, dict(card, **{field: value}))) as path:
            with pytest.raises(ModelFileError, match=says):
                model_card(path)
