"""The allocation side: the manager in each block's Flux instance.

The manager dials the driver, submits each task as a Flux job (or to a pool of
workers), serves runners their payloads and collects their outcomes. It runs in
the block's interpreter, often the image's, so this package imports no Parsl
(``tests/test_import_boundaries.py``): only the wire format, the job side, the
standard library, pyzmq and Flux's bindings.
"""
