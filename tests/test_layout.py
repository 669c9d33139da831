"""The package's layers import only downwards, as docs/architecture.md draws them; tests
wait on trio's clock or on events, outside the system tests."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pipeline"

# Libraries that do I/O or run an event loop: the sans-IO core never imports them.
IO_LIBRARIES = frozenset(
    {
        "aiobotocore",
        "anyio",
        "asyncio",
        "boto3",
        "botocore",
        "httpx",
        "hypercorn",
        "quart",
        "quart_trio",
        "socket",
        "structlog",
        "subprocess",
        "trio",
    }
)

# For each layer, the layers of the package it must not import.
FORBIDDEN = {
    "pipeline._core": (
        "pipeline._adapters",
        "pipeline._service",
        "pipeline.ops",
        "pipeline.testing",
    ),
    "pipeline._adapters": ("pipeline._service", "pipeline.ops", "pipeline.testing"),
    "pipeline._service": ("pipeline.ops", "pipeline.testing"),
    "pipeline.ops": ("pipeline._service", "pipeline.testing"),
}


def module_name(path: Path) -> str:
    """The dotted name of a module file of the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> Iterator[tuple[str, bool]]:
    """Each module ``path`` imports, absolute, and whether the import sits at module level."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    )
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, id(node) in top_level
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target, id(node) in top_level


def modules() -> list[Path]:
    """Every module file of the package."""
    return sorted(PACKAGE.rglob("*.py"))


def within(name: str, layer: str) -> bool:
    """Whether the dotted ``name`` is ``layer`` or inside it."""
    return name == layer or name.startswith(layer + ".")


@pytest.mark.parametrize("path", modules(), ids=lambda p: module_name(p))
def test_layers_import_downwards(path: Path) -> None:
    """No module imports a layer above its own (core < adapters < service; testing apart)."""
    name = module_name(path)
    for layer, forbidden in FORBIDDEN.items():
        if within(name, layer):
            for target, _ in imports(path):
                assert not any(within(target, f) for f in forbidden), f"{name} imports {target}"


@pytest.mark.parametrize(
    "path",
    [p for p in modules() if within(module_name(p), "pipeline._core")],
    ids=lambda p: module_name(p),
)
def test_core_does_no_io(path: Path) -> None:
    """The core imports no I/O library and, of the package, only the core and the errors."""
    for target, _ in imports(path):
        assert target.partition(".")[0] not in IO_LIBRARIES, f"{module_name(path)} imports {target}"
        if within(target, "pipeline"):
            assert within(target, "pipeline._core") or target == "pipeline._errors", target


@pytest.mark.parametrize(
    "path",
    [p for p in modules() if not within(module_name(p), "pipeline.testing")],
    ids=lambda p: module_name(p),
)
def test_product_never_imports_local_tooling_at_load(path: Path) -> None:
    """Outside pipeline.testing only the --local branch of __main__ imports it, lazily."""
    for target, top_level in imports(path):
        if within(target, "pipeline.testing"):
            assert module_name(path) == "pipeline.__main__", f"{module_name(path)} imports {target}"
            assert not top_level, "the --local tooling is imported only when asked for"


def _passes_in_a_fresh_interpreter(probe: str) -> None:
    """Run ``probe`` in a new Python, whose modules are its own; it exits 1 and prints
    what it found when the check fails."""
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_worker_code_path_loads_no_local_tooling() -> None:
    """Loading the service's entry point and graph brings in neither pipeline.testing nor moto."""
    probe = (
        "import sys, pipeline.__main__, pipeline._service.graph, pipeline.ops.provision;"
        "bad = sorted(m for m in sys.modules if m.startswith(('pipeline.testing', 'moto')));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    _passes_in_a_fresh_interpreter(probe)


def test_entry_point_loads_only_the_standard_library_before_taking_sigterm() -> None:
    """`python -m pipeline` imports no third-party module before its SIGTERM handler is set."""
    probe = (
        "import sys, pipeline.__main__;"
        "bad = sorted({m.partition('.')[0] for m in sys.modules}"
        " & {'trio', 'structlog', 'attrs', 'cattrs', 'httpx', 'botocore', 'aiobotocore'});"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    _passes_in_a_fresh_interpreter(probe)


# A module that outgrows this holds two things; split it along its seam.
MAX_MODULE_LINES = 450


@pytest.mark.parametrize("path", modules(), ids=lambda p: module_name(p))
def test_modules_stay_small(path: Path) -> None:
    """No module of the package is over MAX_MODULE_LINES lines."""
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module_name(path)} has {lines} lines"


# Names under which an AWS client (or the bag of them) is passed around.
AWS_CLIENT_NAMES = frozenset({"aws", "client", "clients", "dynamodb", "events", "s3", "sqs"})
# Annotations that say nothing of a client's type (``AwsClient`` was an alias of ``Any``).
UNTYPED = frozenset({"Any", "AwsClient", "typing.Any", "object"})
# Where an AWS client may still be typed as Any (module: parameter or
# attribute names): nowhere. Every client is typed by the calls made of it
# (pipeline/_adapters/aws/clienttypes.py); an entry added here must say why.
ANY_CLIENT_EXCEPTIONS: dict[str, set[str]] = {}


def untyped_clients(path: Path) -> set[str]:
    """Names of the parameters and attributes in ``path`` that hold an AWS client typed as Any."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        annotated: list[tuple[str, ast.expr | None]] = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            arguments = node.args
            every = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
            annotated += [(arg.arg, arg.annotation) for arg in every]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            annotated.append((node.target.id, node.annotation))
        for name, annotation in annotated:
            text = "" if annotation is None else ast.unparse(annotation).strip("'\"")
            if name in AWS_CLIENT_NAMES and text in UNTYPED:
                found.add(name)
    return found


def test_no_new_any_typed_aws_clients() -> None:
    """An AWS client is never typed Any outside the listed exceptions, and the list is current."""
    found = {module_name(p): untyped_clients(p) for p in modules()}
    found = {name: names for name, names in found.items() if names}
    new = {name: names - ANY_CLIENT_EXCEPTIONS.get(name, set()) for name, names in found.items()}
    assert not {name: names for name, names in new.items() if names}, "type these clients"
    stale = {name: names - found.get(name, set()) for name, names in ANY_CLIENT_EXCEPTIONS.items()}
    assert not {name: names for name, names in stale.items() if names}, "drop these exceptions"


# The modules that wire the service: they alone are handed the whole of it.
WIRING = frozenset({"pipeline._service.graph", "pipeline._service.routes"})


@pytest.mark.parametrize(
    "path",
    [p for p in modules() if within(module_name(p), "pipeline._service")],
    ids=lambda p: module_name(p),
)
def test_only_the_wiring_reads_resources(path: Path) -> None:
    """Only graph.py and routes.py import the service's resources; a stage is handed its parts."""
    name = module_name(path)
    if name in WIRING or name == "pipeline._service.resources":
        return
    for target, _ in imports(path):
        assert target != "pipeline._service.resources", f"{name} imports {target}"


# --- tests wait on trio's clock or on events -------------------------------------

TESTS = Path(__file__).resolve().parent
# Where a test may wait in real time: the system tests (subprocesses, outages of
# stated lengths), the one poll of state another process holds (moto), and the
# fakes' stalls, which run on whichever clock their test runs.
REAL_TIME_ALLOWED = ("system", "support/waiting.py", "support/faultproxy.py", "support/fakesqs.py")
SLEEPS = frozenset({"trio.sleep", "time.sleep", "anyio.sleep"})
MOCK_CLOCKS = frozenset({"autojump_clock", "mock_clock"})

Function = ast.FunctionDef | ast.AsyncFunctionDef


def modules_off_the_clock() -> list[Path]:
    """Every test module and support module that must not wait in real time."""
    return [
        path
        for path in sorted(TESTS.rglob("*.py"))
        if not str(path.relative_to(TESTS)).startswith(REAL_TIME_ALLOWED)
    ]


def _outer_functions(tree: ast.Module) -> Iterator[tuple[str, Function]]:
    """Module-level functions and the methods of module-level classes, each with the
    name a test would use to reach it (a method's class)."""
    for node in tree.body:
        if isinstance(node, Function):
            yield node.name, node
        elif isinstance(node, ast.ClassDef):
            for member in node.body:
                if isinstance(member, Function):
                    yield node.name if not member.name.startswith("test_") else member.name, member


def _on_a_mock_clock(function: Function) -> bool:
    arguments = [*function.args.args, *function.args.kwonlyargs]
    return any(argument.arg in MOCK_CLOCKS for argument in arguments)


def real_sleeps(tree: ast.Module) -> list[int]:
    """Lines of sleeps that pass in real time: in a test without a mock clock, or in a
    helper that such a test uses (or that no test uses)."""
    outer = list(_outer_functions(tree))
    tests = [function for _, function in outer if function.name.startswith("test_")]

    def used_by(test: Function, name: str) -> bool:
        return any(isinstance(node, ast.Name) and node.id == name for node in ast.walk(test))

    lines = []
    for name, function in outer:
        sleeps = [
            node.lineno
            for node in ast.walk(function)
            if isinstance(node, ast.Call) and ast.unparse(node.func) in SLEEPS
        ]
        if not sleeps:
            continue
        if function.name.startswith("test_"):
            users = [function]
        else:
            users = [test for test in tests if used_by(test, name)]
        if not users or not all(_on_a_mock_clock(test) for test in users):
            lines.extend(sleeps)
    return lines


@pytest.mark.parametrize("path", modules_off_the_clock(), ids=lambda p: str(p.relative_to(TESTS)))
def test_no_real_sleeps_outside_the_system_tests(path: Path) -> None:
    """Outside tests/system a test sleeps only on a mock clock; it awaits an event for
    what its own process does and polls another's state through waiting.eventually."""
    tree = ast.parse(path.read_text(), filename=str(path))
    assert real_sleeps(tree) == []


def test_a_real_sleep_is_found() -> None:
    """The check above finds a sleep in a test without a mock clock and in its helper,
    and passes one on trio's autojump clock."""
    source = """
async def wait(seconds):
    await trio.sleep(seconds)

async def test_real(aws_endpoint):
    await trio.sleep(0.3)
    await wait(1)

async def test_clocked(autojump_clock):
    await trio.sleep(30)

class TestGroup:
    async def test_real_method(self):
        time.sleep(0.1)
"""
    assert real_sleeps(ast.parse(source)) == [3, 6, 14]
