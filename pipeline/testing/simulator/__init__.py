"""The Export API simulator: contract section 2 on loopback, with faults on demand."""

from pipeline.testing.simulator.app import (
    BytesBody,
    GeneratedBody,
    RequestRecord,
    Simulator,
    SimulatorUrls,
    patterned_body,
    seed_demo,
    serve_simulator,
)

__all__ = [
    "BytesBody",
    "GeneratedBody",
    "RequestRecord",
    "Simulator",
    "SimulatorUrls",
    "patterned_body",
    "seed_demo",
    "serve_simulator",
]
