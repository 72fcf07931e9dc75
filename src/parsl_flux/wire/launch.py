"""The command that starts one block: ``flux start`` (or ``flux proxy``) + manager.

Pure string building, kept apart from the executor so the exact line a provider
submits can be unit-tested and printed (``parsl-flux sites show``).
"""

from __future__ import annotations

import shlex
import string
from typing import Mapping, Optional

from parsl_flux.wire.protocol import KEY_ENV, KEY_FILE_ENV

MANAGER = ("{flux} env {python} -m parsl_flux.allocation.manager --url {url} --block-id {block_id} --workdir {workdir}"
           " --heartbeat-period {heartbeat_period} --driver-timeout {heartbeat_threshold}"
           " --server-key {server_key}")
START_CMD = "{python} -m parsl_flux.allocation.rundir_guard {flux} start " + MANAGER
"""Start a new Flux instance whose initial program is the manager.

On every node :mod:`parsl_flux.allocation.rundir_guard` execs ``flux start``
(the launcher's process is the broker) with a run directory that is removed
however the broker ends.

``flux env`` puts Flux's Python bindings on the manager's ``PYTHONPATH`` (``flux
start`` alone does not), so any interpreter with parsl-flux installed works."""

ATTACH_CMD = "{flux} proxy {flux_uri} " + MANAGER
"""Run the manager against an existing Flux instance (attach mode)."""

NO_SERVER_KEY = "none"
"""``{server_key}`` when the driver connection is not encrypted (a word, not an
empty argument, which some launchers' wrappers drop)."""

FIELDS = frozenset({"flux", "python", "url", "block_id", "workdir", "flux_uri", "heartbeat_period",
                    "heartbeat_threshold", "server_key"})


def template_fields(template: str) -> set[str]:
    """The ``{placeholders}`` used by a launch command template."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


REQUIRED_FIELDS = frozenset({"url", "block_id"})
"""Placeholders every launch command needs: the manager dials ``{url}`` as block ``{block_id}``."""


def check_template(template: str, encrypted: bool = False) -> None:
    """Reject a user ``launch_cmd`` that uses placeholders we do not fill, or
    lacks one its manager needs to reach the driver (``{server_key}`` too when
    the connection is ``encrypted``): such a block would start and never connect."""
    fields = template_fields(template)
    unknown = fields - FIELDS
    if unknown:
        raise ValueError(f"launch_cmd {template!r} uses unknown placeholder(s) {sorted(unknown)}; "
                         f"available: {sorted(FIELDS)}")
    missing = (REQUIRED_FIELDS | ({"server_key"} if encrypted else set())) - fields
    if missing:
        raise ValueError(f"launch_cmd {template!r} lacks placeholder(s) {sorted(missing)}, without which its "
                         "manager cannot reach the driver" + (" (the connection is encrypted)" if encrypted else ""))


def render(template: str, fields: Mapping[str, str]) -> str:
    """Fill a template; every value is shell-quoted."""
    return template.format(**{k: shlex.quote(str(v)) for k, v in fields.items()})


def with_key(command: str, key_file: str, key_hex: Optional[str] = None,
             extra_env: Optional[Mapping[str, str]] = None) -> str:
    """Prefix the path of the block's key file (and other variables) as
    environment assignments.

    Only the path appears in the submit script and the processes' environment;
    the key itself is in a 0600 file that the manager reads and removes. With
    ``key_hex`` (no shared filesystem) the key itself is assigned instead.
    """
    key = {KEY_ENV: key_hex} if key_hex else {KEY_FILE_ENV: key_file}
    assignments = {**key, **(extra_env or {})}
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in assignments.items())
    return f"{prefix} {command}"
