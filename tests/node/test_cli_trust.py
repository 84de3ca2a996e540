"""``citymesh network follow/unfollow`` and the ``follow`` section of config.toml."""

from __future__ import annotations

import stat
from pathlib import Path

from citymesh.node.config import ConfigError, Home
from citymesh.protocol.identity import SecretKey, identity_text

from .conftest import MakeHome
from .test_cli import assert_one_line_error, run


def test_follow_and_unfollow_edit_the_config(tmp_path: Path, make_home: MakeHome) -> None:
    home = make_home("Lyon", "FRA")
    brussels = make_home("Brussels")
    steward = identity_text(brussels.identity())
    result = run(tmp_path, "network", "follow", "uclg", "--steward", steward, "--home", home.root)
    assert result.returncode == 0, result.stderr
    assert "restart" in result.stdout
    assert home.load_config().trust_anchors() == {"uclg": [brussels.identity()]}
    # following again replaces the stewards of that network
    result = run(tmp_path, "network", "follow", "uclg", "--steward", steward, "--home", home.root)
    assert result.returncode == 0, result.stderr
    assert len(home.load_config().follow) == 1
    result = run(tmp_path, "network", "unfollow", "uclg", "--home", home.root)
    assert result.returncode == 0, result.stderr
    assert home.load_config().follow == []
    result = run(tmp_path, "network", "unfollow", "uclg", "--home", home.root)
    assert_one_line_error(result, "does not follow")


def test_follow_refuses_bad_arguments(tmp_path: Path, make_home: MakeHome) -> None:
    home = make_home("Lyon", "FRA")
    before = home.config_path.read_bytes()
    steward = identity_text(home.identity())
    cases = [
        (["network", "follow", "Bad Name", "--steward", steward], "network name"),
        (["network", "follow", "uclg", "--steward", "cmid1nothing"], "--steward"),
        (["network", "follow", "uclg", "--steward", steward[:-1] + "x"], "--steward"),
    ]
    for args, needle in cases:
        assert_one_line_error(run(tmp_path, *args, "--home", home.root), needle)
    missing = run(tmp_path, "network", "follow", "uclg", "--home", home.root)
    assert missing.returncode == 2 and "Missing option '--steward'" in missing.stderr
    assert home.config_path.read_bytes() == before  # nothing was written


def test_a_malformed_steward_in_the_config_is_named(tmp_path: Path, make_home: MakeHome) -> None:
    home = make_home("Lyon", "FRA")
    text = home.config_path.read_text().replace("follow = []\n", "")
    home.config_path.write_text(
        text + '\n[[follow]]\nnetwork = "uclg"\nstewards = ["cmid1notanidentity"]\n'
    )
    try:
        home.load_config()
    except ConfigError as err:
        assert "follow[0].stewards" in str(err) and "cmid1notanidentity" in str(err)
    else:
        raise AssertionError("a malformed steward identity was accepted")
    result = run(tmp_path, "status", "--home", home.root)
    assert_one_line_error(result, "follow[0].stewards")


def test_init_writes_recovery_keys_the_genesis_names(tmp_path: Path) -> None:
    home = tmp_path / "home"
    keys = tmp_path / "usb-stick"
    result = run(
        tmp_path,
        "init",
        "--home",
        home,
        "--city",
        "Mechelen",
        "--country",
        "BEL",
        "--recovery-keys",
        "2",
        "--recovery-dir",
        keys,
    )
    assert result.returncode == 0, result.stderr
    assert "move them offline" in result.stdout
    files = sorted(keys.iterdir())
    assert [f.name for f in files] == ["recovery-1.key", "recovery-2.key"]
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    named = Home(home).load_genesis().recovery
    assert named == [SecretKey.from_text(f.read_text()).public_key for f in files]
    # a second init may not overwrite keys there, nor ask for more than the genesis holds
    again = run(
        tmp_path, "init", "--home", tmp_path / "h2", "--city", "X", "--country", "BEL",
        "--recovery-keys", "1", "--recovery-dir", keys,
    )  # fmt: skip
    assert_one_line_error(again, "not empty")
    assert not (tmp_path / "h2" / "city.key").exists()
    too_many = run(
        tmp_path, "init", "--home", tmp_path / "h3", "--city", "X", "--country", "BEL",
        "--recovery-keys", "4",
    )  # fmt: skip
    assert too_many.returncode == 2 and "--recovery-keys" in too_many.stderr
