"""Providers that current Parsl lacks for the sites parsl-flux targets.

Parsl removed ``CobaltProvider`` in 2024.11; Theta-like systems still run
Cobalt, so :class:`CobaltProvider` lives here.
"""

from parsl_flux.providers.cobalt import CobaltProvider

__all__ = ["CobaltProvider"]
