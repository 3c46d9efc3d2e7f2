"""Doublure's node library. Importing this package imports every node module in it, and each registers its
node type with the engine; a new node is a new module here and nothing else."""
import importlib
import pkgutil


def _import_all() -> None:
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_import_all()
