"""Stubs generated from proto/runnerline/v1 by scripts/python-stubs.mjs; never edited by hand."""
