"""The driver's result handling, without a socket or Flux: races with ``future.cancel()``."""

import logging
import queue
import threading

import cloudpickle

from parsl_flux.driver.io_loop import Driver, Task, TaskFuture
from parsl_flux.driver.resources import JobShape
from parsl_flux.wire import protocol


class CancelledWhileResolved(TaskFuture):
    """A task future that stops inside ``set_result`` until the test has cancelled it.

    The driver has already seen it not done, so this forces the interleaving
    "``future.cancel()`` lands between ``done()`` and ``set_result``" every time.
    """

    def __init__(self, driver: Driver, task_id: int) -> None:
        super().__init__(driver, task_id)
        self.reached = threading.Event()
        self.may_go_on = threading.Event()

    def set_result(self, result):
        self.reached.set()
        assert self.may_go_on.wait(10)
        super().set_result(result)


def _driver() -> Driver:
    return Driver("test", logging.getLogger("test.driver"), 1.0, 10.0, protocol.DEFAULT_MAX_MESSAGE_BYTES,
                  dict, lambda block, reason, mark_failed: None, lambda error: None, {})


def _value(task_id: int, value: object) -> dict:
    return protocol.result(task_id, protocol.outcome_value([cloudpickle.dumps(value)]))


def test_a_cancel_during_resolution_leaves_the_rest_of_the_batch_resolved():
    driver = _driver()
    racing = CancelledWhileResolved(driver, 0)
    futures = [racing, TaskFuture(driver, 1), TaskFuture(driver, 2)]
    for task_id, fut in enumerate(futures):
        driver.submit(Task(task_id, fut, JobShape(), b""))
    errors = []

    def io_thread() -> None:
        try:
            driver._complete([_value(0, "zero"), _value(1, "one"), _value(2, "two")])
        except BaseException as exc:  # the I/O loop's catch-all would log and hide this
            errors.append(exc)

    thread = threading.Thread(target=io_thread)
    thread.start()
    assert racing.reached.wait(10)
    assert racing.cancel()  # the user's cancel lands now, after the driver's done() check
    racing.may_go_on.set()
    thread.join(10)
    assert not thread.is_alive()
    assert errors == []
    assert racing.cancelled()
    assert futures[1].result(timeout=0) == "one"
    assert futures[2].result(timeout=0) == "two"
    assert driver.outstanding() == 0 and driver.registry == {}


def test_a_cancel_during_a_failure_does_not_stop_fail_all():
    driver = _driver()
    racing, other = TaskFuture(driver, 0), TaskFuture(driver, 1)
    for task_id, fut in enumerate((racing, other)):
        driver.submit(Task(task_id, fut, JobShape(), b""))
    original = racing.set_exception

    def cancel_first(exc):
        racing.cancel()  # lands after fail_all saw the future not done
        original(exc)

    racing.set_exception = cancel_first
    assert driver.fail_all(RuntimeError("shutting down")) == 1
    assert racing.cancelled()
    assert isinstance(other.exception(timeout=0), RuntimeError)


def test_a_bad_monitoring_message_costs_no_result():
    driver = _driver()
    driver.monitoring_messages = queue.SimpleQueue()
    futures = [TaskFuture(driver, 0), TaskFuture(driver, 1)]
    for task_id, fut in enumerate(futures):
        driver.submit(Task(task_id, fut, JobShape(), b""))
    broken = dict(_value(0, "zero"), monitoring=[b"not a pickle", cloudpickle.dumps(("ok", 1))])
    driver._complete([broken, _value(1, "one")])
    assert [f.result(timeout=0) for f in futures] == ["zero", "one"]
    assert driver.monitoring_messages.get_nowait() == ("ok", 1)
    assert driver.monitoring_messages.empty()
