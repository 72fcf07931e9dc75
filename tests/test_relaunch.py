"""Back-off for replacing blocks whose launches keep failing (issue 20, item 4)."""

import threading

import pytest
from parsl.jobs.states import JobState, JobStatus
from parsl.providers import LocalProvider

from parsl_flux import FluxExecutor
from parsl_flux.driver.relaunch import (FIRST_DELAY, GIVE_UP_STREAK, MAX_DELAY, failure_streak, give_up, relaunch_allowed,
                                       relaunch_delay)


def test_the_streak_counts_failed_launches_back_to_the_newest_registered_block():
    # (block number, failed launch, registered)
    assert failure_streak([]) == 0
    assert failure_streak([(0, False, True)]) == 0
    assert failure_streak([(0, False, True), (1, True, False), (2, True, False)]) == 2
    # a block that registered ends the streak; older failures no longer count
    assert failure_streak([(0, True, False), (1, True, False), (2, False, True), (3, True, False)]) == 1
    # blocks still starting (or scaled in before registering) are skipped, not failures
    assert failure_streak([(0, False, True), (1, True, False), (2, False, False), (3, True, False)]) == 2
    # ordered by number, not by the order given (10 is newer than 9)
    assert failure_streak([(10, True, False), (9, False, True)]) == 1


def test_failed_launches_end_the_run_only_in_a_streak_with_no_block_ever_registered():
    """(number, failed launch, registered). The first failed launch of a run is
    taken for a fault (a node lost while the block started), not a broken
    configuration; a run that had a working block is never ended by them."""
    assert GIVE_UP_STREAK == 3
    assert not give_up([(0, True, False)])
    assert not give_up([(0, True, False), (1, True, False)])
    assert give_up([(0, True, False), (1, True, False), (2, True, False)])
    assert give_up([(0, True, False), (1, True, False), (2, True, False), (3, True, False)])
    assert not give_up([(0, False, True), (1, True, False), (2, True, False), (3, True, False), (4, True, False)]), \
        "a run that had a working block: a long partition, not a broken configuration"
    assert not give_up([])


def test_the_delay_starts_after_the_second_failure_doubles_and_is_bounded():
    assert [relaunch_delay(n) for n in range(2)] == [0.0, 0.0]
    assert [relaunch_delay(n) for n in range(2, 6)] == [FIRST_DELAY, 2 * FIRST_DELAY, 4 * FIRST_DELAY,
                                                         min(MAX_DELAY, 8 * FIRST_DELAY)]
    assert relaunch_delay(50) == MAX_DELAY
    assert relaunch_allowed(1, last_failure=100.0, now=100.0)
    assert not relaunch_allowed(2, last_failure=100.0, now=100.0 + FIRST_DELAY - 1)
    assert relaunch_allowed(2, last_failure=100.0, now=100.0 + FIRST_DELAY)


@pytest.fixture
def executor(tmp_path, monkeypatch):
    """A started executor whose provider records launches instead of starting blocks."""
    monkeypatch.setattr("parsl_flux.fluxpath.check_flux", lambda path, run=True: path)
    ex = FluxExecutor(provider=LocalProvider(init_blocks=0), heartbeat_threshold=3)
    ex.run_dir = str(tmp_path)
    launched = []
    monkeypatch.setattr(ex.provider, "submit", lambda cmd, tasks, name: launched.append(name) or f"job-{name}")
    monkeypatch.setattr(ex.provider, "cancel", lambda job_ids: [True] * len(job_ids))
    ex.start()
    ex.launched = launched
    yield ex
    ex.shutdown(wait=False)


def _fail_launch(ex, block_id):
    """The block's manager never connected and its batch job ended."""
    ex._driver.end_block(block_id, "its batch job is COMPLETED and its manager never connected", mark_failed=True)


def test_scale_out_waits_after_launches_fail_in_a_row_and_a_registered_block_ends_the_wait(executor, monkeypatch):
    assert executor.scale_out_facade(1) == ["0"]
    _fail_launch(executor, "0")
    assert executor.scale_out_facade(1) == ["1"], "one failed launch is retried at once"
    _fail_launch(executor, "1")
    assert executor.scale_out_facade(1) == [], "a second failure in a row must back off"
    assert len(executor.launched) == 2
    later = executor._failed_launches["1"] + FIRST_DELAY
    monkeypatch.setattr("parsl_flux.driver.executor.time.monotonic", lambda: later)
    assert executor.scale_out_facade(1) == ["2"], "the back-off is bounded: the block comes after the delay"
    _fail_launch(executor, "2")
    assert executor.scale_out_facade(1) == [], "the third failure waits longer"
    executor._driver.blocks["0"].resources = object()  # an older block that registered does not end the streak
    assert executor.scale_out_facade(1) == []
    monkeypatch.setattr("parsl_flux.driver.executor.time.monotonic", lambda: later + 2 * FIRST_DELAY)
    assert executor.scale_out_facade(1) == ["3"]
    executor._driver.blocks["3"].resources = object()  # it registered: the streak is over
    _fail_launch(executor, "3")  # lost after registering: not a failed launch
    assert executor.scale_out_facade(1) == ["4"]


def test_parsl_s_block_status_is_written_by_the_strategy_thread_only(executor):
    """A block the driver's I/O thread ends reaches Parsl's ``_simulated_status``
    when the strategy next asks (scale-out or status), on its own thread: the
    I/O thread never writes the dicts Parsl replaces from the strategy thread."""
    assert executor.scale_out_facade(1) == ["0"]
    seen = []
    io = threading.Thread(target=lambda: (_fail_launch(executor, "0"), seen.append(dict(executor._simulated_status))))
    io.start()
    io.join()
    assert seen == [{}], "the I/O thread wrote Parsl's status"
    executor.scale_out_facade(1)
    assert executor._simulated_status["0"].state == JobState.FAILED
    assert "0" in executor._failed_launches


def test_a_block_that_never_connected_keeps_its_batch_job_s_stderr(executor, tmp_path, monkeypatch):
    """Parsl's error handler shows the tail of the batch job's stderr, which names
    what kept the block from starting (a missing flux): the executor's own FAILED
    status for the block keeps the provider's files."""
    assert executor.scale_out_facade(1) == ["0"]
    err = tmp_path / "block.err"
    err.write_text("bash: line 3: /nonexistent/flux: No such file or directory\n")
    monkeypatch.setattr(executor.provider, "status",
                        lambda job_ids: [JobStatus(JobState.FAILED, stderr_path=str(err))] * len(job_ids))
    status = executor.status()["0"]
    assert status.state == JobState.FAILED and "never connected" in status.message
    assert "/nonexistent/flux" in (status.stderr_summary or "")
    assert executor.status()["0"].stderr_path == str(err), "a later poll must keep them too"
