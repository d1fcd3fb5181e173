"""Judging: reading a snapshot, typing it, extracting views, running detectors, the verdict."""
