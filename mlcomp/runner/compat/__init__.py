"""Compatibility layers that let code written for other tools run on mlcomp unchanged."""
