"""Renamed crops.py; this name stays until trainer/ imports crops (issue 23): remove it then."""
from pipeline.dataset.crops import *  # noqa: F401,F403
