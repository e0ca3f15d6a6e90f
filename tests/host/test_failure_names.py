"""One list of failure names: the guest's names (read from its source) and the runtime's are FailureName members."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import tenantflow.host
from tenantflow.host import HOST_ERRORS, LIMIT_ERRORS, FailureName
from tenantflow.host.fetch import FetchError

GUEST = Path(__file__).resolve().parents[2] / "guest"
# Functions and classes the guest builds a failure or run-error with: `_error(name, ...)`,
# `host.Failure(name, ...)`, `wit_world.RunError(name, ...)`.
_BUILDER = re.compile(r"_?(error|failure|run_?error)", re.IGNORECASE)
# Generated bindings, never the guest's own code.
_GENERATED = {"wit_world", "componentize_py_types", "__pycache__"}


def _callee(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _is_name(target: ast.expr) -> bool:
    """`name` or `<anything>.name`: where the guest puts a failure's name."""
    return (isinstance(target, ast.Name) and target.id == "name") or (
        isinstance(target, ast.Attribute) and target.attr == "name"
    )


def _string(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def failure_names(source: str) -> set[str]:
    """Every literal failure name in guest source: passed to a failure builder, set as or compared with a `.name`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        found: list[str | None] = []
        if isinstance(node, ast.Call) and _BUILDER.fullmatch(_callee(node)):
            found.append(_string(node.args[0]) if node.args else None)
            found += [_string(kw.value) for kw in node.keywords if kw.arg == "name"]
        elif (
            isinstance(node, ast.Assign)
            and any(_is_name(target) for target in node.targets)
            or isinstance(node, ast.AnnAssign)
            and _is_name(node.target)
        ):
            found.append(_string(node.value))
        elif isinstance(node, ast.Compare) and _is_name(node.left):
            found += [_string(right) for right in node.comparators]
        names |= {name for name in found if name}
    return names


def guest_sources() -> list[Path]:
    return sorted(p for p in GUEST.rglob("*.py") if not _GENERATED & set(p.relative_to(GUEST).parts))


def test_every_failure_name_the_guest_gives_is_a_member() -> None:
    sources = guest_sources()
    assert sources, f"no guest source under {GUEST}"
    names = set().union(*(failure_names(path.read_text()) for path in sources))
    # The guest reports at least these; finding none means the scan no longer understands the guest.
    assert {FailureName.WORKFLOW_CODE_ERROR, FailureName.OUTPUT_LIMIT_EXCEEDED} <= names, names
    members = {str(member) for member in FailureName}
    assert names <= members, f"guest failure names missing from tenantflow.host.FailureName: {sorted(names - members)}"


def test_the_scan_finds_a_name_that_drifted() -> None:
    source = """
def run():
    raise _error("WorkflowCodeErorr", "typo")
err.value.name = "Cancelled"
if failure.name == "NonRetryable":
    pass
host.Failure(name="OutputLimitExceded", message="m")
raise ValueError("a message, not a name")
"""
    names = failure_names(source)
    assert names == {"WorkflowCodeErorr", "Cancelled", "NonRetryable", "OutputLimitExceded"}
    assert names - {str(member) for member in FailureName} == {
        "WorkflowCodeErorr",
        "NonRetryable",
        "OutputLimitExceded",
    }


def test_the_store_names_host_faults_as_the_enum_does() -> None:
    # The store sits below the engine and keeps its own literal (it needs nothing else from the host).
    from tenantflow.runtime.store import HOST_FAULT

    assert HOST_FAULT == FailureName.HOST_FAULT


def test_fetch_errors_have_member_names() -> None:
    classes = [FetchError, *FetchError.__subclasses__()]
    assert len(classes) >= 4
    for cls in classes:
        assert isinstance(cls.failure, FailureName)
        assert cls.failure == cls.__name__  # the names the guest saw before there was an enum


def test_members_are_their_names() -> None:
    for member in FailureName:
        assert member == member.value and str(member) == member.value and f"{member}" == member.value
    assert len({member.value for member in FailureName}) == len(FailureName)


def test_limit_and_host_errors() -> None:
    assert LIMIT_ERRORS < HOST_ERRORS
    assert all(isinstance(name, FailureName) for name in HOST_ERRORS)
    assert "FuelExhausted" in LIMIT_ERRORS and "WorkflowCodeError" not in LIMIT_ERRORS
    assert {"FailureName", "LIMIT_ERRORS", "HOST_ERRORS"} <= set(tenantflow.host.__all__)
