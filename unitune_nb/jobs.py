"""Long step-wise work (tuning) that a widget can cancel, without threads.

A :class:`Job` advances an iterator (e.g. :meth:`UniTune.tune_steps`) one item per turn of the kernel's
event loop, so the messages that arrive in between (a click on *Cancel*, a slider) are handled while it
runs, and every widget update happens on the kernel's main thread: Colab's front end is reported to drop
widget updates made from background threads (googlecolab/colabtools#3373).  Where no event loop is
running (a script, pytest) :meth:`Job.start` simply runs the job to its end; :meth:`Job.run_here` runs it to its
end inside the caller (a click handler on Colab), with the notebook's stop button as its cancel.  A notebook cell that starts
a job and needs its result calls :meth:`Job.wait`, which runs the remaining steps there and then.

JupyterLab 4 with ipykernel 7 handles widget messages on a kernel *subshell*, a thread of its own, so a
*Cancel* click can arrive while a step is running: :meth:`Job.cancel` then only asks, and the job stops
after that step, in the thread that runs it.
"""
from __future__ import annotations

import asyncio
import threading
import warnings
from typing import Callable, Iterator

PENDING, RUNNING, DONE, CANCELLED, FAILED = "pending", "running", "done", "cancelled", "failed"


class Job:
    """Run ``steps`` one item at a time: ``on_step(item)`` after each, ``on_end(job)`` once at the end
    (``job.state`` is ``"done"``, ``"cancelled"`` or ``"failed"``, with ``job.error``).  Warnings raised while
    stepping are collected in ``job.warnings`` instead of going to the console."""

    def __init__(self, steps: Iterator, on_step: Callable[[object], None], on_end: Callable[["Job"], None]):
        self.steps = steps
        self.on_step = on_step
        self.on_end = on_end
        self.state = PENDING
        self.count = 0
        self.error: BaseException | None = None
        self.warnings: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stepping = threading.Lock()  # held while a step runs
        self._cancel_asked = False

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    def start(self) -> "Job":
        """Start: on the running event loop (a kernel) one step per turn, else (no loop) to the end now."""
        self.state = RUNNING
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        if self._loop is None:
            self.wait()
        else:
            self._loop.call_soon(self._turn)
        return self

    def _turn(self) -> None:
        if self.running:
            self.step()
        if self.running and self._loop is not None:
            self._loop.call_soon(self._turn)

    def step(self) -> None:
        """Advance by one item (or end the job); stop instead if a cancel was asked meanwhile."""
        with self._stepping:
            if self.running and not self._cancel_asked:
                self._step()
            if self.running and self._cancel_asked:
                self._stop()

    def _step(self) -> None:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                item = next(self.steps)
        except StopIteration:
            self._end(DONE)
            return
        except Exception as e:  # noqa: BLE001 - reported through on_end, the panel shows it
            self._end(FAILED, e)
            return
        finally:
            self.warnings += [str(w.message) for w in caught if str(w.message) not in self.warnings]
        self.count += 1
        self.on_step(item)

    def run_here(self) -> "Job":
        """Run every step now, inside this call: for a widget callback whose updates must be sent while it runs
        (Colab's page is reported to drop the ones sent after it returns).  A ``KeyboardInterrupt`` (the
        notebook's stop button) cancels the job, as *Cancel* does, instead of propagating."""
        self.state = RUNNING
        try:
            self.wait()
        except KeyboardInterrupt:
            if self.running:
                self._stop()
        return self

    def wait(self) -> "Job":
        """Run the remaining steps now (for scripts, tests and notebook cells that need the result)."""
        while self.running:
            self.step()
        return self

    def cancel(self) -> bool:
        """Stop a running job (its iterator is closed): at once between steps, else (a step is running in
        another thread) right after that step.  False if the job had already ended."""
        if not self.running:
            return False
        self._cancel_asked = True
        if self._stepping.acquire(blocking=False):
            try:
                if self.running:
                    self._stop()
            finally:
                self._stepping.release()
        return True

    def _stop(self) -> None:
        self.steps.close()
        self._end(CANCELLED)

    def _end(self, state: str, error: BaseException | None = None) -> None:
        self.state, self.error = state, error
        self.on_end(self)
