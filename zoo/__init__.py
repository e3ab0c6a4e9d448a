"""Avatar Zoo."""
