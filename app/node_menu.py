"""The Tab menu: type to filter the registered node types, Enter creates the highlighted one."""
from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

from doublure.engine import node_types

BACKDROP_ENTRY = ("Backdrop", "Other", "A coloured box grouping nodes (B)")


def menu_entries() -> list[tuple[str, str, str]]:
    """(type name, category, first docstring line) of every registered node type, plus Backdrop."""
    entries = []
    for name, cls in node_types().items():
        doc = (cls.__doc__ or "").strip().splitlines()
        entries.append((name, cls.category, doc[0] if doc else ""))
    entries.append(BACKDROP_ENTRY)
    return sorted(entries, key=lambda e: (e[1], e[0]))


def matches(query: str, name: str, category: str) -> tuple[int, int] | None:
    """Rank of ``name`` for ``query`` (lower is better) or None: a prefix beats a substring beats the
    letters in order (``cm`` finds ColorMatch); case is ignored."""
    q, n = query.lower().strip(), name.lower()
    if not q:
        return (0, 0)
    if n.startswith(q):
        return (0, len(n))
    if q in n or q in category.lower():
        return (1, n.find(q))
    it = iter(n)
    if all(ch in it for ch in q):
        return (2, len(n))
    return None


class NodeMenu(QtWidgets.QFrame):
    """A popup with a search field over a list of node types; ``chosen(type_name)`` on Enter or click."""

    chosen = QtCore.Signal(str)

    def __init__(self, parent: QtWidgets.QWidget) -> None:
        super().__init__(parent, QtCore.Qt.WindowType.Popup)
        self.setFrameShape(QtWidgets.QFrame.Shape.StyledPanel)
        self.search = QtWidgets.QLineEdit(self)
        self.search.setPlaceholderText("node type…")
        self.list = QtWidgets.QListWidget(self)
        self.list.setMinimumSize(260, 240)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(3, 3, 3, 3)
        layout.addWidget(self.search)
        layout.addWidget(self.list)
        self.search.textChanged.connect(self._filter)
        self.search.installEventFilter(self)
        self.list.itemActivated.connect(self._activate)
        self.list.itemClicked.connect(self._activate)

    def type_names(self) -> list[str]:
        return [e[0] for e in menu_entries()]

    def popup_at(self, global_pos: QtCore.QPoint) -> None:
        self.search.clear()
        self._filter("")
        self.move(global_pos)
        self.show()
        self.search.setFocus()

    def _filter(self, text: str) -> None:
        ranked = []
        for name, category, doc in menu_entries():
            rank = matches(text, name, category)
            if rank is not None:
                ranked.append((rank, category, name, doc))
        if not text.strip():
            ranked.sort(key=lambda r: (r[1], r[2]))
        else:
            ranked.sort()
        self.list.clear()
        for _, category, name, doc in ranked:
            item = QtWidgets.QListWidgetItem(f"{name}    ({category})")
            item.setData(QtCore.Qt.ItemDataRole.UserRole, name)
            item.setToolTip(doc)
            self.list.addItem(item)
        if self.list.count():
            self.list.setCurrentRow(0)

    def eventFilter(self, watched: QtCore.QObject, event: QtCore.QEvent) -> bool:  # noqa: N802
        if watched is self.search and event.type() == QtCore.QEvent.Type.KeyPress:
            key = event.key()
            if key in (QtCore.Qt.Key.Key_Down, QtCore.Qt.Key.Key_Up):
                row = self.list.currentRow() + (1 if key == QtCore.Qt.Key.Key_Down else -1)
                self.list.setCurrentRow(max(0, min(self.list.count() - 1, row)))
                return True
            if key in (QtCore.Qt.Key.Key_Return, QtCore.Qt.Key.Key_Enter):
                if self.list.currentItem() is not None:
                    self._activate(self.list.currentItem())
                return True
            if key == QtCore.Qt.Key.Key_Escape:
                self.hide()
                return True
        return False

    def _activate(self, item: QtWidgets.QListWidgetItem) -> None:
        name = item.data(QtCore.Qt.ItemDataRole.UserRole)
        self.hide()
        self.chosen.emit(name)

    def keyPressEvent(self, event: QtGui.QKeyEvent) -> None:  # noqa: N802
        if event.key() == QtCore.Qt.Key.Key_Escape:
            self.hide()
            return
        super().keyPressEvent(event)
