"""The nursery tree and its stages: receivers, leases, job, task and file stages.

Wired in exactly one place, graph.py, which docs/architecture.md draws. The
service may import the core and the adapters, never pipeline.testing.
"""

__all__: list[str] = []
