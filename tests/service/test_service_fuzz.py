"""Fuzzing the OpenAPI schema with schemathesis against a live server: no 5xx, documented status codes, answers
that match the schema. Bounded (``FUZZ_EXAMPLES`` per operation and mode, default 5) so the default suite stays fast;
``FUZZ_EXAMPLES=1000 pytest tests/service/test_service_fuzz.py`` is the long run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the dev extra")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from results.store import Store  # noqa: E402
from scorers.mini import MiniGenEval, MiniQuality  # noqa: E402
from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402
from tests.support.live_server import LiveServer  # noqa: E402
from tests.support.service_data import add_mini_run  # noqa: E402

TOKEN = "fuzz-token-0123456789abcdef"
# no parameters, or only a free-text path segment: hypothesis searches in vain for an invalid request
NOTHING_TO_NEGATE = {
    "GET /health",
    "GET /v1/scorers",
    "GET /v1/benchmarks",
    "GET /v1/runs/{run_id}",
    "DELETE /v1/runs/{run_id}",
}
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "5"))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    tmp = tmp_path_factory.mktemp("fuzz")
    store = Store(tmp / "results.duckdb")
    add_mini_run(store, "good", skill=1.0, prompts=3)
    add_mini_run(store, "bad", skill=0.3, prompts=3)
    token = Path(tmp / "token")
    token.write_text(TOKEN)
    token.chmod(0o600)
    app = create_app(
        Settings(store=tmp / "results.duckdb", token_file=token, max_request_bytes=1 << 20),
        {"mini_geneval": MiniGenEval(), "mini_quality": MiniQuality()},
    )
    with LiveServer(app) as url:
        yield schemathesis.openapi.from_url(f"{url}/openapi.json")


def test_api_never_fails_on_any_input(api: object) -> None:
    """Every operation, EXAMPLES valid and EXAMPLES invalid generated requests each, checked as they come back."""
    failures: list[str] = []
    operations = [r.ok() for r in api.get_all_operations()]  # type: ignore[attr-defined]
    assert len(operations) >= 11, [op.label for op in operations]
    for op, mode in [(op, m) for op in operations for m in GenerationMode]:
        if mode is GenerationMode.NEGATIVE and op.label in NOTHING_TO_NEGATE:
            continue

        @given(case=op.as_strategy(mode))
        @settings(
            max_examples=EXAMPLES,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(
                headers={"Authorization": f"Bearer {TOKEN}"},
                checks=[
                    not_a_server_error,
                    status_code_conformance,
                    content_type_conformance,
                    response_schema_conformance,
                ],
                timeout=30,
            )

        try:
            fuzz()
        except Unsatisfiable:  # nothing to make invalid (no parameters, or only a path segment)
            assert mode is GenerationMode.NEGATIVE, op.label
        except Exception as e:  # noqa: BLE001 - collected, reported together below
            failures.append(f"{op.label} ({mode.value}): {type(e).__name__}: {str(e)[:2000]}")
    assert not failures, "\n\n".join(failures)
