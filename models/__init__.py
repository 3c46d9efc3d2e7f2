"""doublure.models."""
