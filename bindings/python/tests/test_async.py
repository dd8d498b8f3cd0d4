"""asyncio: run_async / eval_async on the loop's executor, and cancellation."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Awaitable, Callable, List, TypeVar

import pytest

import moonjail


T = TypeVar("T")


def run_loop(main: Callable[[], Awaitable[T]], workers: int = 4) -> T:
    """Runs ``main()`` on a fresh loop with a default executor of ``workers`` threads.

    Closed without waiting for the executor's threads, so that a run the interrupt check
    failed to stop does not hang the suite (it ends at its own timeout)."""
    loop = asyncio.new_event_loop()
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
    loop.set_default_executor(executor)
    try:
        return loop.run_until_complete(asyncio.wait_for(main(), 60))
    finally:
        executor.shutdown(wait=False)
        loop.close()


def test_gather_many_runs() -> None:
    sb = moonjail.Sandbox()

    async def main() -> List[Any]:
        outs = await asyncio.gather(*(sb.run_async("return ... * 2", i) for i in range(200)))
        return [o.result for o in outs]

    assert run_loop(main) == [i * 2 for i in range(200)]


def test_gather_eval_async() -> None:
    sb = moonjail.Sandbox()

    async def main() -> List[Any]:
        return await asyncio.gather(
            *(sb.eval_async("{n = (...).n + 1, s = (...).s}", {"n": i, "s": str(i)}) for i in range(100))
        )

    assert run_loop(main) == [{"n": i + 1, "s": str(i)} for i in range(100)]


def test_run_async_outcomes_and_eval_async_errors() -> None:
    sb = moonjail.Sandbox(timeout=0.05)

    async def main() -> None:
        out = await sb.run_async("error({code = 1})")
        assert isinstance(out.error, moonjail.LuaRuntimeError) and out.error.value == {"code": 1}
        out = await sb.run_async("return io.open('x')", lint=True)
        assert isinstance(out.error, moonjail.LintError)
        out = await sb.run_async(b"return 'bytes'")
        assert out.result == "bytes"
        with pytest.raises(moonjail.TimeLimitError):
            await sb.eval_async("while true do end")
        with pytest.raises(moonjail.LuaSyntaxError):
            await sb.eval_async("1 +")
        with pytest.raises(TypeError):
            await sb.run_async("return ...", object())

    run_loop(main)


def test_the_loop_keeps_running_during_a_run() -> None:
    """The script waits (in a tool) for an event that only a coroutine on the loop sets."""
    release = threading.Event()

    def wait() -> bool:
        return release.wait(10)

    sb = moonjail.Sandbox(timeout=15, tools={"t.wait": wait})

    async def main() -> Any:
        task = asyncio.ensure_future(sb.eval_async("t.wait()"))
        await asyncio.sleep(0.01)
        release.set()  # runs only if the loop is not blocked by the run
        return await task

    assert run_loop(main) is True


def test_session_from_an_executor_thread_is_refused() -> None:
    # A session stays on the thread that opened it (documented): using it from the
    # loop's executor threads is refused, and it still works on its own thread.
    sb = moonjail.Sandbox()
    s = sb.session()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(RuntimeError):
            await loop.run_in_executor(None, s.execute, "return 1")

    run_loop(main)
    assert s.execute("return 1") == 1
    s.close()


class Recording(moonjail.Sandbox):
    """Keeps what each ``run``/``eval`` on an executor thread returned or raised."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.seen: List[Any] = []

    def run(self, *args: Any, **kwargs: Any) -> moonjail.Outcome:  # type: ignore[override]
        try:
            out = super().run(*args, **kwargs)
        except BaseException as e:
            self.seen.append(e)
            raise
        self.seen.append(out)
        return out

    def eval(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        try:
            value = super().eval(*args, **kwargs)
        except BaseException as e:
            self.seen.append(e)
            raise
        self.seen.append(value)
        return value


def _cancel_and_reuse(method: str) -> None:
    """Cancels a task spinning in Lua, then runs again on the same (single) executor
    thread. The spin has a 2 s safety timeout: if cancellation does not stop it, it ends
    as "timeout" instead of "interrupted"."""
    sb = Recording(timeout=2)

    async def main() -> Any:
        started = asyncio.ensure_future(getattr(sb, method)("while true do end"))
        await asyncio.sleep(0.2)  # the script is spinning
        started.cancel()
        with pytest.raises(asyncio.CancelledError):
            await started
        # the executor's only thread must be free for this one to run
        out = await asyncio.wait_for(sb.run_async("return 'next'"), 20)
        return out

    out = run_loop(main, workers=1)
    assert out.result == "next"
    stopped = sb.seen[0]
    if isinstance(stopped, moonjail.Outcome):
        stopped = stopped.error
    assert isinstance(stopped, moonjail.InterruptedRunError), repr(stopped)
    assert stopped.kind == "interrupted"


def test_cancelling_run_async_stops_the_script() -> None:
    _cancel_and_reuse("run_async")


def test_cancelling_eval_async_stops_the_script() -> None:
    _cancel_and_reuse("eval_async")


def test_cancelling_before_the_run_starts() -> None:
    sb = moonjail.Sandbox()

    async def main() -> Any:
        task = asyncio.ensure_future(sb.run_async("return 1"))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return (await sb.run_async("return 2")).result

    assert run_loop(main) == 2
