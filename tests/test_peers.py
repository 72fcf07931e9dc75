"""Who a task-server peer is (pure: a made-up /proc tree; the real one is
used by tests/test_flux_trust.py): the job shell above a process, and the
caps on unauthenticated connections."""

import pytest

from parsl_flux.allocation.peers import Admission, flux_job_of, job_shell_of, parent_of

BROKER = 100


def _proc(tmp_path, pid, ppid, argv, comm="x"):
    d = tmp_path / str(pid)
    d.mkdir()
    (d / "stat").write_bytes(f"{pid} ({comm}) S {ppid} {pid} {pid} 0".encode())
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")


@pytest.fixture
def proc(tmp_path):
    _proc(tmp_path, BROKER, 1, ["flux-broker"])
    _proc(tmp_path, 200, BROKER, ["/opt/flux/libexec/flux/flux-shell", "16844324864"])
    _proc(tmp_path, 201, 200, ["python", "-S", "-c", "runner"], comm="a) b (c")  # a name with parentheses
    _proc(tmp_path, 202, 201, ["sh"])
    _proc(tmp_path, 300, BROKER, ["/tmp/evil", "16844324864"])  # a broker child that is no job shell
    _proc(tmp_path, 301, 300, ["python"])
    _proc(tmp_path, 400, 1, ["/opt/flux/libexec/flux/flux-shell", "16844324864"])  # not this broker's
    _proc(tmp_path, 401, 400, ["python"])
    _proc(tmp_path, 500, BROKER, ["/usr/libexec/flux/flux-imp", "exec", "/opt/flux/libexec/flux/flux-shell"])
    _proc(tmp_path, 501, 500, ["/opt/flux/libexec/flux/flux-shell", "777"])  # multi-user: through the IMP
    _proc(tmp_path, 502, 501, ["python"])
    return str(tmp_path)


def test_parent_is_read_after_the_last_parenthesis(proc):
    assert parent_of(201, proc) == 200


def test_a_task_and_its_children_belong_to_their_shells_job(proc):
    assert job_shell_of(202, BROKER, proc)[0] == 200
    assert flux_job_of(201, BROKER, proc) == flux_job_of(202, BROKER, proc) == "16844324864"


def test_a_job_shell_started_through_the_imp_counts(proc):
    assert flux_job_of(502, BROKER, proc) == "777"


def test_no_job_for_processes_outside_this_brokers_job_shells(proc):
    assert flux_job_of(301, BROKER, proc) is None, "a broker child not named flux-shell"
    assert flux_job_of(401, BROKER, proc) is None, "a flux-shell of another broker"
    assert flux_job_of(999, BROKER, proc) is None, "a process that is gone"


def test_admission_caps_per_peer_and_in_total():
    gate = Admission(total=3, per_peer=2)
    assert gate.enter("a") and gate.enter("a") and not gate.enter("a")
    assert gate.enter("b") and not gate.enter("c"), "total reached"
    gate.leave("a")
    assert gate.enter("c") and gate.held("a") == 1
    with pytest.raises(RuntimeError):
        gate.leave("zzz")
