"""Entry script of the PyInstaller bundle: the same ``doublure`` command as the installed console script."""
import sys

from doublure.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
