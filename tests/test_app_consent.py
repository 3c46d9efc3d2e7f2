"""The app's consent dialog: a render that consent does not cover asks for a reason; given one, it renders and
every frame records it; refused, nothing is written. Real widgets, a real render of real footage."""
from __future__ import annotations

import json

import OpenImageIO as oiio
import torch
from PySide6 import QtCore, QtWidgets

import doublure.nodes  # noqa: F401
from doublure.models.arch import IdentityModel, config_for
from doublure.models.dbm import rights_record, save_model

from test_app_support import window  # noqa: F401


def answer_dialog(reason: str | None) -> None:
    """Fill and accept (reason) or cancel (None) the modal dialog once it is up."""
    def act() -> None:
        dialog = QtWidgets.QApplication.activeModalWidget()
        if not isinstance(dialog, QtWidgets.QInputDialog):
            QtCore.QTimer.singleShot(20, act)
            return
        if reason is None:
            dialog.reject()
        else:
            dialog.setTextValue(reason)
            dialog.accept()
    QtCore.QTimer.singleShot(20, act)


def test_the_render_panel_asks_for_a_reason_and_records_it(qtbot, window, tmp_path, media_dir, monkeypatch):
    monkeypatch.setenv("DOUBLURE_CONFIG_DIR", str(tmp_path / "config"))
    torch.manual_seed(0)
    model = str(tmp_path / "m.dbm")
    save_model(model, IdentityModel(config_for(64, "df", 0.125)),
               {"name": "m030", "face_type": "whole_face",
                "rights": rights_record("M030", "M030", "2020-01-10", "AGR-1", "feature", "2021-01-01")})
    graph = window.graph
    graph.set_setting("declared_use", "feature")
    read = graph.create("Read", file=str(media_dir / "mead" / "W009_front_happy_level3_001.mp4"), first=1, last=10)
    swap = graph.create("SwapModel", inputs=[graph.create("FaceDetect", inputs=[read])], model=model)
    graph.create("Write", inputs=[swap], file=str(tmp_path / "out" / "sh.####.png"))
    panel = window.render_panel
    panel.frames.setText("1-1")

    answer_dialog(None)
    qtbot.mouseClick(panel.render_button, QtCore.Qt.MouseButton.LeftButton)
    assert panel.job is None and not (tmp_path / "out").exists()
    assert "render refused: consent does not cover it: SwapModel1 (m030): rights expired on 2021-01-01" in \
        panel.log.toPlainText()

    answer_dialog("extension approved by legal, ticket 4411")
    qtbot.mouseClick(panel.render_button, QtCore.Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.job is None, timeout=120000)
    assert "finished: 1 written" in panel.log.toPlainText(), panel.log.toPlainText()
    spec = oiio.ImageInput.open(str(tmp_path / "out" / "sh.0001.png")).spec()
    record = json.loads(spec.getattribute("doublure:consent_override"))
    assert record["reason"] == "extension approved by legal, ticket 4411" and record["when"]
