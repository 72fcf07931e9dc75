"""The benchmark's app, alone in a module that imports nothing.

cloudpickle sends a module-level function by reference, so every Flux job of
the per-job mode imports the function's module. Kept here rather than in
``parsl_flux.bench`` (argparse, json, subprocess, ...), a job pays for the
executor and not for the harness, as it would for an app defined in a
workflow script, which travels by value (see ``parsl_flux.payload``).
"""


def sleep_app(seconds: float) -> None:
    """Return at once (``seconds`` = 0) or after sleeping ``seconds``."""
    if seconds:
        import time

        time.sleep(seconds)
