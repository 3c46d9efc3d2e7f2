"""Run under a real X server by ``test_app_screens.py``: open a shot in the main window at 1920x1050, save
screenshots of its states and print what the test checks as one JSON line.

Usage: python screens_driver.py SHOT.dbl OUT_DIR
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets


def main(project: str, out: str) -> int:
    import doublure.nodes  # noqa: F401
    from doublure.app.main_window import MainWindow, apply_dark_theme

    out_dir = Path(out)
    app = QtWidgets.QApplication(sys.argv[:1])
    apply_dark_theme(app)
    # A first start: no layout, facesets or model left by an earlier run.
    (out_dir / "settings.ini").unlink(missing_ok=True)
    for leftover in ("faceset_W009", "faceset_M030", "model.dbm", "model.training"):
        shutil.rmtree(out_dir / leftover, ignore_errors=True)
    settings = QtCore.QSettings(str(out_dir / "settings.ini"), QtCore.QSettings.Format.IniFormat)
    window = MainWindow(settings=settings, autosave_s=3600)
    window.resize(1920, 1050)
    window.move(0, 0)
    window.show()
    window.open_project(project, ask_save=False, offer_recovery=False)

    def pump_until(done, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 50)
            if done():
                return True
            time.sleep(0.01)
        return False

    def rect_of(widget: QtWidgets.QWidget) -> list[int]:
        top_left = widget.mapTo(window, QtCore.QPoint(0, 0))
        return [top_left.x(), top_left.y(), widget.width(), widget.height()]

    viewer, graph_view = window.viewer, window.graph_view
    report: dict = {}
    report["drawn"] = pump_until(lambda: viewer.is_current() and viewer.canvas.frame_a is not None, 240)
    # The node graph at 1:1 around ColorMatch1, so the pipe labels are legible.
    graph_view.ng.set_zoom(0.0)
    colormatch = graph_view.view_of(window.graph["ColorMatch1"]).view
    graph_view.ng.center_on([graph_view.view_of(window.graph["ColorMatch1"])])
    pump_until(lambda: False, 1.0)
    ng_view = graph_view.ng.viewer()
    labels = {}
    for port, label in colormatch._port_labels.items():
        rect = ng_view.mapFromScene(label.sceneBoundingRect()).boundingRect()
        labels[port.name] = [*QtCore.QPoint(ng_view.mapTo(window, rect.topLeft())).toTuple(), rect.width(),
                             rect.height()]
        assert ng_view.rect().contains(rect), f"the {port.name} label is outside the node graph's view"
    report["labels"] = labels
    report["name_inside"] = colormatch.boundingRect().contains(colormatch.text_item.mapToParent(
        colormatch.text_item.boundingRect().center()))
    report["canvas"] = rect_of(viewer.canvas)
    report["properties"] = rect_of(window.properties_dock)
    report["window"] = [window.width(), window.height()]
    window.grab().save(str(out_dir / "layout.png"))
    # Read1 pointed at a file that is not there: the error replaces the picture, Read1 is drawn in error.
    read = window.graph["Read1"]
    window.graph.set_knob(read, "file", str(out_dir / "missing_plate.mp4"))
    report["error_shown"] = pump_until(lambda: bool(viewer.canvas.message) and graph_view.node_error(read), 60)
    graph_view.ng.center_on([graph_view.view_of(read)])
    pump_until(lambda: False, 1.0)
    node_rect = ng_view.mapFromScene(graph_view.view_of(read).view.sceneBoundingRect()).boundingRect()
    report["read_node"] = [*QtCore.QPoint(ng_view.mapTo(window, node_rect.topLeft())).toTuple(), node_rect.width(),
                           node_rect.height()]
    report["message"] = viewer.canvas.message
    window.grab().save(str(out_dir / "error.png"))
    # The training panel from clips to a live curve and previews (a tiny model, a few dozen iterations).
    panel = window.training_panel
    window.training_dock.raise_()
    panel.extract_size.setValue(64)
    panel.extract_every.setValue(8)
    media = Path(__file__).resolve().parents[1] / "resources" / "demo" / "media"
    for field, actor in ((panel.source, "W009"), (panel.target, "M030")):
        panel.extract(field, [str(media / f"{actor}_front_happy_level3_001.mp4")], str(out_dir / f"faceset_{actor}"))
        pump_until(lambda: panel.extraction is None, 120)
    panel.out.setText(str(out_dir / "model.dbm"))
    panel.res.setCurrentText("64")
    panel.width_scale.setValue(0.125)
    panel.batch.setValue(4)
    panel.preview_every.setValue(10)
    panel.no_rights.setChecked(True)
    panel.start()
    report["trained"] = pump_until(lambda: panel.series.get("a") is not None and panel.series["a"].count() >= 4
                                   and panel.preview.pixmap() is not None and not panel.preview.pixmap().isNull(),
                                   180)
    pump_until(lambda: False, 0.5)
    report["chart"] = rect_of(panel.chart_view)
    report["preview"] = rect_of(panel.preview)
    window.grab().save(str(out_dir / "training.png"))
    report["training_state"] = panel.rate.text()
    panel.stop()
    pump_until(lambda: not panel.running(), 60)
    print(json.dumps(report))
    window.graph.undo_stack.set_clean()
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
