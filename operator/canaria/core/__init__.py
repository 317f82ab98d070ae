"""The pure core: API models, the rollout engine and its actions, verdicts, commands, durations, templates.

Nothing here does I/O or imports from the other layers (`kube`, `providers`, `routers`, `cli`, `sandbox`),
so every rule is testable with plain values and an explicit clock.
"""
