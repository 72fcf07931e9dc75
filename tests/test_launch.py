"""Block launch commands (pure string building, no Flux)."""

import shlex

import pytest

from parsl_flux.allocation import rundir_guard
from parsl_flux.allocation.manager import manager_key, parse_args
from parsl_flux.wire import launch
from parsl_flux.wire import protocol

FIELDS = {"flux": "/opt/flux bin/flux", "python": "/usr/bin/python3", "url": "tcp://h:1",
          "block_id": "3", "workdir": "/scratch/w", "flux_uri": "local:///run/flux/local",
          "heartbeat_period": 1.0, "heartbeat_threshold": 10.0, "server_key": launch.NO_SERVER_KEY}


def test_start_command_argv():
    argv = shlex.split(launch.render(launch.START_CMD, FIELDS))
    assert argv[:3] == ["/usr/bin/python3", "-m", "parsl_flux.allocation.rundir_guard"]
    assert argv[3:5] == ["/opt/flux bin/flux", "start"]
    assert rundir_guard.broker_argv(argv[3:], "/tmp/d")[2:4] == ["-Srundir=/tmp/d", "-Srundir-cleanup=1"]
    assert argv[5:8] == ["/opt/flux bin/flux", "env", "/usr/bin/python3"]
    assert argv[8:10] == ["-m", "parsl_flux.allocation.manager"]
    args = parse_args(argv[10:])
    assert (args.url, args.block_id, args.workdir) == ("tcp://h:1", "3", "/scratch/w")
    assert (args.heartbeat_period, args.driver_timeout) == (1.0, 10.0)
    assert args.server_key == launch.NO_SERVER_KEY  # no encryption asked for
    argv = shlex.split(launch.render(launch.START_CMD, {**FIELDS, "server_key": "K" * 40}))
    assert parse_args(argv[10:]).server_key == "K" * 40


def test_attach_command_uses_flux_proxy():
    argv = shlex.split(launch.render(launch.ATTACH_CMD, FIELDS))
    assert argv[:3] == ["/opt/flux bin/flux", "proxy", "local:///run/flux/local"]
    assert "parsl_flux.allocation.manager" in argv


def test_only_the_key_file_path_is_on_the_command_line():
    cmd = launch.with_key("flux start x", "/run/keys/block-1.key")
    assert cmd.startswith(f"{protocol.KEY_FILE_ENV}=/run/keys/block-1.key ")
    assert shlex.split(cmd)[1:] == ["flux", "start", "x"]


def test_unknown_placeholder_rejected():
    with pytest.raises(ValueError, match="hostname"):
        launch.check_template("{flux} start {hostname}")
    launch.check_template(launch.START_CMD)


def _key_file(path, text, mode=0o600):
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_manager_key_from_key_file_or_master_secret(tmp_path):
    master = protocol.new_secret()
    path = _key_file(tmp_path / "k", "00ff")
    assert manager_key({protocol.KEY_FILE_ENV: path}, "1") == b"\x00\xff"
    assert not (tmp_path / "k").exists(), "the key file is single use: removed once read"
    assert manager_key({protocol.SECRET_ENV: master.hex()}, "1") == protocol.block_key(master, "1")
    with pytest.raises(ValueError, match="none of"):
        manager_key({}, "1")
    with pytest.raises(ValueError, match="hex"):
        manager_key({protocol.KEY_FILE_ENV: _key_file(tmp_path / "z", "zz")}, "1")
    with pytest.raises(ValueError, match="cannot read"):
        manager_key({protocol.KEY_FILE_ENV: str(tmp_path / "missing")}, "1")


def test_manager_refuses_a_key_file_others_can_read(tmp_path):
    path = _key_file(tmp_path / "k", "00ff", mode=0o644)
    with pytest.raises(ValueError, match="readable by others.*644"):
        manager_key({protocol.KEY_FILE_ENV: path}, "1")


def test_fast_runner_start_only_when_site_adds_only_paths(tmp_path):
    from parsl_flux.allocation.flux_backend import runner_command, site_adds_only_paths

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "project.pth").write_text("/opt/src\n")
    (plain / "distutils-precedence.pth").write_text("import os; __import__('_distutils_hack').add_shim()\n")
    assert site_adds_only_paths([str(plain)])
    hooked = tmp_path / "hooked"
    hooked.mkdir()
    (hooked / "__editable__.pkg.pth").write_text("import __editable___pkg_finder; __editable___pkg_finder.install()\n")
    assert not site_adds_only_paths([str(plain), str(hooked)])
    assert runner_command("/py", False) == ["/py", "-m", "parsl_flux.job.runner"]
    fast = runner_command("/py", True)
    assert fast[:3] == ["/py", "-S", "-c"] and "PARSL_FLUX_SYS_PATH" in fast[3]
