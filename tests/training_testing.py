"""What the training-engine tests share: a step timer that records when the engine starts and stops timing."""
from __future__ import annotations

from retnet_bench.suites.training import launch


def record_step_timer(monkeypatch, events: list[str]) -> None:
    """Make the engine's StepTimer append "start" / "stop" to `events` around each timed step, so a test can check
    that a reader (NVML memory, the energy counter) never runs inside one."""

    class Timer(launch.StepTimer):
        def start(self) -> None:
            events.append("start")
            super().start()

        def stop(self) -> None:
            super().stop()
            events.append("stop")

    monkeypatch.setattr(launch, "StepTimer", Timer)
