"""The per-phase gauge follows each object from phase to phase and forgets a deleted one."""

from __future__ import annotations

from canaria.kube import telemetry


def _gauge() -> dict[str, float]:
    return {s.labels["phase"]: s.value for s in telemetry.ROLLOUTS.collect()[0].samples}


def test_rollouts_by_phase_move_with_each_object() -> None:
    before = _gauge()

    def delta() -> dict[str, float]:
        now = _gauge()
        return {k: now[k] - before.get(k, 0.0) for k in now if now[k] != before.get(k, 0.0)}

    telemetry.record_phase("t-gauge", "a", "Progressing")
    telemetry.record_phase("t-gauge", "b", "Progressing")
    telemetry.record_phase("t-gauge", "a", "Progressing")  # unchanged: counted once
    assert delta() == {"Progressing": 2.0}
    telemetry.record_phase("t-gauge", "a", "Healthy")
    assert delta() == {"Progressing": 1.0, "Healthy": 1.0}
    telemetry.record_phase("t-gauge", "b", None)
    telemetry.record_phase("t-gauge", "b", None)  # gone twice: forgotten once
    telemetry.record_phase("t-gauge", "a", None)
    assert delta() == {}
