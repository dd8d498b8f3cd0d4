"""Durable runs from Python: ``run(journal=)``, ``moonjail.replay``, deferred tools
(``defer_tools=``) with ``Sandbox.resume`` from the journal and ``Sandbox.start`` in
memory."""

from __future__ import annotations

import json
import pathlib
import threading

import pytest

import moonjail
from conftest import isolation_problem

PLAN = """
function run(order)
  local rate = fx.rate(order.currency)
  local amount = order.amount * rate
  print(("paying %s %.2f"):format(order.to, amount))
  local receipt = payments.send({to = order.to, amount = amount})
  return {paid = amount, receipt = receipt.id}
end
"""
ORDER = {"to": "alice", "amount": 100, "currency": "USD"}


def sandbox(calls: list, **options) -> moonjail.Sandbox:
    def rate(currency: str) -> float:
        calls.append(currency)
        return 0.5

    return moonjail.Sandbox(
        tools={"fx.rate": rate}, defer_tools=["payments.send"], timeout=5, **options
    )


MODES = [pytest.param({}, id="in-process"), pytest.param({"isolate": True}, id="isolated")]


def skip_if_unisolated(options: dict) -> None:
    if options.get("isolate"):
        problem = isolation_problem()
        if problem:
            pytest.skip(problem)


@pytest.mark.parametrize("options", MODES)
def test_a_deferred_call_suspends_and_resume_finishes_with_the_answer(
    tmp_path: pathlib.Path, options: dict
) -> None:
    skip_if_unisolated(options)
    calls: list = []
    sb = sandbox(calls, **options)
    journal = tmp_path / "pay.jsonl"
    out = sb.run(PLAN, ORDER, journal=journal)
    assert out.ok is False
    err = out.error
    assert isinstance(err, moonjail.SuspendedError)
    assert err.kind == "suspended"
    assert err.value == {"name": "payments.send", "args": [{"to": "alice", "amount": 50.0}]}
    assert out.output == "paying alice 50.00\n"
    assert calls == ["USD"]
    with pytest.raises(moonjail.SuspendedError):
        out.raise_for_error()
    # A new sandbox, as another process would build it.
    again: list = []
    done = sandbox(again, **options).resume(journal, {"id": "tx-7"})
    assert done.ok, done.error
    assert done.result == {"paid": 50.0, "receipt": "tx-7"}
    assert again == [], "the rate was answered from the journal"
    # Replayed whole, without calling anything.
    replayed = moonjail.replay(journal)
    assert replayed.result == done.result
    assert replayed.output == done.output
    with pytest.raises(moonjail.JournalError, match="not suspended"):
        sb.resume(journal, {"id": "again"})


def test_an_error_answer_is_the_tools_error(tmp_path: pathlib.Path) -> None:
    sb = sandbox([])
    journal = tmp_path / "pay.jsonl"
    sb.run(PLAN, ORDER, journal=str(journal))
    out = sb.resume(journal, error="declined by the approver")
    assert isinstance(out.error, moonjail.LuaRuntimeError)
    assert "payments.send: declined by the approver" in out.error.message
    with pytest.raises(TypeError):
        sb.resume(journal, {"id": 1}, error="both")


@pytest.mark.parametrize("options", MODES)
def test_start_keeps_the_run_in_memory(options: dict) -> None:
    skip_if_unisolated(options)
    calls: list = []
    sb = sandbox(calls, **options)
    run = sb.start(PLAN, ORDER)
    assert isinstance(run, moonjail.Suspension)
    assert run.pending["name"] == "payments.send"
    assert run.pending["args"] == [{"to": "alice", "amount": 50.0}]
    out = run.resume({"id": "tx-9"})
    assert isinstance(out, moonjail.Outcome)
    assert out.result == {"paid": 50.0, "receipt": "tx-9"}
    assert calls == ["USD"]
    with pytest.raises(RuntimeError, match="resumed already"):
        run.resume({"id": "twice"})
    # A run without a deferred call finishes at once.
    assert sb.start("return 1 + 1").result == 2
    # Given up, a run ends where it waits, with what it did so far.
    run = sb.start(PLAN, ORDER)
    assert isinstance(run, moonjail.Suspension)
    out = run.abandon()
    assert isinstance(out, moonjail.Outcome)
    assert isinstance(out.error, moonjail.SuspendedError)
    assert out.output == "paying alice 50.00\n"
    assert out.stats["wall_ms"] > 0
    with pytest.raises(RuntimeError, match="resumed already"):
        run.abandon()


def test_a_suspension_can_be_resumed_from_another_thread() -> None:
    sb = sandbox([])
    run = sb.start(PLAN, ORDER)
    assert isinstance(run, moonjail.Suspension)
    results: list = []
    worker = threading.Thread(target=lambda: results.append(run.resume({"id": "t"})))
    worker.start()
    worker.join()
    assert results[0].result["receipt"] == "t"


def test_journal_errors_are_journal_errors(tmp_path: pathlib.Path) -> None:
    with pytest.raises(moonjail.JournalError):
        moonjail.replay(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{}\n")
    with pytest.raises(moonjail.JournalError, match="line 1"):
        moonjail.replay(bad)
    # The journal is the library's format.
    sb = moonjail.Sandbox()
    journal = tmp_path / "run.jsonl"
    recorded = sb.run("return math.random(1, 1000000)", journal=journal)
    assert recorded.ok
    first = json.loads(journal.read_text().splitlines()[0])
    assert first["v"] == 1 and first["type"] == "start"
    # The recorded seed: the same number again.
    assert moonjail.replay(journal).result == recorded.result
    with pytest.raises(TypeError):
        sb.run("return 1", journal=journal, lint=True)


def test_a_replay_with_another_source_reports_the_divergence(tmp_path: pathlib.Path) -> None:
    sb = sandbox([])
    journal = tmp_path / "pay.jsonl"
    sb.run(PLAN, ORDER, journal=journal)
    out = moonjail.replay(journal, source=PLAN.replace("order.currency", "'EUR'"))
    assert isinstance(out.error, moonjail.ReplayDivergenceError)
    assert "fx.rate" in out.error.message


def test_a_journal_over_the_replay_ceiling_needs_trust(tmp_path: pathlib.Path) -> None:
    # A journal replays under the limits it records, which are its own claim: past the
    # ceiling (here, no timeout at all) it is refused unless the caller trusts it.
    journal = tmp_path / "run.jsonl"
    assert moonjail.Sandbox(timeout=None).run("return 7", journal=journal).ok
    with pytest.raises(moonjail.JournalError, match="timeout limit"):
        moonjail.replay(journal)
    assert moonjail.replay(journal, trust_limits=True).result == 7
