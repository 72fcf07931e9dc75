"""Checks of :class:`~parsl_flux.FluxExecutor`'s arguments, made when it is built.

A wrong value given to the executor otherwise surfaced only once a block ran,
as a failure that did not name it: ``container="docker"`` as "'str' object has
no attribute 'wrap'", ``address="login 1"`` as a ZMQ error in the block's
stderr and ``TooManyJobFailuresError``, a ``launch_cmd`` without ``{url}`` as a
block that never connected. Each check here raises at construction (so at
``Config(...)``), naming the argument and its value.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any, Optional, Tuple

_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
PORT_MIN, PORT_MAX = 1, 65535


def is_host(address: str) -> bool:
    """Whether ``address`` is an IPv4 address or a host name (RFC 1123 labels;
    an underscore, which some sites' internal names hold, is let through)."""
    try:
        return ipaddress.ip_address(address).version == 4
    except ValueError:
        pass
    labels = address[:-1].split(".") if address.endswith(".") else address.split(".")
    return 0 < len(address) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


def check_address(address: Optional[str]) -> None:
    """The driver listens on IPv4 only (and writes ``tcp://ADDRESS:PORT``), so an
    IPv6 address is refused here rather than by every block's manager."""
    if address is not None and (not isinstance(address, str) or not is_host(address)):
        raise ValueError(f"address={address!r} is not a host name or IPv4 address that managers could dial")


def check_port(port: Optional[int], port_range: Tuple[int, int]) -> None:
    if port is not None and (not _is_int(port) or not PORT_MIN <= port <= PORT_MAX):
        raise ValueError(f"port={port!r} must be a port number ({PORT_MIN}-{PORT_MAX}) or None")
    if (not isinstance(port_range, (tuple, list)) or len(port_range) != 2 or not all(map(_is_int, port_range))
            or not PORT_MIN <= port_range[0] <= port_range[1] <= PORT_MAX):
        raise ValueError(f"port_range={port_range!r} must be (low, high) port numbers with low <= high")


def check_label(label: Any) -> None:
    """The label names the executor's directory under the run directory."""
    if not isinstance(label, str) or not label or label in (".", "..") or os.sep in label:
        raise ValueError(f"label={label!r} must be a non-empty name without {os.sep!r} (it names a directory)")


def check_path_or_none(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name}={value!r} must be a path (str) or None")


def check_container(container: Any) -> None:
    """A :class:`parsl_flux.container.Container`, or an object with the same ``wrap``."""
    if container is not None and not callable(getattr(container, "wrap", None)):
        raise TypeError(f"container={container!r} must be a parsl_flux.Container (for example "
                        "Container('apptainer', image='parsl-flux.sif')) or an object with "
                        "wrap(command, pass_env) -> str")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
