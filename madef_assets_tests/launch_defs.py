"""A code location for test_launched_runs: jobs that succeed, fail, lose their run worker, or wait."""

import os
import signal
import time
from pathlib import Path

from dagster import Definitions, Failure, in_process_executor, job, op


@op
def answer() -> int:
    return 42


@op
def refuse() -> None:
    raise Failure("refused on purpose")


@op
def lose_the_worker() -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # in_process executor: the op runs in the run worker itself


@op
def wait_for_release() -> None:
    """Waits until $LAUNCH_TEST_RELEASE exists (an hour at most)."""
    release = Path(os.environ["LAUNCH_TEST_RELEASE"])
    deadline = time.monotonic() + 3600
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.2)


@job(executor_def=in_process_executor)
def succeeds():
    answer()


@job(executor_def=in_process_executor)
def fails():
    refuse()


@job(executor_def=in_process_executor)
def loses_its_worker():
    lose_the_worker()


@job(executor_def=in_process_executor)
def waits():
    wait_for_release()


defs = Definitions(jobs=[succeeds, fails, loses_its_worker, waits])
