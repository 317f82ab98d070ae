"""Fault injection: rollouts good and bad while the operator is SIGKILLed at random (seeded) moments.

Every rollout must end in the right phase with exactly the right Deployments, and every history entry
must have exactly one Event (the status is written before the Events are posted: a kill in between must
not lose one). The seed and the kill schedule are printed on failure.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from canaria.kube.cluster import Cluster
from canaria.kube.reconciler import Reconciler, Settings
from canaria.kube.workloads import VERSION_LABEL
from canaria.sandbox.controlplane import ControlPlane
from canaria.sandbox.kubelet import Kubelet
from canaria.sandbox.processes import OperatorProcess

from .harness import ModelDeployments, model_deployment

SEED = 1414
OBJECTS = 7
ROUNDS = ("v1", "v2", "v3")  # v1 a first deployment, then two canary rollouts: 21 rollouts in all
KILLS_PER_ROUND = 4


class Killer(threading.Thread):
    """SIGKILLs the operator at a seeded random moment once it is at work (its daemons running), and
    starts it again: `allow(n)` more kills, so that each round of rollouts gets its share and then
    finishes (a restart costs an operator start-up)."""

    def __init__(self, start: Callable[[], OperatorProcess], rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.start_operator, self.rng = start, rng
        self.operator = start()
        self.done = threading.Event()
        self.budget = threading.Semaphore(0)
        self.kills: list[float] = []
        self.began = time.monotonic()

    def allow(self, kills: int) -> None:
        for _ in range(kills):
            self.budget.release()

    def _at_work(self, offset: int) -> bool:
        """Wait until the log, past `offset`, shows a rollout daemon running (False: the test is over)."""
        while not self.done.is_set():
            with self.operator.log_path.open("rb") as log:
                log.seek(offset)
                if b"Daemon 'drive_rollout' is invoked." in log.read():
                    return True
            time.sleep(0.05)
        return False

    def run(self) -> None:
        offset = 0
        while self._at_work(offset):
            while not self.budget.acquire(timeout=0.1):
                if self.done.is_set():
                    return
            if self.done.wait(self.rng.uniform(0.2, 3.0)):
                return
            self.operator.kill()
            self.kills.append(round(time.monotonic() - self.began, 2))
            offset = self.operator.log_path.stat().st_size
            self.operator = self.start_operator()


def _settled(mds: ModelDeployments, name: str, stable: str, bad: bool) -> bool:
    status = mds.status(name)
    phase = "Reverted" if bad else "Healthy"
    desired = (status.get("stable") or {}).get("version")
    history = status.get("history") or []
    return (
        status.get("phase") == phase
        and desired == stable
        and mds.replicas(name) == {stable: 2}
        and bool(history)
        and status.get("eventsThrough") == history[-1]["seq"]
    )


def test_rollouts_survive_random_kills_with_every_event_posted_once(
    mds: ModelDeployments, start_operator: Callable[..., OperatorProcess], kubelet: Kubelet
) -> None:
    rng = random.Random(SEED)
    kubelet.never_ready = lambda pod: (pod.metadata.labels or {}).get(VERSION_LABEL, "").endswith("bad")
    names = [f"crash-{i}" for i in range(OBJECTS)]
    killer = Killer(start_operator, rng)
    plan: dict[str, list[str]] = {name: [] for name in names}
    stable = dict.fromkeys(names, "")
    began = time.monotonic()
    killer.start()
    try:
        for version in ROUNDS:
            killer.allow(KILLS_PER_ROUND)
            for name in names:
                bad = version != "v1" and rng.random() < 0.5
                release = f"{version}bad" if bad else version
                plan[name].append(release)
                if version == "v1":
                    body = model_deployment(
                        name,
                        release,
                        replicas=2,
                        steps=[{"weight": 50, "pause": "1s"}, {"weight": 100}],
                        progress_deadline="8s",
                    )
                    mds.create(body)
                else:
                    mds.set_version(name, release, reason=f"round {version}")
                if not bad:
                    stable[name] = release
            deadline = time.monotonic() + 120  # a bound for failure; ~20 s on an idle machine
            waiting = list(names)
            while waiting and time.monotonic() < deadline:
                waiting = [n for n in names if not _settled(mds, n, stable[n], plan[n][-1].endswith("bad"))]
                time.sleep(0.3)
            assert not waiting, (
                f"seed {SEED}: after round {version}, not settled: "
                + "; ".join(
                    f"{n} plan {plan[n]}: {_summary(mds.status(n))} {mds.replicas(n)}" for n in waiting
                )
                + f"; kills at {killer.kills}"
            )
    finally:
        killer.done.set()
        killer.join()
    lost, repeated = _check_events(mds, names)
    rollouts = OBJECTS * len(ROUNDS)
    bad = sum(release.endswith("bad") for releases in plan.values() for release in releases)
    print(
        f"crash test (seed {SEED}): {rollouts} rollouts ({bad} bad), {len(killer.kills)} kills, "
        f"{lost} lost Events, {repeated} repeated, {time.monotonic() - began:.0f}s"
    )
    assert len(killer.kills) >= 2 * KILLS_PER_ROUND, f"seed {SEED}: only {len(killer.kills)} kills"
    assert (lost, repeated) == (0, 0), f"seed {SEED}: kills at {killer.kills}"


def _summary(status: dict[str, Any]) -> str:
    history = [f"{h['seq']}:{h['reason']}" for h in status.get("history") or []]
    return (
        f"phase {status.get('phase')} stable {(status.get('stable') or {}).get('version')} history {history}"
    )


def _check_events(mds: ModelDeployments, names: list[str]) -> tuple[int, int]:
    """(history entries without their Event, Events posted more than once or for no entry)."""
    lost = repeated = 0
    for name in names:
        md = mds.get(name)
        prefix = f"{name}.{md['metadata']['uid'][:8]}."
        posted: dict[str, list[Any]] = {}
        for event in mds.events(name):
            key = event.metadata.name.removeprefix(prefix)
            if key.isdigit():
                posted.setdefault(key, []).append(event)
        history = md["status"]["history"]
        for entry in history:
            events = posted.pop(str(entry["seq"]), [])
            lost += not any(e.reason == entry["reason"] for e in events)
            repeated += sum(e.count or 1 for e in events) - 1 if events else 0
        repeated += len(posted)  # an Event whose transition never reached the history
    return lost, repeated


class Killed(BaseException):
    """The process dying at this exact point (nothing in the operator catches a BaseException)."""


def test_an_event_lost_between_the_status_write_and_its_post_is_posted_by_the_next_reconcile(
    mds: ModelDeployments, control_plane: ControlPlane, kubelet: Kubelet
) -> None:
    """The narrow window random kills rarely hit, hit on purpose: the status (with its new history
    entry) is written, then the operator dies before posting the Event."""
    mds.create(model_deployment("fraud", "v1"))
    api = control_plane.api_client()
    try:
        dying = Cluster(api)

        def die(*_: Any, **__: Any) -> None:
            raise Killed

        dying.post_event = die  # type: ignore[method-assign]
        with pytest.raises(Killed):
            Reconciler(dying, Settings()).reconcile(mds.namespace, "fraud")
        status = mds.status("fraud")
        assert [h["reason"] for h in status["history"]] == [
            "RolloutStarted"
        ] and "eventsThrough" not in status
        assert mds.events("fraud") == []
        for _ in range(3):  # the restarted operator, reconciling again and again
            Reconciler(Cluster(api), Settings()).reconcile(mds.namespace, "fraud")
        events = mds.events("fraud")
        assert [(e.reason, e.count) for e in events][:1] == [("RolloutStarted", 1)]
        assert "initial release" in events[0].message  # the change reason, rebuilt from the history entry
        status = mds.status("fraud")
        assert status["eventsThrough"] == status["history"][-1]["seq"]
        assert [e.reason for e in events] == [h["reason"] for h in status["history"]]
    finally:
        api.close()
