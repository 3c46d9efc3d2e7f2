"""doublure.farm."""
