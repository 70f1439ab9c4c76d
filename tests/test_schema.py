"""API fuzzing from the OpenAPI schema (issue 11): schemathesis generates requests for every operation of a
live `digitrec serve` (bodies of every declared content type: random bytes as images, random JSON and forms),
and checks that no answer is a 5xx and that every answer matches the schema (status code declared, body shape,
content type).  Bounded: a few dozen examples per operation, about a minute on 2 cores."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from test_serve import start_server

pytestmark = pytest.mark.slow
EXAMPLES = 250  # per operation (operations with few inputs stop earlier)


@pytest.fixture(scope="module")
def api_schema():
    proc, url = start_server("--log-level", "warning", "--max-bytes", "200000")
    try:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_api_answers_every_generated_request_within_its_schema(api_schema):
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/predict", "/v1/predict/batch", "/v1/read", "/healthz"}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case):
            case.validate_response(case.call(timeout=30), checks=checks)

        fuzz()
