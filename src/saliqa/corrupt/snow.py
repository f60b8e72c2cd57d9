"""Placeholder while the corruptions of this module are written (issue 5)."""
