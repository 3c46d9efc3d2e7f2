"""The layers of DESIGN.md: the engine and the node library run headless, with no Qt loaded."""
import subprocess
import sys

QT_MODULES = ("PySide6", "PySide2", "PyQt5", "PyQt6", "shiboken6", "NodeGraphQt", "Qt")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sys.modules))"],
                         check=True, capture_output=True, text=True).stdout
    return set(out.split())


def test_engine_and_nodes_import_no_qt():
    loaded = _modules_after("import doublure.engine, doublure.nodes, doublure.faces, doublure.finish, doublure.models")
    assert "doublure.nodes" in loaded
    qt = sorted(m for m in loaded if m.split(".")[0] in QT_MODULES)
    assert qt == [], f"Qt loaded below the app layer: {qt[:5]}"


def test_engine_imports_nothing_above_it():
    loaded = _modules_after("import doublure.engine")
    above = sorted(m for m in loaded if m.split(".")[:2] in (["doublure", "nodes"], ["doublure", "app"],
                                                            ["doublure", "faces"], ["doublure", "models"],
                                                            ["doublure", "farm"], ["doublure", "finish"]))
    assert above == []


def test_headless_command_line_loads_no_qt():
    loaded = _modules_after("import doublure.app.cli, doublure.farm")
    qt = sorted(m for m in loaded if m.split(".")[0] in QT_MODULES)
    assert qt == []


def test_the_libraries_import_no_node_and_no_app():
    loaded = _modules_after("import doublure.faces.temporal, doublure.faces.composite, doublure.finish.grain, "
                            "doublure.finish.colour_transfer, doublure.finish.eyes, doublure.finish.shading")
    above = sorted(m for m in loaded if m.split(".")[:2] in (["doublure", "nodes"], ["doublure", "app"],
                                                            ["doublure", "farm"]))
    assert above == []
