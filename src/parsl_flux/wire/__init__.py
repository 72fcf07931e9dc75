"""The wire format and what both ends of a connection share.

Messages and their one constructor each (``protocol``), payloads
(``payload``), job shapes (``shape``), the block's launch line (``launch``),
session resume (``resume``), who may connect (``zap``), and the small loop
tools both I/O loops use (``wakeup``, ``rejects``). Imported by all three
programs, so it imports only the standard library (pyzmq only where a ZMQ
socket is its subject).
"""
