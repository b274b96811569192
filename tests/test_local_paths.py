"""Remote names turned into local paths never leave their folder; caches are per user, 0700."""
from __future__ import annotations

import os
import stat

import pytest

from pipeline.dataset.local_paths import UnsafeName, path_under, relative_key, user_cache_dir


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "a/./b", "a//b", "", "a\0b",
                                  "..", "a/..", "a\\..\\b"])
def test_names_that_leave_or_hide_their_folder_are_refused(tmp_path, name):
    with pytest.raises(UnsafeName, match="refusing remote name"):
        path_under(str(tmp_path), name)


def test_plain_names_land_under_the_folder(tmp_path):
    assert path_under(str(tmp_path), "variables/variables.index") == str(tmp_path / "variables" / "variables.index")
    assert path_under(str(tmp_path), "saved_model.pb") == str(tmp_path / "saved_model.pb")


def test_a_symlink_inside_the_folder_cannot_lead_out(tmp_path):
    (tmp_path / "cache").mkdir()
    os.symlink("/etc", tmp_path / "cache" / "link")
    with pytest.raises(UnsafeName, match="resolves outside"):
        path_under(str(tmp_path / "cache"), "link/passwd")


def test_relative_key_needs_the_prefix():
    assert relative_key("s3://b/models/m", "s3://b/models/m/a/b") == "a/b"
    with pytest.raises(UnsafeName):
        relative_key("s3://b/models/m", "s3://b/models/mx/a")


def test_the_cache_is_per_user_and_private(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    old = os.umask(0o022)
    try:
        path = user_cache_dir("nightly")
    finally:
        os.umask(old)
    assert path == str(tmp_path / "xdg" / "image-classifier-pipeline" / "nightly")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
