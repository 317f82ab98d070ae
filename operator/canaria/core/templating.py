"""Query templates: `{{variable}}` placeholders filled with the rollout's facts.

Only documented variables are allowed so that a typo is an error at admission time rather than a
query that silently matches nothing (which would read as "no data" during a rollout).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

TEMPLATE_VARIABLES: tuple[str, ...] = (
    "name",
    "namespace",
    "service",
    "version",
    "stableVersion",
    "canaryWeight",
    "interval",
    "role",
)

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def template_variables(template: str) -> list[str]:
    """Names used in a template, in order of appearance."""
    return _PLACEHOLDER.findall(template)


def _malformed(template: str) -> list[str]:
    """Every "{{" that does not open a whole `{{variable}}` (PromQL itself never writes "{{"), as the CRD's
    CEL rule sees it, so that the operator and the API server reject the same queries."""
    found, pos = [], 0
    while (start := template.find("{{", pos)) >= 0:
        match = _PLACEHOLDER.match(template, start)
        if match:
            pos = match.end()
            continue
        close = template.find("}}", start + 2)
        found.append(template[start : close + 2] if 0 <= close < start + 40 else template[start : start + 20])
        pos = start + 2
    return found


def check_template(template: str) -> None:
    """Raise ValueError naming every variable that is not documented, and every malformed placeholder."""
    unknown = sorted({v for v in template_variables(template) if v not in TEMPLATE_VARIABLES})
    if unknown:
        raise ValueError(
            f"unknown template variable(s) {', '.join(unknown)}; allowed: {', '.join(TEMPLATE_VARIABLES)}"
        )
    malformed = _malformed(template)
    if malformed:
        raise ValueError(
            f"malformed placeholder(s) {', '.join(malformed)}: write {{{{variable}}}} with one of "
            f"{', '.join(TEMPLATE_VARIABLES)}"
        )


def render(template: str, variables: Mapping[str, object]) -> str:
    """Fill every placeholder; a variable missing from `variables` is an error, never an empty string."""
    check_template(template)

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            raise ValueError(f"template variable {name!r} has no value here")
        return str(variables[name])

    return _PLACEHOLDER.sub(substitute, template)


def comparison_variables(variables: Mapping[str, object], against: str) -> dict[str, object]:
    """The other side of a comparison, same facts otherwise: the stable version, in its baseline
    Deployment (whose pods carry canaria.dev/role=baseline, so {{role}} is "baseline") or in the serving
    Deployment ({{role}} empty, as for the canary: in PromQL, role="" matches series without the label)."""
    role = "baseline" if against == "baseline" else ""
    return {**variables, "version": variables["stableVersion"], "role": role}
