"""What moto's server spends per request, cut without changing what it answers.

The project's moto launcher (:mod:`pipeline.testing.moto`) applies these.
Real AWS does not run on the service's cores; moto does, in the tests, the
demo and the benchmarks, so what it spends per request is taken from what
they measure (issue 22):

* connections are kept alive (:func:`lean_serving`): moto's werkzeug server
  closes each after one answer, so every call paid a connect, a thread
  started for it and the accept loop's wait for that thread; the service a
  request is for is found once per host rather than by listing moto's
  package directory and matching a few hundred URL patterns under a lock on
  every request; no access-log line is formatted per request;
* an ``UpdateExpression`` is parsed once per text and its clauses counted in
  one walk (:func:`parse_update_expressions_once`).
"""

from __future__ import annotations

import io
import selectors
import socket
import threading
from typing import Any

__all__ = ["lean_serving", "parse_update_expressions_once"]


def lean_serving() -> None:
    """moto's server keeps connections alive, finds a host's service once, logs no access lines.

    A request's body (by its ``Content-Length``) is read whole before moto
    sees it, so the next request on the connection starts where it should
    whatever moto read of it; a request with a chunked body still closes its
    connection after the answer, as werkzeug's server does for all. Errors are
    still logged.
    """
    from moto import server
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler
    from werkzeug import serving

    # After each answer werkzeug reads whatever else the client sent, for
    # 10 ms, to discard it before closing: on a kept connection that would
    # swallow the next request. A body read whole leaves nothing to discard.
    body_was_read = threading.local()

    class NothingToDiscard:
        def register(self, *_: object) -> None:
            pass

        def select(self, timeout: float | None = None) -> list[object]:
            return []

        def close(self) -> None:
            pass

    class Selectors:
        EVENT_READ = selectors.EVENT_READ

        @staticmethod
        def DefaultSelector() -> Any:  # the name werkzeug calls
            if getattr(body_was_read, "value", False):
                return NothingToDiscard()
            return selectors.DefaultSelector()

    class KeepAliveRequestHandler(MotoRequestHandler):
        body_read = False

        def setup(self) -> None:
            super().setup()
            # The status line and headers, then the body, go out in separate
            # writes: on a kept connection Nagle's algorithm would hold the
            # body until the client's delayed ACK of the headers (40 ms).
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def make_environ(self) -> Any:
            environ = super().make_environ()
            length = self.headers.get("Content-Length")
            self.body_read = body_was_read.value = "Transfer-Encoding" not in self.headers
            if self.body_read and length is not None:
                environ["wsgi.input"] = io.BytesIO(self.rfile.read(int(length)))
            return environ

        def send_header(self, keyword: str, value: str) -> None:
            # werkzeug sends "Connection: close" with every answer
            if keyword.lower() == "connection" and value.lower() == "close" and self.body_read:
                return
            super().send_header(keyword, value)

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass

    backend_for_host = DomainDispatcherApplication.get_backend_for_host
    found: dict[str | None, Any] = {}

    def get_backend_for_host(self: DomainDispatcherApplication, host: str | None) -> Any:
        # The answer depends on the host alone: moto's modules and URL patterns are fixed.
        if host not in found:
            found[host] = backend_for_host(self, host)
        return found[host]

    DomainDispatcherApplication.get_backend_for_host = get_backend_for_host  # type: ignore[method-assign]
    serving.selectors = Selectors  # type: ignore[attr-defined,assignment]
    server.MotoRequestHandler = KeepAliveRequestHandler  # type: ignore[attr-defined]


def parse_update_expressions_once() -> None:
    """moto parses an ``UpdateExpression`` once per text, and counts its clauses in one walk.

    moto parsed each update expression twice per ``UpdateItem`` and checked
    its clause counts by walking the whole subtree below every node (a
    square of the expression's length): 16 ms of moto's CPU per job-begin
    write. The parsed tree is only read (moto's validators work on a deep
    copy), so one per expression text is kept; the counts are the same, each
    subtree walked once, so the same expressions are refused in the same order.
    """
    import functools
    import importlib

    from moto.dynamodb.exceptions import TooManyClauses

    # moto's parsing modules, untyped: as mypy cannot see into them
    ast_nodes: Any = importlib.import_module("moto.dynamodb.parsing.ast_nodes")
    expressions: Any = importlib.import_module("moto.dynamodb.parsing.expressions")
    validators: Any = importlib.import_module("moto.dynamodb.parsing.validators")
    parse = expressions.UpdateExpressionParser.make.__func__
    parsed = functools.lru_cache(maxsize=512)(
        lambda text: parse(expressions.UpdateExpressionParser, text)
    )
    expressions.UpdateExpressionParser.make = classmethod(lambda cls, text: parsed(text))
    clauses = (
        ("ADD", ast_nodes.UpdateExpressionAddClause),
        ("REMOVE", ast_nodes.UpdateExpressionRemoveClause),
        ("SET", ast_nodes.UpdateExpressionSetClause),
    )
    walked = (ast_nodes.Expression, ast_nodes.UpdateExpressionFunction)

    def count(node: Any, clause: type, seen: dict[tuple[int, type], int]) -> int:
        # len(node.find_clauses([clause])), each node's answer kept for its parents
        if (id(node), clause) not in seen:
            seen[id(node), clause] = sum(
                1 if type(child) is clause else count(child, clause, seen)
                for child in node.children or []
                if type(child) is clause or isinstance(child, walked)
            )
        return seen[id(node), clause]

    def verify_action_counts(self: Any, node: Any) -> Any:
        seen = self.__dict__.setdefault("_clauses_seen", {})
        for name, clause in clauses:
            if count(node, clause, seen) > 1:
                raise TooManyClauses(name)
        return node

    validators.ActionCountValidator.verify_action_counts = verify_action_counts
    # Each traverser built its map of node types to steps again for every node visited.
    traverser = ast_nodes.DepthFirstTraverser

    def kept_processing_map(self: Any) -> Any:
        if "_kept_map" not in self.__dict__:
            self._kept_map = self._processing_map()
            self._kept_types = tuple(self._kept_map)
        return self._kept_map

    traverser.nodes_to_be_processed = lambda self: (kept_processing_map(self), self._kept_types)[1]
    traverser.process = lambda self, node: next(
        (step(node) for kind, step in kept_processing_map(self).items() if isinstance(node, kind)),
        None,
    )
