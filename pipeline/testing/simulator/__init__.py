"""The Export API simulator: contract section 2 on loopback, with faults on demand.

bodies.py: what a download serves; state.py: exports, faults and the
requests seen, driven in-process by tests; app.py: the HTTP side on two
listeners (the API host and a presigned-URL download host); cli.py:
``python -m pipeline.testing.simulator [--demo]``.
"""

from pipeline.testing.simulator.app import serve_simulator
from pipeline.testing.simulator.bodies import BodyProvider, BytesBody, GeneratedBody, patterned_body
from pipeline.testing.simulator.cli import main, seed_demo
from pipeline.testing.simulator.state import RequestRecord, Simulator, SimulatorUrls

__all__ = [
    "BodyProvider",
    "BytesBody",
    "GeneratedBody",
    "RequestRecord",
    "Simulator",
    "SimulatorUrls",
    "main",
    "patterned_body",
    "seed_demo",
    "serve_simulator",
]
