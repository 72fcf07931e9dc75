"""The site configs shipped with parsl-flux, one module per site.

:mod:`parsl_flux.sites` finds them as package resources (``parsl-flux sites``
lists them); they also import as ``parsl_flux.site_configs.<name>``, e.g.
``from parsl_flux.site_configs.polaris import config``. To change one, copy it
(``parsl-flux sites copy NAME``) rather than editing the installed file.
"""
