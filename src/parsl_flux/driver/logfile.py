"""The executor's own log file, kept apart from what the user's console shows.

The executor writes everything down to DEBUG to ``<run_dir>/<label>/executor.log``,
so its logger must let DEBUG records through. A logger's level is also what
decides which records reach the handlers of its ancestors, the root's console
handler among them: a DEBUG logger that propagates prints its INFO lines on a
console the user configured with ``logging.basicConfig(level=WARNING)``.

:class:`ExecutorLog` therefore stops propagation and hands a record on to the
ancestors only when the parent logger would have let it through itself
(``parent.isEnabledFor``): the console shows exactly what it would show had
the executor never raised its logger's level, and warnings and errors still
reach it, and pytest's ``caplog``, as before.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(threadName)s %(message)s"


class _AsParentWould(logging.Handler):
    """Pass a record of ``child`` on to its parent's handlers (and their
    ancestors') when the parent is enabled for the record's level.

    The parent is looked up per record: ``logging`` re-parents a logger when
    an intermediate one (``parsl_flux.driver.executor``) is created later.
    """

    def __init__(self, child: logging.Logger) -> None:
        super().__init__()
        self.child = child

    def emit(self, record: logging.LogRecord) -> None:
        parent = self.child.parent
        if parent is not None and parent.isEnabledFor(record.levelno):
            parent.handle(record)


class ExecutorLog:
    """DEBUG lines of ``logger`` to the file ``path``; its ancestors see what they would without it.

    Parameters
    ----------
    logger : logging.Logger
        The executor's own logger (one per executor label). Its level,
        propagation and handlers are changed until :meth:`close`, which puts
        them back; no other logger is touched.
    path : str
        The log file (appended to).
    """

    def __init__(self, logger: logging.Logger, path: str) -> None:
        self.logger = logger
        self._saved = (logger.level, logger.propagate)
        self._file = logging.FileHandler(path)
        self._file.setFormatter(logging.Formatter(FORMAT))
        self._onward = _AsParentWould(logger)
        logger.addHandler(self._file)
        logger.addHandler(self._onward)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False

    def close(self) -> None:
        """Detach from the logger, restoring its level and propagation, and close the file."""
        self.logger.removeHandler(self._file)
        self.logger.removeHandler(self._onward)
        self.logger.setLevel(self._saved[0])
        self.logger.propagate = self._saved[1]
        self._file.close()
