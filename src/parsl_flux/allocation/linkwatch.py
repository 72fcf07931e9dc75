"""The manager's view of its TCP connection to the driver (ZMQ socket events).

ZMQ reconnects a DEALER by itself after a reset, silently. The manager must
know, because the driver sees the new connection as a stranger: it has to
hand-shake again and resume its session (:mod:`parsl_flux.wire.resume`), and hold
its messages while there is no connection to send them on.
"""

from __future__ import annotations

import logging
import zmq
from zmq.utils.monitor import recv_monitor_message

logger = logging.getLogger(__name__)

_EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED


class LinkWatch:
    """Connection events of one connecting socket.

    Parameters
    ----------
    sock : zmq.Socket
        The manager's DEALER, before it connects (so the first connection is seen).
    """

    def __init__(self, sock: zmq.Socket) -> None:
        self.monitor = sock.get_monitor_socket(_EVENTS)
        self.up = False
        self.reconnected = False  # a connection came back after one was lost: resume the session
        self._was_up = False

    def drain(self) -> None:
        """Read pending events into :attr:`up` and :attr:`reconnected`."""
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)["event"]
            if event == zmq.EVENT_CONNECTED:
                if self._was_up and not self.up:
                    self.reconnected = True
                self.up = self._was_up = True
            elif event == zmq.EVENT_DISCONNECTED:
                if self.up:
                    logger.warning("connection to the driver lost; ZMQ reconnects")
                self.up = False

    def close(self) -> None:
        self.monitor.close(linger=0)
