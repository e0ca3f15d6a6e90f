"""Property-based: schemathesis generates requests from the OpenAPI document against a live server.

Every response must be no server error and must conform to the document (status codes,
media types, response bodies, 401 without a key); invalid requests must get a 4xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from helpers_server import EXAMPLES, ServerProcess, servers
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance
from tenantflow.runtime.http.openapi import openapi_document

MAX_EXAMPLES = 40

# Schema-valid requests that the server rightly refuses for reasons a schema cannot say:
# a deployed source must compile and define run(event, step) (422 with the line), and the
# instance ids within one batch must differ.
SEMANTIC_422 = {
    ("PUT", "/v1/workflows/{name}"),
    ("POST", "/v1/workflows/{name}/instances/batch"),
    # A restart from a step names a call the journal must have.
    ("POST", "/v1/workflows/{name}/instances/{id}/restart"),
    # So does a fork's `from`: a schema-valid step name the instance's journal does not have is 422.
    ("POST", "/v1/workflows/{name}/instances/{id}/fork"),
    # A retention's durations match the duration pattern; that each is 1 minute to 10 years the pattern cannot
    # say ("1 second" matches it).
    ("PUT", "/v1/workflows/{name}/retention"),
    # A usage range's days each match the day pattern; that `to` is not before `from` and that they span at most
    # 366 days a pattern cannot say.
    ("GET", "/v1/usage"),
    ("GET", "/v1/admin/usage"),
}

# Invalid input may also be refused as too large (413: a batch of more than 100), not only 4xx-invalid.
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429],
            }
        }
    }
)
SCHEMA = schemathesis.openapi.from_dict(openapi_document(), config=CONFIG)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


def _has_inputs(operation: Any) -> bool:
    return bool(operation.path_parameters or operation.query or operation.body)


# Each operation with generated path parameters (mostly unknown names: 404 or 422), and again
# aimed at the workflow, instance and tenant that exist, so bodies and queries reach the real handlers.
# The instance has finished, so that a generated long poll (`?wait=`) answers at once.
EXISTING = {"name": "approval", "id": "demo", "tenant": "target"}
CASES = [
    (op, mode, target)
    for op in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    for target in ("generated", "existing")
    if (mode == GenerationMode.POSITIVE or _has_inputs(op))
    and (target == "generated" or op.path_parameters)
    and not (target == "existing" and mode == GenerationMode.NEGATIVE and not (op.query or op.body))
]


def _only_headers_are_invalid(case: Any) -> bool:
    """A negative case whose one invalid part is its headers (e.g. no Authorization): the key we add
    would make it valid, so it is sent as generated."""
    components = case.meta.components if case.meta is not None else {}
    negative = {location.value for location, info in components.items() if info.mode == GenerationMode.NEGATIVE}
    return negative == {"header"}


def _unsent_query_parameter(case: Any) -> bool:
    """A parameter whose value is an empty list is not sent at all: the request that arrives is valid."""
    return any(value == [] for value in (case.query or {}).values())


def _typed_value_for_a_string(operation: Any, case: Any) -> bool:
    strings = {p.name for p in operation.query if p.definition.get("schema", {}).get("type") == "string"}
    return any(name in strings and not isinstance(value, str) for name, value in (case.query or {}).items())


# The instance lists, whose `after` and `before` are cursors the server gave, and the bulk actions (their
# body's `after`).
LISTS = {
    ("GET", "/v1/instances"),
    ("GET", "/v1/workflows/{name}/instances"),
    ("POST", "/v1/instances/bulk"),
    ("POST", "/v1/workflows/{name}/instances/bulk"),
}


def _with_cursor(case: Any, cursor: str) -> Any:
    for part in (case.query, case.body):
        if isinstance(part, dict):
            for name in ("after", "before"):
                if isinstance(part.get(name), str):
                    part[name] = cursor
    return case


@dataclass(frozen=True)
class Live:
    server: ServerProcess
    key: str
    """A tenant's key, for the tenant operations."""
    operator_key: str
    """For the admin API (whose `existing` tenant is another one: a generated delete or rotation must not
    lock the tenant operations out)."""
    cursor: str
    """A list's cursor, as the server gave it: a generated one matches the schema's pattern but names no place
    in a list (422), as an opaque cursor the server did not give must; valid requests carry this one instead."""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with servers(tmp_path_factory.mktemp("fuzz")) as group:
        server = group.start("fuzz")
        key = str(server.create_tenant("fuzz")["api_key"])
        operator_key = str(server.create_tenant("ops", "--operator")["api_key"])
        server.create_tenant(EXISTING["tenant"])
        with server.client(key) as client:
            # The document's path examples name these, so generated calls also reach real resources.
            client.deploy("approval", (EXAMPLES / "approval.py").read_text())
            for name in ("demo-2", "demo"):
                demo = client.start("approval", name, {"amount": 1})
                demo.send_event("approved", {"by": "fuzz"})
                assert demo.wait(timeout=30).status == "complete"
            cursor = client.instances("approval", limit=1).next_after
            assert cursor is not None
        yield Live(server, key, operator_key, cursor)
        assert " 500 " not in server.log()


def test_the_served_document_is_the_one_tested(live: Live) -> None:
    server = live.server
    assert httpx.get(server.url + "/openapi.json").json() == openapi_document()


@pytest.mark.parametrize(
    ("operation", "mode", "target"),
    CASES,
    ids=[f"{op.method.upper()} {op.path} {mode.value} {target}" for op, mode, target in CASES],
)
def test_generated_requests(live: Live, operation: Any, mode: GenerationMode, target: str) -> None:
    server = live.server
    key = live.operator_key if operation.path.startswith("/v1/admin") else live.key
    headers = {"Authorization": f"Bearer {key}"}
    fixed = None
    if target == "existing":
        fixed = {p.name: EXISTING[p.name] for p in operation.path_parameters}

    strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed)
    if mode == GenerationMode.POSITIVE and (operation.method.upper(), operation.path) in LISTS:
        strategy = strategy.map(lambda case: _with_cursor(case, live.cursor))
    if mode == GenerationMode.NEGATIVE:
        # A query string has no types: a "wrong-typed" 0 or true for a string parameter arrives
        # as the valid string "0" or "true"; an empty list is not sent. Such cases are not invalid
        # requests; drop them.
        strategy = strategy.filter(
            lambda case: not _typed_value_for_a_string(operation, case) and not _unsent_query_parameter(case)
        )

    @given(case=strategy)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        sent = {} if mode == GenerationMode.NEGATIVE and _only_headers_are_invalid(case) else headers
        case.call_and_validate(base_url=server.url, headers=sent, excluded_checks=excluded)

    excluded = [positive_data_acceptance] if (operation.method.upper(), operation.path) in SEMANTIC_422 else []

    check()
