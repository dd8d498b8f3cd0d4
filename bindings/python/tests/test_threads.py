"""A Sandbox shared between threads; sessions one per thread; the GIL released while Lua
runs."""

from __future__ import annotations

import threading
from typing import Any, Callable, List, Tuple

import moonjail

THREADS = 8
RUNS = 100


def run_threads(target: Callable[[int], None], n: int = THREADS) -> List[BaseException]:
    """Runs ``target(k)`` on ``n`` threads started together; returns what they raised."""
    errors: List[BaseException] = []
    barrier = threading.Barrier(n)

    def body(k: int) -> None:
        try:
            barrier.wait(10)
            target(k)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=body, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return errors


def test_shared_sandbox_8_threads_x_100_runs() -> None:
    sb = moonjail.Sandbox(timeout=5)
    code = (
        "local x = ... local s = 0 for _, v in ipairs(x.items) do s = s + v end"
        " return {id = x.k * 1000 + x.i, sum = s, tag = x.tag .. '!'}"
    )
    results: List[Tuple[int, int, Any]] = []
    lock = threading.Lock()

    def work(k: int) -> None:
        for i in range(RUNS):
            out = sb.run(code, {"k": k, "i": i, "items": [k, i, 1], "tag": f"t{k}-{i}"})
            with lock:
                results.append((k, i, out.result if out.ok else out.error))

    assert run_threads(work) == []
    assert len(results) == THREADS * RUNS
    for k, i, result in results:
        assert result == {"id": k * 1000 + i, "sum": k + i + 1, "tag": f"t{k}-{i}!"}, (k, i, result)


def test_shared_sandbox_with_a_tool() -> None:
    def ident(x: Any) -> Any:
        return {"thread": threading.get_ident(), "x": x}

    sb = moonjail.Sandbox(timeout=5, tools={"t.ident": ident})
    bad: List[Any] = []

    def work(k: int) -> None:
        me = threading.get_ident()
        for i in range(RUNS // 2):
            got = sb.eval("t.ident(...)", [k, i])
            if got != {"thread": me, "x": [k, i]}:
                bad.append((k, i, got))

    assert run_threads(work) == []
    assert bad == []


def test_shared_sandbox_errors_on_many_threads() -> None:
    sb = moonjail.Sandbox(timeout=0.02, instruction_limit=100_000)
    kinds: List[str] = []
    lock = threading.Lock()

    def work(k: int) -> None:
        for i in range(20):
            code = ["error('e')", "while true do end", "return 1 +", "return function() end"][i % 4]
            out = sb.run(code)
            with lock:
                kinds.append(out.error.kind)

    assert run_threads(work) == []
    expected = {"runtime", "instruction_limit", "syntax", "result"}
    # the spin stops at whichever limit comes first
    assert set(kinds) <= expected | {"timeout"}
    assert len(kinds) == THREADS * 20


def test_one_session_per_thread() -> None:
    sb = moonjail.Sandbox(timeout=5)
    bad: List[Any] = []

    def work(k: int) -> None:
        with sb.session() as s:
            s.execute("me = ... count = 0 function bump(n) count = count + n return me, count end", k)
            for i in range(RUNS):
                got = s.call_outcome("bump", i).results
                if got != [k, i * (i + 1) // 2]:
                    bad.append((k, i, got))
            if s.eval("me") != k:
                bad.append((k, "me"))

    assert run_threads(work) == []
    assert bad == []


def test_isolated_sandbox_on_threads(isolated: Any) -> None:
    sb = isolated(workers=2, timeout=5)
    bad: List[Any] = []

    def work(k: int) -> None:
        for i in range(25):
            got = sb.run("local x = ... return x[1] * 100 + x[2]", [k, i]).result
            if got != k * 100 + i:
                bad.append((k, i, got))

    assert run_threads(work, n=4) == []
    assert bad == []


def test_isolated_sessions_on_threads(isolated: Any) -> None:
    sb = isolated(timeout=5)
    bad: List[Any] = []

    def work(k: int) -> None:
        with sb.session() as s:
            s.execute("n = ...", k)
            for i in range(10):
                if s.execute("n = n + 1 return n") != k + i + 1:
                    bad.append((k, i))

    assert run_threads(work, n=3) == []
    assert bad == []


def test_gil_is_released_while_lua_runs() -> None:
    """The script spins until a flag that only this (Python) thread can set is set: were
    the GIL held while Lua runs, this thread could not set it and the run would time
    out."""
    started = threading.Event()
    stop = threading.Event()

    def flag() -> bool:
        started.set()
        return stop.is_set()

    sb = moonjail.Sandbox(timeout=10, tools={"host.stop": flag})
    result = {}

    def spin() -> None:
        result["out"] = sb.run(
            "local n = 0 while true do n = n + 1"
            " if n % 10000 == 0 and host.stop() then return n end end"
        )

    t = threading.Thread(target=spin)
    t.start()
    assert started.wait(10)
    # Python work on this thread while the script spins
    total = sum(range(100_000))
    stop.set()
    t.join(15)
    assert not t.is_alive()
    out = result["out"]
    assert out.ok, out.error
    assert out.result > 0 and total == 4999950000


def test_runs_are_in_flight_together() -> None:
    """Two runs meet inside their tools (a barrier of 2): runs on two threads proceed at
    the same time."""
    barrier = threading.Barrier(2)

    def meet() -> bool:
        barrier.wait(10)
        return True

    sb = moonjail.Sandbox(timeout=15, tools={"t.meet": meet})
    outs: List[Any] = []

    def work(k: int) -> None:
        outs.append(sb.eval("t.meet()"))

    assert run_threads(work, n=2) == []
    assert outs == [True, True]
