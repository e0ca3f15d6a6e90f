"""The typed contract in process: one set of models behind validation, the OpenAPI document and problems."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.routing import Route
from tenantflow.runtime import contract
from tenantflow.runtime.engine.metrics import Metrics
from tenantflow.runtime.errors import (
    Conflict,
    InvalidInput,
    InvalidState,
    NotFound,
    QuotaExceeded,
    TenantflowError,
    TooLarge,
    Unauthorized,
    Unavailable,
    WorkflowCodeError,
)
from tenantflow.runtime.http.api import create_app
from tenantflow.runtime.http.inputs import validate
from tenantflow.runtime.http.openapi import openapi_document
from tenantflow.runtime.http.operations import OPERATIONS
from tenantflow.runtime.http.problems import Forbidden, MalformedRequest, RequestTimeout, problem_for, status_of
from tenantflow.runtime.records import ID_PATTERN, MAX_ID, STATUSES


def test_the_document_takes_its_rules_from_the_records() -> None:
    doc = openapi_document()
    schemas = doc["components"]["schemas"]
    ident = schemas["CreateInstance"]["properties"]["id"]["anyOf"][0]
    assert ident["pattern"] == ID_PATTERN.pattern and ident["maxLength"] == MAX_ID
    assert schemas["Instance"]["properties"]["status"]["enum"] == list(STATUSES)
    assert schemas["BatchBody"]["anyOf"][0]["maxItems"] == contract.MAX_BATCH
    assert schemas["CreateCount"]["properties"]["count"]["maximum"] == contract.MAX_BATCH
    controls = {
        path.rsplit("/", 1)[1] for path in doc["paths"] if path.startswith("/v1/workflows/{name}/instances/{id}/")
    }
    assert controls - {"journal", "events", "watch", "export", "fork", "upgrade"} == set(contract.CONTROLS)
    assert schemas["Bundle"]["properties"]["format"]["const"] == contract.BUNDLE_FORMAT
    # Every $ref points at a schema the document has.
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "$ref")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs and all(ref.rsplit("/", 1)[1] in schemas for ref in refs)


def test_the_routes_come_from_the_route_table() -> None:
    app = create_app(SimpleNamespace(metrics=Metrics()))  # type: ignore[arg-type]
    routes = [(route.path, sorted(route.methods or ())) for route in app.routes if isinstance(route, Route)]
    api_routes = [r for r in routes if r[0] in {op.path for op in OPERATIONS}]
    assert [(op.path, sorted({op.method, "HEAD"} if op.method == "GET" else {op.method})) for op in OPERATIONS] == (
        api_routes
    )


@pytest.mark.parametrize(
    ("model", "value", "error", "words"),
    [
        (contract.SendEvent, {"type": 5}, InvalidInput, ["event type"]),
        (contract.SendEvent, {"type": "a b"}, InvalidInput, ["event type"]),
        (contract.SendEvent, {"payload": 1}, InvalidInput, ["needs type"]),
        (contract.SendEvent, {"type": "x", "extra": 1}, InvalidInput, ["unknown", "extra"]),
        (contract.SendEvent, [], InvalidInput, ["object"]),
        (contract.CreateInstance, {"id": "-x"}, InvalidInput, ["instance id"]),
        (contract.CreateInstance, {"id": 7}, InvalidInput, ["instance id"]),
        (contract.CreateBatch, [{}] * (contract.MAX_BATCH + 1), TooLarge, [str(contract.MAX_BATCH)]),
        (contract.CreateBatch, [], InvalidInput, ["non-empty"]),
        (contract.CreateBatch, [{"id": "ok"}, {"id": "a b"}], InvalidInput, ["item 1", "instance id"]),
        (contract.Deploy, {"source": None}, InvalidInput, ["source"]),
        (contract.JournalQuery, {"limit": "1e3"}, InvalidInput, ["limit", "whole number"]),
        (contract.JournalQuery, {"after": "-2"}, InvalidInput, ["after"]),
        (contract.InstanceQuery, {"status": "bogus"}, InvalidInput, ["status"]),
        (contract.InstanceQuery, {"after": "a b"}, InvalidInput, ["after", "cursor"]),
        (contract.InstanceQuery, {"created_after": "2026-11-01"}, InvalidInput, ["created_after", "timezone"]),
        (contract.InstancesQuery, {"workflow": "-bad"}, InvalidInput, ["workflow name"]),
    ],
)
def test_invalid_input_names_the_field(model: Any, value: Any, error: type[Exception], words: list[str]) -> None:
    with pytest.raises(error) as caught:
        validate(model, value, "the body")
    for word in words:
        assert word in str(caught.value)


def test_valid_input_keeps_its_values() -> None:
    deep: Any = None
    for _ in range(1500):
        deep = [deep]
    created = validate(contract.CreateInstance, {"params": deep}, "the body")
    assert created.params is deep and created.model_fields_set == {"params"}
    assert validate(contract.JournalQuery, {"after": "-1", "limit": "7"}, "the query").limit == 7


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (MalformedRequest("x"), 400),
        (Unauthorized("x"), 401),
        (Forbidden("x"), 403),
        (NotFound("x"), 404),
        (RequestTimeout("x"), 408),
        (Conflict("x"), 409),
        (InvalidState("x"), 409),
        (TooLarge("x"), 413),
        (InvalidInput("x"), 422),
        (WorkflowCodeError("x", 3), 422),
        (QuotaExceeded("x", 2.5), 429),
        (Unavailable("x", 0.2), 503),
    ],
)
def test_each_error_has_one_status(error: TenantflowError, status: int) -> None:
    assert status_of(error) == status
    assert not hasattr(type(error), "status")  # the domain errors carry no HTTP
    response = problem_for(error, "/here")
    assert response.status_code == status and response.media_type == "application/problem+json"
    if status in (429, 503):
        assert int(response.headers["retry-after"]) >= 1


def test_the_server_answers_with_the_models_fields_in_their_order() -> None:
    from dataclasses import fields

    from tenantflow.runtime.http.api import instance_json, version_json
    from tenantflow.runtime.records import AttemptRecord, Entry, EventRecord, Instance, Version

    instance = Instance("t", "wf", "i", 1, "h", "queued", None)
    assert list(instance_json(instance)) == list(contract.Instance.model_fields)
    version = version_json(Version("wf", 1, "h", 0.0))
    assert [*version, "created"] == list(contract.Deployed.model_fields)
    # The journal is the records' dataclasses as dicts (service.journal): the models name the same fields.
    assert [f.name for f in fields(Entry)] + ["attempt_log"] == list(contract.Step.model_fields)
    assert [f.name for f in fields(AttemptRecord)] == list(contract.Attempt.model_fields)
    assert [f.name for f in fields(EventRecord)] == list(contract.EventRecord.model_fields)


@settings(max_examples=300, deadline=None, database=None)
@given(st.from_regex(contract.TIME_PATTERN, fullmatch=True))
def test_every_time_the_pattern_takes_is_a_time(text: str) -> None:
    """The schema's pattern is the whole rule: what it matches, the server reads (no 422 for a valid query)."""
    assert math.isfinite(contract.parse_time(text))


@pytest.mark.parametrize(
    "text",
    ["2025-02-29T00:00Z", "1900-02-29T00:00Z", "2026-04-31T00:00Z", "2026-11-01T24:00Z", "2026-11-01", "1e3", " 5"],
)
def test_what_is_not_a_time_is_refused(text: str) -> None:
    assert not contract.TIME_PATTERN.fullmatch(text)
    with pytest.raises(ValueError, match="epoch seconds"):
        contract.parse_time(text)


def test_times_leave_the_client_as_text_the_server_reads() -> None:
    moment = datetime(2026, 11, 1, 9, 30, 0, 123456, tzinfo=UTC)
    for value in (moment, moment.timestamp(), 1.5e-7, 0, -12.25, 1_767_225_600):
        sent = contract.time_text(value)
        expected = value.timestamp() if isinstance(value, datetime) else float(value)
        assert contract.parse_time(sent) == pytest.approx(expected, abs=1e-9), sent
    assert contract.parse_time("2026-11-01T10:30:00.123456+01:00") == moment.timestamp()
