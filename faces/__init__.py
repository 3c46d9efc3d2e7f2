"""doublure.faces."""
