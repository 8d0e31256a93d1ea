"""`controlplane cleanup ...` against a served control plane whose cleanup talks to gcp-storage-emulator.

The served app builds its own bucket access (``gcs_storage_for``), which honours ``STORAGE_EMULATOR_HOST``, and
runs on the real clock: object metadata is set relative to the wall clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from controlplane.cli import main
from tests.cleanup_fixtures import BUCKET, POLICY, PREFIX, emulator, expires, names, upload
from tests.conftest import REPO_ROOT, serve_with_admin
from tests.gcs_emulator import fresh_bucket, storage_client


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; return its exit code, stdout and stderr."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    """Run a CLI command with `--json` that must succeed; its parsed output."""
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def emulator_host() -> Iterator[str]:
    """gcp-storage-emulator on a free loopback port, in memory, for this module."""
    yield from emulator()


@pytest.fixture
def gcs(database_url: str, emulator_host: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A served control plane with the reference-images definition applied, the CLI pointed at it with an admin
    token; yields a storage client on the emulator, whose `reference-images` bucket is empty."""
    # No capsys here: the app's log handler keeps the stderr of the moment it was built, and capsys closes its own.
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator_host)
    client = storage_client("test-project")
    fresh_bucket(client, BUCKET)
    try:
        with serve_with_admin(database_url, gcs_project="test-project") as (url, headers):
            monkeypatch.setenv("CONTROLPLANE_URL", url)
            monkeypatch.setenv("CONTROLPLANE_TOKEN", headers["Authorization"].removeprefix("Bearer "))
            definition = (REPO_ROOT / "definitions" / "reference-images.yaml").read_text()
            applied = httpx.post(
                f"{url}/api/v1/definitions/apply",
                headers=headers,
                json={"content": definition, "source": "reference-images.yaml"},
            )
            assert applied.status_code == 200, applied.text
            yield client
    finally:
        client.close()


def test_run_prints_a_summary_a_dry_run_says_would_delete_and_runs_and_show_list_them(
    gcs: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    for index in range(3):
        upload(gcs, f"{PREFIX}expired-{index}.png", expires(now - timedelta(hours=2)))
    upload(gcs, f"{PREFIX}valid.png", expires(now + timedelta(hours=20)))

    code, out, err = run(capsys, "cleanup", "run", POLICY, "--dry-run")
    assert code == 0, err
    assert "dry run" in out and "succeeded" in out
    assert "would delete" in out and "3 (30 B); nothing was deleted" in out
    assert len(names(gcs)) == 4

    code, out, err = run(capsys, "cleanup", "run", POLICY, "--reason", "weekly tidy")
    assert code == 0, err
    assert f"({POLICY}): succeeded" in out
    assert "deleted" in out and "3 (30 B freed)" in out and "would delete" not in out
    assert "signed_url_expired" in out
    assert names(gcs) == {f"{PREFIX}valid.png"}

    listed = run_json(capsys, "cleanup", "runs")
    newest_first = [(False, "succeeded", 3), (True, "succeeded", 0)]
    assert [(r["dry_run"], r["status"], r["deleted"]) for r in listed] == newest_first
    real, dry = listed
    assert real["reason"] == "weekly tidy"
    assert [r["id"] for r in run_json(capsys, "cleanup", "runs", "--policy", POLICY, "--limit", "1")] == [real["id"]]
    assert run_json(capsys, "cleanup", "runs", "--policy", "no-such-policy") == []
    code, out, _ = run(capsys, "cleanup", "runs")
    assert code == 0 and "cleanup runs" in out and POLICY in out and "succeeded (dry run)" in out

    code, out, _ = run(capsys, "cleanup", "show", str(dry["id"]))
    assert code == 0 and f"cleanup run {dry['id']}" in out and "would delete" in out
    assert run_json(capsys, "cleanup", "show", str(real["id"])) == real

    [shown] = run_json(capsys, "cleanup", "policies")
    assert shown["name"] == POLICY and shown["last_success_at"] == real["finished_at"] and shown["overdue"] is False
    code, out, _ = run(capsys, "cleanup", "policies")
    assert code == 0 and POLICY in out and "17 * * * *" in out and "OVERDUE" not in out


def test_purge_with_json_prints_the_finished_run(gcs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    created = [upload(gcs, f"{PREFIX}{index}.png") for index in range(4)]
    upload(gcs, "elsewhere/in-window.png")
    # The same instants written with another offset: the window is instants, not wall-clock readings.
    start = created[1].astimezone(timezone(timedelta(hours=2))).isoformat()
    window = ["--bucket", BUCKET, "--from", start, "--to", created[3].isoformat()]

    rehearsal = run_json(capsys, "cleanup", "purge", *window, "--reason", "check first", "--dry-run")
    assert (rehearsal["status"], rehearsal["matched"], rehearsal["deleted"]) == ("succeeded", 2, 0)
    assert len(names(gcs)) == 5

    purged = run_json(capsys, "cleanup", "purge", *window, "--prefix", PREFIX, "--reason", "rollback of batch 7")
    assert (purged["kind"], purged["policy"], purged["status"]) == ("purge", None, "succeeded")
    assert (purged["scanned"], purged["matched"], purged["deleted"], purged["bytes_freed"]) == (4, 2, 2, 20)
    assert purged["reason"] == "rollback of batch 7" and purged["prefix"] == PREFIX
    assert names(gcs) == {f"{PREFIX}0.png", f"{PREFIX}3.png", "elsewhere/in-window.png"}

    code, out, err = run(capsys, "cleanup", "purge", *window, "--reason", "again")
    assert code == 0, err
    assert f"purge of {BUCKET}" in out and "succeeded" in out and "0 (0 B freed)" in out


def test_no_wait_returns_at_once_and_show_wait_follows_the_run(gcs: Any, capsys: pytest.CaptureFixture[str]) -> None:
    upload(gcs, f"{PREFIX}expired.png", expires(datetime.now(UTC) - timedelta(days=1)))

    code, out, err = run(capsys, "cleanup", "run", POLICY, "--no-wait")
    assert code == 0, err
    accepted = run_json(capsys, "cleanup", "runs", "--limit", "1")[0]
    assert out.startswith(f"cleanup run {accepted['id']} ") and f"controlplane cleanup show {accepted['id']}" in out

    code, out, err = run(capsys, "cleanup", "show", str(accepted["id"]), "--wait")
    assert code == 0, err
    assert f"cleanup run {accepted['id']} ({POLICY}): succeeded" in out and "1 (10 B freed)" in out
    assert names(gcs) == set()


def test_a_failed_run_exits_1_saying_so_and_showing_it_waits_for_the_same(
    gcs: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    gcs.bucket(BUCKET).delete(force=True)

    code, out, err = run(capsys, "cleanup", "run", POLICY)

    assert code == 1
    [failed] = run_json(capsys, "cleanup", "runs")
    assert failed["status"] == "failed" and "NotFound" in failed["error"]
    assert f"error cleanup run {failed['id']} failed: NotFound" in err
    assert f"({POLICY}): failed" in out
    code, _, err = run(capsys, "cleanup", "show", str(failed["id"]), "--wait")
    assert code == 1 and "failed" in err
    code, out, _ = run(capsys, "cleanup", "show", str(failed["id"]))
    assert code == 0 and "failed" in out


def test_refusals_exit_1_with_the_status_and_problem_type(
    gcs: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)

    def purge(bucket: str, start: datetime, end: datetime, reason: str = "bad batch") -> list[str]:
        window = ["--from", start.isoformat(), "--to", end.isoformat()]
        return ["cleanup", "purge", "--bucket", bucket, *window, "--reason", reason]

    hour_ago = now - timedelta(hours=1)
    refusals = [
        (["cleanup", "run", "no-such-policy"], "error 404 cleanup-policy-not-found"),
        (["cleanup", "show", "4242"], "error 404 cleanup-run-not-found"),
        (purge("other-bucket", hour_ago, now), "error 422 bucket-not-managed"),
        (purge(BUCKET, now, now), "error 422 purge-window-empty"),
        (purge(BUCKET, now, now + timedelta(hours=1)), "error 422 purge-window-in-future"),
        (purge(BUCKET, hour_ago, now, reason=""), "error 422 invalid-body"),
    ]
    for argv, expected in refusals:
        code, _, err = run(capsys, *argv)
        assert (code, expected in err) == (1, True), (argv, err)
    assert run_json(capsys, "cleanup", "runs") == []

    monkeypatch.delenv("CONTROLPLANE_TOKEN")
    code, _, err = run(capsys, "cleanup", "policies")
    assert code == 1 and "set CONTROLPLANE_TOKEN" in err
