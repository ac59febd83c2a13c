"""A worker process that ``dowork worker`` starts beside itself takes a signal passed on to it
while it is still starting: SIGINT and SIGTERM wait, blocked, for the handlers of
``run_until_signalled``, instead of killing the interpreter midway through its start-up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from dowork.cli.processes import Children, start_blocked

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_a_process_started_beside_holds_a_stop_signal_until_it_handles_it() -> None:
    child = start_blocked(
        _python("""
            import signal, time
            held = signal.pthread_sigmask(signal.SIG_BLOCK, [])
            time.sleep(0.3)
            print(sorted(int(s) for s in held))
        """),
        dict(os.environ),
    )
    child.send_signal(signal.SIGINT)  # at once: the interpreter is still starting
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) == 0  # it was neither interrupted nor terminated
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == set()  # ours is as it was


def test_a_held_stop_signal_is_a_warm_shutdown_once_the_handlers_are_set() -> None:
    """``run_until_signalled`` unblocks the signals after setting its handlers: a SIGTERM held
    since the start stops the worker warm (it would wait forever, blocked, otherwise)."""
    code = """
        import os, signal
        import dowork
        from dowork.signals import run_until_signalled
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
        os.kill(os.getpid(), signal.SIGTERM)  # held
        queue = dowork.Queue("held")
        ran = []
        queue.submit(ran.append, 1)
        result = run_until_signalled([queue], grace=5)
        print("stopped", result.clean, ran)
    """
    done = subprocess.run(
        _python(code), capture_output=True, text=True, timeout=10, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["stopped", "True", "[1]"]  # warm: the queued task ran


def test_a_signal_caught_while_a_process_starts_reaches_that_process() -> None:
    """The handler can run in the main thread between a process's start and its entry among
    the running ones: the signal still reaches it (it used to be passed on to the others only,
    and the first process then waited for that one forever)."""

    class Interrupted(Children):
        def _spawn(self, index: int) -> subprocess.Popen[bytes]:
            child = super()._spawn(index)
            self.forward(signal.SIGTERM)  # as the handler would, before the entry is made
            return child

    children = Interrupted(2, 0, "dump.jsonl", None)
    children._argv = _python("""
        import signal, time
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
        time.sleep(30)
    """)
    children.start()
    (child,) = children._running.values()
    assert child.wait(timeout=10) == -signal.SIGTERM
    assert children.finish()
