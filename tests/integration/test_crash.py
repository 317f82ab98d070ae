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

from canaria.kube.workloads import VERSION_LABEL
from canaria.sandbox.kubelet import Kubelet
from canaria.sandbox.processes import OperatorProcess

from .harness import ModelDeployments, model_deployment

SEED = 1414
OBJECTS = 8
ROUNDS = ("v1", "v2", "v3")  # v1 a first deployment, then two canary rollouts: 24 rollouts in all


class Killer(threading.Thread):
    """SIGKILLs the operator at seeded random intervals and starts it again, until stopped."""

    def __init__(self, start: Callable[[], OperatorProcess], rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.start_operator, self.rng = start, rng
        self.operator = start()
        self.done = threading.Event()
        self.kills: list[float] = []
        self.began = time.monotonic()

    def run(self) -> None:
        while not self.done.wait(self.rng.uniform(0.7, 3.5)):
            self.operator.kill()
            self.kills.append(round(time.monotonic() - self.began, 2))
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
                        progress_deadline="4s",
                    )
                    mds.create(body)
                else:
                    mds.set_version(name, release, reason=f"round {version}")
                if not bad:
                    stable[name] = release
            deadline = time.monotonic() + 40
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
    assert len(killer.kills) >= 10, f"seed {SEED}: only {len(killer.kills)} kills"
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
