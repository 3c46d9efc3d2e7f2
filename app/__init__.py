"""doublure.app."""
