"""A child of `wangge run` ends when `wangge run` is gone (``ops.lifeline``): the rule, with
the parent's pid and the clock's waits passed in (the real processes:
``tests/integration/test_supervisor_kill.py``)."""

from __future__ import annotations

import threading

from pipelines.ops.lifeline import SUPERVISOR_ENV, orphaned, watch_supervisor


def test_orphaned_when_the_parent_is_not_the_supervisor_told() -> None:
    env = {SUPERVISOR_ENV: "4242"}
    assert not orphaned(env, 4242)
    assert orphaned(env, 1)  # handed to init
    assert orphaned(env, 777)  # … or to a subreaper
    assert not orphaned({}, 1)  # not started by `wangge run`: never
    assert not orphaned({SUPERVISOR_ENV: ""}, 1)
    assert not orphaned({SUPERVISOR_ENV: "x"}, 1)


def test_the_watch_ends_the_process_once_and_only_when_the_supervisor_is_gone() -> None:
    parent = [4242]
    ended = threading.Event()
    calls = []

    def end() -> None:
        calls.append(parent[0])
        ended.set()

    t = watch_supervisor(
        every_s=0.01, environ={SUPERVISOR_ENV: "4242"}, getppid=lambda: parent[0], end=end
    )
    assert t is not None and t.daemon
    assert not ended.wait(0.1)  # the supervisor is there: nothing
    parent[0] = 1
    assert ended.wait(5)
    t.join(5)
    assert calls == [1] and not t.is_alive()


def test_no_watch_where_the_parent_was_never_the_supervisor() -> None:
    """A gunicorn or uvicorn worker inherits the variable with another parent: it must not
    end itself (its master watches); nor a process started by anything else."""

    def end() -> None:
        raise AssertionError("ended")

    env = {SUPERVISOR_ENV: "4242"}
    assert watch_supervisor(environ=env, getppid=lambda: 5000, end=end) is None
    assert watch_supervisor(environ={}, getppid=lambda: 1, end=end) is None
