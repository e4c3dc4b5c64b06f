"""Video analysis."""
