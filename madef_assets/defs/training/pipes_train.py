"""Runs `llamafactory-cli train` inside the training environment and streams its log to Dagster.

Started by the `finetuned_checkpoint` asset through Dagster Pipes with the training environment's
Python; needs only `dagster-pipes` there, nothing from madef.
"""

import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from dagster_pipes import open_dagster_pipes

PROGRESS_BAR_MARKERS = ("it/s]", "s/it]")


def main() -> None:
    with open_dagster_pipes() as pipes:
        config = pipes.get_extra("config_path")
        cli = str(Path(sys.executable).with_name("llamafactory-cli"))
        pipes.log.info(f"starting: {cli} train {config}")
        started = time.monotonic()
        tail: deque[str] = deque(maxlen=40)
        process = subprocess.Popen(
            [cli, "train", config], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        for line in process.stdout:
            line = line.rstrip()
            if not line:
                continue
            tail.append(line)
            if not any(marker in line for marker in PROGRESS_BAR_MARKERS):
                pipes.log.info(line[:2000])
        code = process.wait()
        # The asset decides what a non-zero exit means; it gets the code and the last lines of the log.
        pipes.report_custom_message(
            {"exit_code": code, "wall_seconds": round(time.monotonic() - started, 1), "tail": list(tail)}
        )


if __name__ == "__main__":
    main()
