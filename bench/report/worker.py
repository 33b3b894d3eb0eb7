"""A worker process beside a report: it draws the figures and writes the large CSVs while the
report goes on with its tables, so a report uses the second CPU that it otherwise leaves idle.

Why: a report is one busy core. After one more run of a 1,000-run store finished, drawing its
figures (with matplotlib's import) and formatting summary.csv and delta.csv were ~1 s of ~6;
none of them feeds anything else the report computes. The worker is spawned (it shares no state
with the report) when the report starts and imports the drawing code while the statistics are
computed; jobs are then handed to it in order.

Every job is a module-level function called with the same inputs it would get in the report's
process, in a process that has loaded the same plugins (their display names label figures), so
the files are byte for byte the same (tests/test_report_scale.py checks it). What the function
raises is raised where its result is asked for, as if it had run there (:class:`JobFailed` where
the exception itself cannot travel back). Where there is no worker — a process that may use one
CPU only, ``$BENCH_REPORT_PROCESSES=0``, a caller that did not ask for one, a worker that cannot
start, dies or cannot take a job's inputs — the job runs in the report's process when its result
is asked for.
"""

from __future__ import annotations

import os
from typing import Any, Callable

PROCESSES_ENV = "BENCH_REPORT_PROCESSES"  # 0: everything in the report's own process


class JobFailed(Exception):
    """What a job raised in the worker when that exception cannot be sent back as itself (its
    class does not rebuild from its arguments): ``text`` is 'ExceptionClass: message'."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def failure_text(exc: BaseException) -> str:
    """'ExceptionClass: message' of what a job raised, wherever it ran."""
    return exc.text if isinstance(exc, JobFailed) else f"{exc.__class__.__name__}: {exc}"


def _call(fn: Callable[..., Any], args: tuple) -> tuple[bool, Any]:
    """In the worker: (True, result), or (False, what ``fn`` raised) — told apart from the worker
    itself failing, after which the job runs in the report's process."""
    try:
        return True, fn(*args)
    except Exception as exc:  # noqa: BLE001 — raised again in the report's process
        import pickle

        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:  # noqa: BLE001 — it would break the pool on its way back
            return False, JobFailed(failure_text(exc))
        return False, exc


def _start(plugins: list[str], warm: bool) -> None:
    """The worker's initializer: the report process's plugins (their methods' display names label
    the figures), then, for a report that draws, the drawing code."""
    from bench.plugins import activate

    activate(plugins)
    if warm:
        _warm()


def _warm() -> None:
    """Import the drawing code (matplotlib, ~1 s with pandas) and draw a throwaway figure into
    memory as PNG and PDF (fonts found and loaded, both backends imported) while the report
    computes: the first real figure then costs what every later one does."""
    import io

    from bench.report.plots import plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1], label="warm-up")
    ax.set_title("Δ −1.00 [−2.00, +0.50] †")
    ax.legend()
    for fmt in ("png", "pdf"):
        fig.savefig(io.BytesIO(), format=fmt)
    plt.close(fig)


def cores() -> int:
    """The CPUs this process may use (a Slurm job's, a taskset's), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def wanted_by_env() -> bool:
    """$BENCH_REPORT_PROCESSES: 0 / off / no / false keep everything in the report's process."""
    return os.environ.get(PROCESSES_ENV, "1").strip().lower() not in ("0", "off", "no", "false")


class Worker:
    """One worker process, or none (every job then runs in the report's process)."""

    def __init__(self, pool: Any = None) -> None:
        self.pool = pool
        self.handed = 0  # jobs handed to the worker
        self.ran_there = 0  # jobs whose result (or own exception) came back from the worker

    @property
    def used(self) -> bool:
        """Whether a job was handed to the worker."""
        return self.handed > 0

    @classmethod
    def start(cls, wanted: bool, warm: bool = True) -> "Worker":
        """A worker when ``wanted``, this process may use two CPUs or more, and
        $BENCH_REPORT_PROCESSES allows it; ``warm``: import the drawing code at once (a report
        that draws figures)."""
        if not wanted or not wanted_by_env() or cores() < 2:
            return cls(None)
        pool = None
        try:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            from bench.plugins import loaded_plugins

            pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_start, initargs=(list(loaded_plugins()), warm))
            pool.submit(int)  # starts the process (and its initializer) now, while the report computes
        except Exception:  # noqa: BLE001 — e.g. a daemonic process may not have children: everything here
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            return cls(None)
        return cls(pool)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
        """``fn(*args)``, begun now in the worker; the returned call waits for its result and
        raises what ``fn`` raised."""
        if self.pool is not None:
            try:
                future = self.pool.submit(_call, fn, args)
                self.handed += 1
            except Exception:  # noqa: BLE001 — a pool that is gone: run here
                self.pool = None
            else:
                def result() -> Any:
                    try:
                        ok, value = future.result()
                    except Exception:  # noqa: BLE001 — the worker died, or could not take the inputs or give the result back
                        return fn(*args)
                    self.ran_there += 1
                    if not ok:
                        raise value
                    return value
                return result
        return lambda: fn(*args)

    def close(self) -> None:
        """Stop the worker at once: the report has waited for the result of every job it handed
        over (its files are written, atomically), so nothing is left to do there but the warm-up
        import or the interpreter's own teardown (~0.15 s with matplotlib loaded), neither worth
        waiting for. A job still running (the report failed before asking for it) leaves at most
        a temporary file beside its target."""
        if self.pool is None:
            return
        for process in list((getattr(self.pool, "_processes", None) or {}).values()):
            process.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool = None


__all__ = ["Worker", "JobFailed", "failure_text", "PROCESSES_ENV", "cores", "wanted_by_env"]
