"""moonjail from Python against lupa, side by side in one process.

    bash bindings/python/bench/run.sh            # installs lupa into the test venv, runs this

Prints a Markdown table (median of --reps rounds, microseconds per operation):

- fresh: a new state per run. lupa: ``LuaRuntime()`` + ``execute("return 1")`` (full
  standard library, no limits). moonjail: ``Sandbox.run("return 1")`` on a sandbox built
  once with every default limit (64 MiB, 5 s, output and result caps), with and without
  prepared states.
- call: a call into a live state. lupa: ``f(1)`` on a Lua function. moonjail:
  ``Session.call("f", 1)`` with every limit armed (memory, timeout, instructions,
  output).
- threads: runs per second of ``Sandbox.run`` from 1 and from 8 threads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from typing import Callable, List

import moonjail

try:
    import lupa  # type: ignore[import-not-found]
    from lupa import LuaRuntime  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover
    lupa = None


def per_op(fn: Callable[[], object], n: int) -> float:
    """Microseconds per call of fn, over n calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def median_of(reps: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(reps))


def warm_pool_latency(sb: moonjail.Sandbox, bursts: int = 40, burst: int = 32) -> float:
    """Median microseconds of one run when the prepared pool is full: runs come in
    bursts smaller than the pool, with pauses in which the helper thread refills it, as
    requests reach a service that is not saturated."""
    times: List[float] = []
    for _ in range(bursts):
        time.sleep(0.03)
        for _ in range(burst):
            start = time.perf_counter()
            sb.run("return 1")
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def threads_throughput(sb: moonjail.Sandbox, threads: int, runs_each: int) -> float:
    """Runs per second of sb.run from `threads` threads, each making runs_each runs."""
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        barrier.wait()
        for i in range(runs_each):
            out = sb.run("local n = ... local s = 0 for i = 1, 2000 do s = s + i end return s + n", i)
            assert out.result == 2001000 + i

    pool: List[threading.Thread] = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in pool:
        t.join()
    return threads * runs_each / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000, help="operations per round")
    ap.add_argument("--reps", type=int, default=5, help="rounds; the median is kept")
    args = ap.parse_args()
    n, reps = args.n, args.reps
    rows = []

    if lupa is not None:
        def lupa_fresh() -> object:
            return LuaRuntime().execute("return 1")

        rows.append(("fresh", f"lupa {lupa.__version__}: LuaRuntime() + execute('return 1')",
                     median_of(reps, lambda: per_op(lupa_fresh, n // 4))))
    sb = moonjail.Sandbox()
    assert sb.run("return 1").result == 1
    rows.append(("fresh", "moonjail: Sandbox.run('return 1'), default limits",
                 median_of(reps, lambda: per_op(lambda: sb.run("return 1"), n))))
    prepared = moonjail.Sandbox(prepared_states=64)
    prepared.run("return 1")
    rows.append(("fresh", "moonjail: same, prepared_states=64, back to back",
                 median_of(reps, lambda: per_op(lambda: prepared.run("return 1"), n))))
    rows.append(("fresh", "moonjail: same, prepared_states=64, pool warm (bursts of 32)",
                 warm_pool_latency(prepared)))
    if lupa is not None:
        lat: List[float] = []
        for _ in range(40 * 32):
            start = time.perf_counter()
            LuaRuntime().execute("return 1")
            lat.append(time.perf_counter() - start)
        rows.append(("fresh", "lupa: same, one at a time (median)",
                     statistics.median(lat) * 1e6))

    if lupa is not None:
        rt = LuaRuntime()
        f = rt.eval("function(x) return x end")
        rows.append(("call", "lupa: f(1) on a live runtime",
                     median_of(reps, lambda: per_op(lambda: f(1), n * 5))))
    armed = moonjail.Sandbox(memory_limit="16MiB", timeout=5, instruction_limit=10**12,
                             output_limit="1MiB")
    with armed.session() as s:
        s.execute("function f(x) return x end")
        assert s.call("f", 1) == 1
        rows.append(("call", "moonjail: Session.call('f', 1), every limit armed",
                     median_of(reps, lambda: per_op(lambda: s.call("f", 1), n * 5))))

    one = median_of(3, lambda: threads_throughput(sb, 1, 800))
    eight = median_of(3, lambda: threads_throughput(sb, 8, 100))

    print("| measure | what | µs/op |")
    print("|:---|:---|---:|")
    for kind, what, us in rows:
        print(f"| {kind} | {what} | {us:.2f} |")
    print()
    print("| threads | runs/s | vs 1 thread |")
    print("|---:|---:|---:|")
    print(f"| 1 | {one:,.0f} | 1.00x |")
    print(f"| 8 | {eight:,.0f} | {eight / one:.2f}x |")
    print(f"\n(python {sys.version.split()[0]}, moonjail {moonjail.__version__}, n={n}, reps={reps})")


if __name__ == "__main__":
    main()
