"""schemathesis against the API's own /openapi.json, as an authenticated admin: no
server errors, and every answer (status, content type, body) matches the schema; with
data the schema forbids (and values no field takes), every answer refuses it and every
request is audited once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.hooks import HookDispatcher, HookScope
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from control_api.request_audit import NOT_AUDITED
from tests.support.control_api import (
    ApiProcess,
    User,
    audit_rows,
    create_user,
    last_audit_id,
    log_in,
)

pytestmark = pytest.mark.integration

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Cases per operation, bounded for CI: each is an HTTP call (and, negative, two reads of
# the audit log), so the two tests take about half a minute each with these on a 2-core
# machine; every operation still gets both kinds, hostile text included.
POSITIVE_EXAMPLES = 15
NEGATIVE_EXAMPLES = 20
# Text JSON can carry but no field takes: schemathesis never generates a lone surrogate,
# so a JSON body gets one (or a NUL) in a leaf where the hook below puts it. (What it
# cannot send, non-finite numbers, malformed JSON, a surrogate in a login form, is in
# tests/control_api/test_hostile_input.py.)
HOSTILE_TEXT = ("\ud800", "x\udfffy", "nul\x00")


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _leaves(item, (*path, key))]
    if isinstance(value, list):
        return [p for index, item in enumerate(value) for p in _leaves(item, (*path, index))]
    return [path]


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, *rest = path
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[head] = _replaced(value[head], tuple(rest), new)
    return copy


def _with_hostile_text(context: Any, body: Any) -> st.SearchStrategy[Any]:
    """The body as generated, or with one leaf replaced by hostile text; only where every
    body is sent as JSON (a form cannot even encode a lone surrogate)."""
    leaves = _leaves(body)
    if not leaves or {b.media_type for b in context.operation.body} != {"application/json"}:
        return st.just(body)
    changes = st.tuples(st.sampled_from(leaves), st.sampled_from(HOSTILE_TEXT))
    return st.one_of(st.just(body), changes.map(lambda change: _replaced(body, *change)))


HOSTILE_BODIES = HookDispatcher(scope=HookScope.TEST)
HOSTILE_BODIES.register_hook_with_name(_with_hostile_text, "flatmap_body")


@pytest.fixture
def running(database, broker, tmp_path) -> Iterator[tuple[ApiProcess, User]]:
    api = ApiProcess(database, broker, tmp_path / "api.log").start()
    try:
        with api.client() as client:
            yield api, log_in(client, create_user(database, "admin", None))
    finally:
        api.stop()


def _hypothesis_test(
    operation: Any,
    mode: GenerationMode,
    max_examples: int,
    check: Callable[[Any, Any], None],
    hooks: HookDispatcher | None,
) -> Callable[[], None]:
    # Negative runs do not shrink: what they find is reported as found, and their time
    # stays bounded by max_examples.
    phases = list(Phase) if mode is GenerationMode.POSITIVE else [Phase.explicit, Phase.generate]

    @given(case=operation.as_strategy(generation_mode=mode, hooks=hooks))
    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=phases,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        check(operation, case)

    return run


def for_each_operation(
    api: ApiProcess,
    mode: GenerationMode,
    max_examples: int,
    check: Callable[[Any, Any], None],
    hooks: HookDispatcher | None = None,
) -> list[str]:
    """Runs `check(operation, case)` on generated cases of every operation; the failures
    of all of them, one line each."""
    schema = schemathesis.openapi.from_url(api.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == 47  # every route, so a new one is not left untested
    failures = []
    for operation in operations:
        try:
            _hypothesis_test(operation, mode, max_examples, check, hooks)()
        except Unsatisfiable:
            continue  # it takes no input at all, so none can be invalid
        # Collect every operation's failures (one, or a group of several), then report all.
        except (Exception, FailureGroup) as exc:
            failures.append(f"{operation.label}: {exc}")
    return failures


def test_api_conforms_to_its_schema(running):
    api, admin = running

    def check(_operation: Any, case: Any) -> None:
        case.call_and_validate(base_url=api.url, headers=admin.headers, checks=CHECKS)

    assert for_each_operation(api, GenerationMode.POSITIVE, POSITIVE_EXAMPLES, check) == []


def test_invalid_input_is_refused_with_a_4xx_and_audited_once(running, database):
    api, admin = running

    def check(operation: Any, case: Any) -> None:
        before = last_audit_id(database)
        response = case.call_and_validate(
            base_url=api.url,
            headers=admin.headers,
            checks=[*CHECKS, negative_data_rejection],
        )
        statuses = [row["status_code"] for row in audit_rows(database, before)]
        # A read the API accepted anyway (schemathesis's "invalid" case may be valid,
        # e.g. an empty extra query parameter) is a routine read: not audited by
        # default (control_api/request_audit.py needs_audit_row).
        routine_read = operation.method.upper() in ("GET", "HEAD") and response.status_code < 400
        quiet = operation.path in NOT_AUDITED or routine_read
        expected = [] if quiet else [response.status_code]
        assert statuses == expected, case.as_curl_command()

    failures = for_each_operation(
        api, GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES, check, HOSTILE_BODIES
    )
    assert failures == [], "\n\n".join(failures)
