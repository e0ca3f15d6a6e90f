"""Step, sleep and wait names as the SDK checks them at the call, natively."""

from __future__ import annotations

import pytest
from tenantflow._step import _check_name


@pytest.mark.parametrize("name", ["a\x00", "tab\there", "a\x1f", "\x7f", "x\x85y", "\x9f"])
def test_a_name_with_a_control_character_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="no control characters"):
        _check_name(name)


@pytest.mark.parametrize("name", ["a b", "~", "\xa0", "é", "日本", "x" * 256])
def test_other_names_pass(name: str) -> None:
    assert _check_name(name) == name


def test_a_name_is_a_short_non_empty_string() -> None:
    with pytest.raises(TypeError):
        _check_name("")
    with pytest.raises(TypeError):
        _check_name(b"bytes")
    with pytest.raises(ValueError, match="at most 256"):
        _check_name("x" * 257)
