"""A schemathesis run against /openapi.json: every operation, with generated valid and invalid
parameters and bodies, through the real application on a real metadata store. No 5xx."""

from __future__ import annotations

import os

import schemathesis
from hypothesis import HealthCheck, given, settings

from monitor.app import create_app
from permafrost.config.settings import Settings
from tests.faults.conftest import Ledger

TOKEN = "fuzz-token-0123456789abcdef"


def test_schemathesis_finds_no_server_error(env: dict[str, str], ledger: Ledger) -> None:
    app = create_app(Settings.from_env({**env, "MONITOR_API_TOKEN": TOKEN}), evaluate=False)
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    schema.config.generation.update(max_examples=15)
    cases = 0
    failures: list[str] = []
    for operation in schema.get_all_operations():
        op = operation.ok()
        if op.path == "/metrics":
            continue  # text, not JSON; served by prometheus_client
        strategy = op.as_strategy()

        @settings(
            max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")),
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: schemathesis.Case) -> None:
            nonlocal cases
            cases += 1
            response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} {case.query}: {response.status_code}"
                )

        run()
    assert failures == []
    assert cases > 100
    print(f"{cases} generated requests, none answered with a 5xx")
    ledger.record("hostile input: schemathesis cases", injected=cases, survived=cases)
