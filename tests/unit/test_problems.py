"""Validation errors in the user's words: what the operator's status, its Events and the CLI say about a
spec it refuses. Fed with the repository's own invalid examples, whose comments name the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from canaria.core.api import ModelDeployment
from canaria.core.problems import describe_errors

from .world import base_spec

INVALID = sorted((Path(__file__).resolve().parents[2] / "manifests" / "examples" / "invalid").glob("*.yaml"))
LIBRARY_WORDS = ("Value error", "Extra inputs are not permitted", "Field required", "Input should be")


def refusal(body: dict) -> str:
    with pytest.raises(ValidationError) as caught:
        ModelDeployment.model_validate(body)
    return describe_errors(caught.value)


@pytest.mark.parametrize("example", INVALID, ids=lambda p: p.stem)
def test_each_invalid_example_is_refused_naming_its_field_as_the_api_server_would(example: Path) -> None:
    text = example.read_text()
    field = re.search(r"^# Rejected at (\S+?)\.?(\s|$)", text, re.MULTILINE)
    assert field, f"{example.name} does not say where it is rejected"
    said = refusal(yaml.safe_load(text))
    assert said.startswith(field.group(1) + ": "), said
    assert not any(words in said for words in LIBRARY_WORDS), said


def test_an_unknown_field_and_a_missing_one_in_plain_words() -> None:
    spec = base_spec(rollout={"stpes": []})
    del spec["model"]["uri"]
    said = refusal({"metadata": {"name": "fraud"}, "spec": spec})
    assert said == "spec.model.uri: required; spec.rollout.stpes: unknown field"
