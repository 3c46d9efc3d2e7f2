"""doublure.resources."""
