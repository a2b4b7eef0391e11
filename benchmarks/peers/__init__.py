"""The task code each system's worker imports: ``noop(i)`` and ``stamp(i, sent)``.

These modules are imported by worker processes as ``benchmarks.peers.<name>``
(the repository root on ``PYTHONPATH``), so none of them may be named like the
package it wraps.
"""
