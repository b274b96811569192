"""The Beam ingestion job. `records`, `manifest` and `storage` are the dataset contract the
trainer imports; they must not import Beam (tests/test_layering.py checks it)."""
