"""Schema-based fuzzing of the real server with schemathesis: no 5xx, and answers conform to the schema.

Every operation of the service's own OpenAPI document gets a bounded number of generated requests. All of
schemathesis' checks run except "schema-valid requests are accepted": a schema cannot say that a text must
have tokens or that ids must be in the vocabulary, so such requests rightly get a 400.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from tests.conftest import ROOT
from tests.e2e.conftest import start_server

pytestmark = pytest.mark.e2e
EXAMPLES_PER_OPERATION = 40


def test_every_operation_conforms_and_never_fails(tmp_path: Path) -> None:
    server = start_server(ROOT / "models", tmp_path / "server.log")
    try:
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 15
        calls: list[int] = []
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck),
                derandomize=True, database=None,
            )  # fmt: skip
            def check(case: schemathesis.Case) -> None:
                if "name" in (case.path_parameters or {}):
                    case.path_parameters["name"] = "sentiment"  # past the model lookup into real decoding
                response = case.call_and_validate(timeout=30, excluded_checks=[positive_data_acceptance])
                calls.append(response.status_code)

            check()
        assert server.process.poll() is None
        assert len(calls) >= 10 * len(operations)
        assert 200 in calls
        assert 400 in calls
    finally:
        server.stop()
