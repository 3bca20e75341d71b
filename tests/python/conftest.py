"""Fixtures: a fresh `switchboard --dev` per test, for 1 and for 2 shards.

The binary comes from $SWITCHBOARD_BIN, else ${CARGO_TARGET_DIR:-target}/release/switchboard.
"""

from __future__ import annotations

import sys

import pytest

from harness import Server


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Keeps each phase's report on the item, so teardown knows whether the test failed.
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture(params=[1, 2], ids=["shards1", "shards2"])
def shards(request) -> int:
    return request.param


def _server(request, tmp_path, shards: int, durability: str | None):
    server = Server(tmp_path / "data", shards, durability)
    server.start()
    try:
        yield server
    finally:
        failed = getattr(request.node, "report_call", None)
        if failed is not None and failed.failed:
            sys.stderr.write(f"switchboard log ({server.log_path}), last lines:\n{server.log_tail()}\n")
        if server.running:
            code = server.stop()
            assert code == 0, (
                f"switchboard exited with {code} after SIGTERM; last lines:\n{server.log_tail()}"
            )


@pytest.fixture
def server(request, tmp_path, shards):
    """A running server (default durability, fsync); SIGTERM and exit 0 at teardown."""
    yield from _server(request, tmp_path, shards, None)


@pytest.fixture
def fsync_server(request, tmp_path, shards):
    """Like `server`, with `--durability fsync` given explicitly."""
    yield from _server(request, tmp_path, shards, "fsync")
