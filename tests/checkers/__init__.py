"""Checkers over recorded histories, kept apart from the simulators that produce them."""
