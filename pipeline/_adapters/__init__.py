"""Thin I/O around the core: AWS, the Export API, HTTP, and the one retry loop.

Adapters translate library errors into pipeline._errors at the boundary and
hold no policy of their own beyond the calls they make. They may import the
core, never the service graph (pipeline._service) or local tooling.
"""

__all__: list[str] = []
