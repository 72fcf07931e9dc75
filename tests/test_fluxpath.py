"""Finding and checking the flux command: one rule, one-line errors (no Flux needed)."""

import os

import pytest

from parsl_flux import fluxpath
from parsl_flux.fluxpath import FluxNotFound, check_flux, find_flux


def _exe(path, text="#!/bin/sh\necho 'commands:    \t\t0.88.0'\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_order_flux_path_then_path_then_built_prefix(tmp_path):
    cache = tmp_path / "cache"
    built = _exe(fluxpath.default_prefix({"PARSL_FLUX_CACHE": str(cache)}) / "bin" / "flux")
    on_path = _exe(tmp_path / "bin" / "flux")
    given = _exe(tmp_path / "given" / "flux")
    env = {"PARSL_FLUX_CACHE": str(cache), "PATH": str(tmp_path / "bin")}
    assert find_flux({**env, "FLUX_PATH": str(given)}) == str(given)
    assert find_flux(env) == str(on_path)
    assert find_flux({**env, "PATH": str(tmp_path / "empty")}) == str(built)
    assert find_flux({"PARSL_FLUX_CACHE": str(tmp_path / "none"), "PATH": ""}) is None


def test_flux_path_may_name_a_prefix_or_a_bin_directory(tmp_path):
    flux = _exe(tmp_path / "prefix" / "bin" / "flux")
    assert find_flux({"FLUX_PATH": str(tmp_path / "prefix"), "PATH": ""}) == str(flux)
    assert find_flux({"FLUX_PATH": str(tmp_path / "prefix" / "bin"), "PATH": ""}) == str(flux)


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("directory", "is a directory without flux"),
    ("not-executable", "is not executable"),
    ("fails", "failed: boom"),
    ("major", "is flux-core 1.0.0; parsl-flux needs 0.x"),
])
def test_each_bad_flux_is_one_line_naming_path_and_fix(tmp_path, case, message):
    path = tmp_path / "flux"
    if case == "directory":
        path.mkdir()
    elif case == "not-executable":
        path.write_text("#!/bin/sh\n")
        path.chmod(0o644)
    elif case == "fails":
        _exe(path, "#!/bin/sh\necho boom >&2\nexit 3\n")
    elif case == "major":
        _exe(path, "#!/bin/sh\necho 'commands: 1.0.0'\n")
    resolved = find_flux({"FLUX_PATH": str(path), "PATH": ""})
    with pytest.raises(FluxNotFound) as err:
        check_flux(resolved)
    text = str(err.value)
    assert message in text and "\n" not in text
    assert str(tmp_path) in text and "make flux" in text


def test_a_good_flux_passes_and_none_found_says_how_to_get_one(tmp_path):
    flux = _exe(tmp_path / "flux")
    assert check_flux(str(flux)) == str(flux)
    with pytest.raises(FluxNotFound, match="no flux command found; set FLUX_PATH"):
        check_flux(None)


def test_executor_refuses_to_start_a_local_block_without_flux(tmp_path, monkeypatch):
    from parsl.providers import LocalProvider

    from parsl_flux import FluxExecutor

    ex = FluxExecutor(provider=LocalProvider(init_blocks=0), flux_path=str(tmp_path / "nope"))
    ex.run_dir = str(tmp_path)
    ex.start()
    try:
        with pytest.raises(FluxNotFound, match="does not exist"):
            ex._get_launch_command("0")
        assert "0" not in ex.blocks
        assert not os.path.exists(os.path.join(ex.key_dir, "block-0.key"))
    finally:
        ex.shutdown()
