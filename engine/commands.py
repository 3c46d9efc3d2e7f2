"""Undoable edits. Every change to a graph is a Command pushed on its UndoStack, so the app's Ctrl+Z and
a script's ``graph.undo()`` walk one history."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator


class Command:
    """An edit that can be done and undone. ``text`` names it in the Edit menu ("Set Read1.file")."""

    text = "edit"

    def redo(self) -> None:
        raise NotImplementedError

    def undo(self) -> None:
        raise NotImplementedError


class FunctionCommand(Command):
    def __init__(self, text: str, redo: Callable[[], None], undo: Callable[[], None]) -> None:
        self.text, self._redo, self._undo = text, redo, undo

    def redo(self) -> None:
        self._redo()

    def undo(self) -> None:
        self._undo()


class MacroCommand(Command):
    """Several commands undone and redone as one (a paste, a paint stroke, a node with its connections)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.children: list[Command] = []

    def redo(self) -> None:
        for child in self.children:
            child.redo()

    def undo(self) -> None:
        for child in reversed(self.children):
            child.undo()


class UndoStack:
    """A linear history with an index; pushing after undos drops the redo tail (as Qt's QUndoStack).

    ``clean`` is true while the graph matches the last save (the title bar's modified marker).
    """

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self._commands: list[Command] = []
        self._index = 0
        self._clean_index: int | None = 0
        self._macros: list[MacroCommand] = []
        self._on_change = on_change

    def push(self, command: Command) -> None:
        """Do ``command`` and record it (inside a group, as part of the group)."""
        command.redo()
        if self._macros:
            self._macros[-1].children.append(command)
            return
        del self._commands[self._index:]
        if self._clean_index is not None and self._clean_index > self._index:
            self._clean_index = None
        self._commands.append(command)
        self._index += 1
        self._changed()

    @contextlib.contextmanager
    def group(self, text: str) -> Iterator[MacroCommand]:
        """Record every push inside the ``with`` block as one undoable step; an error undoes the block."""
        macro = MacroCommand(text)
        self._macros.append(macro)
        try:
            yield macro
        except BaseException:
            self._macros.pop()
            macro.undo()
            raise
        self._macros.pop()
        if macro.children:
            if self._macros:
                self._macros[-1].children.append(macro)
            else:
                del self._commands[self._index:]
                if self._clean_index is not None and self._clean_index > self._index:
                    self._clean_index = None
                self._commands.append(macro)
                self._index += 1
                self._changed()

    def can_undo(self) -> bool:
        return self._index > 0

    def can_redo(self) -> bool:
        return self._index < len(self._commands)

    def undo_text(self) -> str:
        return self._commands[self._index - 1].text if self.can_undo() else ""

    def redo_text(self) -> str:
        return self._commands[self._index].text if self.can_redo() else ""

    def undo(self) -> bool:
        if not self.can_undo():
            return False
        self._index -= 1
        self._commands[self._index].undo()
        self._changed()
        return True

    def redo(self) -> bool:
        if not self.can_redo():
            return False
        self._commands[self._index].redo()
        self._index += 1
        self._changed()
        return True

    @property
    def clean(self) -> bool:
        return self._clean_index == self._index

    def set_clean(self) -> None:
        self._clean_index = self._index
        self._changed()

    def clear(self) -> None:
        self._commands.clear()
        self._index = 0
        self._clean_index = 0
        self._changed()

    def __len__(self) -> int:
        return len(self._commands)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()
