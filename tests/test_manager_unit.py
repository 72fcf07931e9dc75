"""The manager's bookkeeping of task jobs (pure: no broker, no driver).

Jobspecs are built by ``flux.job`` (not importable without Flux); here the
manager's ``build_jobspec`` returns the job's name instead, which is all the
bookkeeping looks at. Real jobspecs are covered by the Flux tests."""

import pytest

from parsl_flux.allocation.events import JobDone, Submit, SubmitFailed, Submitted
from parsl_flux.allocation.flux_backend import FluxThreads
from parsl_flux.allocation.manager import Manager, _Task
from parsl_flux.driver.resources import JobShape
from parsl_flux.wire.shape import InstanceResources


@pytest.fixture
def manager(tmp_path, monkeypatch):
    monkeypatch.setattr("parsl_flux.allocation.manager.build_jobspec", lambda *args: args[-1])
    monkeypatch.setattr("parsl_flux.allocation.manager._f58", lambda jobid: None if jobid is None else f"f{jobid}")
    m = Manager("tcp://127.0.0.1:9", "0", b"k" * 32, tmp_path, "python3", 1.0, 10.0, "127.0.0.1")
    m.flux = FluxThreads(lambda event: None)  # its request queue only: the threads are not started
    m._configure({}, InstanceResources(1, 1, 0), broker_pid=1)
    m.refill_at = 2
    yield m
    m.server.stop()
    m.link.close()
    m.driver.close(linger=0)
    m.ctx.term()


def _hold(m, *ids):
    for i in ids:
        task = _Task(i, JobShape(), packed=False)
        m.tasks[i] = task
        m.server.add(i, [b"payload"], False)
        m.held.append(task)


def _submitted(m):
    out = []
    while not m.flux._requests.empty():
        request = m.flux._requests.get_nowait()
        assert isinstance(request, Submit) and request.jobspec == f"parsl-task-{request.task_id}"
        out.append(request.task_id)
    return out


def _end_jobs(m, *ids):
    for i in ids:
        m.events.put(Submitted(i, 1000 + i))
        m.events.put(JobDone(1000 + i, True, ""))
    assert m._drain_events() is None


def test_held_jobs_go_to_flux_in_batches_once_half_the_window_is_free(manager):
    _hold(manager, 0, 1, 2, 3, 4)
    manager._release_held()
    assert _submitted(manager) == [0, 1, 2, 3, 4] and manager.task_jobs == 5
    _hold(manager, 5, 6)
    manager._release_held()
    assert _submitted(manager) == [], "5 jobs in Flux > refill_at 2: keep holding"
    _end_jobs(manager, 0, 1)
    manager._release_held()
    assert _submitted(manager) == [] and manager.task_jobs == 3
    _end_jobs(manager, 2)
    manager._release_held()
    assert _submitted(manager) == [5, 6] and manager.task_jobs == 4


def test_cancelling_a_held_task_resolves_it_without_flux(manager):
    _hold(manager, 0, 1, 2, 3)
    manager._release_held()
    _submitted(manager)
    _hold(manager, 7, 8)
    manager._cancel(7)
    assert [t.task_id for t in manager.held] == [8]
    assert manager.results == [{"outcome": "cancelled", "id": 7}]
    assert 7 not in manager.tasks and _submitted(manager) == []


def test_a_failed_submission_frees_its_place(manager):
    _hold(manager, 0, 1, 2)
    manager._release_held()
    _submitted(manager)
    manager.events.put(SubmitFailed(0, "Flux rejected the job: bad"))
    manager._drain_events()
    assert manager.task_jobs == 2 and manager.results[0]["outcome"] == "job_failed"
