"""What a failed in-process Dagster run says, for assertion messages: each failed step's own words (a
Failure's description, e.g. the trainer's last log lines, or the error and its cause), not just "step
failed"."""

from __future__ import annotations


def failure_messages(result) -> list[str]:
    messages = []
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        data = event.step_failure_data
        described = data.user_failure_data.description if data.user_failure_data else None
        messages.append(f"{event.step_key}: {described or data.error.to_string()}")
    return messages or [e.message for e in result.all_events if e.is_failure]
