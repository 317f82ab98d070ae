"""The ModelDeployment API: what users write (spec) and what Canaria reports (status).

These pydantic models are the single source of truth: the CRD's openAPIV3Schema (with its descriptions
and CEL rules) is generated from them by `canaria.kube.crd`, and the operator parses every resource through
them, so the API server and the operator reject the same input with the same words.
"""

from __future__ import annotations

import itertools
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from canaria.core.durations import DURATION_PATTERN, parse_duration
from canaria.core.templating import TEMPLATE_VARIABLES, check_template

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
HISTORY_LIMIT = 50
#: Bytes the history may take in status (its text fields, estimated): with the clipped fields below the
#: whole object stays far below etcd's request limit whatever the user writes.
HISTORY_BYTES = 32 * 1024
#: Free text copied into status (a change or command reason, a message) is clipped to this; the Event
#: that records the transition carries the longer text.
CLIP = 256
MAX_MESSAGE = 1024
#: The longest duration any field takes: 30 days, far beyond any sane step, bake or deadline, and well
#: inside the int32 seconds of a Deployment's progressDeadlineSeconds.
MAX_DURATION_SECONDS = 30 * 86400
#: A ModelDeployment's name is a DNS-1035 label (it names the Service) short enough that
#: `<name>-<version>` (version at most 40) stays a valid object name everywhere.
MAX_NAME = 40
DNS_1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
MAX_STEPS = 20
MAX_METRICS = 20
# Load bounds per ModelDeployment the API server checks (issue 23): analysis no more often than this, and
# no query allowed to hold Prometheus (and an operator worker) longer than that.
MIN_ANALYSIS_INTERVAL = "1s"
MAX_QUERY_TIMEOUT = "1m"
MAX_HEADER_MATCHES = 16  # Gateway API's limit on the header matches of one HTTPRoute match
HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$"  # RFC 7230 token, as Gateway API's HTTPHeaderName

# A query may contain "{" (PromQL label matchers) but every "{{" must open a documented variable.
# RE2 has no look-ahead, so the rule is spelled as "each character is plain, a lone brace, or a whole
# placeholder"; the operator's own check (canaria.core.templating) names the offending variable.
QUERY_TEMPLATE_RE = r"^([^{]|\{([^{]|$)|\{\{\s*(" + "|".join(TEMPLATE_VARIABLES) + r")\s*\}\})*$"
PLACEHOLDER_RE = r"^\{\{\s*(" + "|".join(TEMPLATE_VARIABLES) + r")\s*\}\}$"


def cel_regex(pattern: str) -> str:
    """A regular expression as a single-quoted CEL string literal."""
    return "'" + pattern.replace("\\", "\\\\") + "'"


# The API server names the offending placeholder itself: with every documented variable removed (CEL has
# no regular-expression replace, and a `filter` over all placeholders costs more than the CRD budget), the
# first "{{..." left is the culprit.
def unknown_variable_message(field: str) -> str:
    """The messageExpression of a query field's template rule."""
    return (
        f"'{field} uses a template variable that is not one of "
        + ", ".join(TEMPLATE_VARIABLES)
        + f": ' + self.{field}"
        + "".join(f".replace('{{{{{v}}}}}', '').replace('{{{{ {v} }}}}', '')" for v in TEMPLATE_VARIABLES)
        + f".find({cel_regex(r'[{][{][^{}]{0,40}([}][}])?')})"
    )


def clip(text: str, limit: int = CLIP) -> str:
    """`text`, cut to `limit` characters with a visible mark when it was longer."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_duration(value: str) -> str:
    if parse_duration(value) > MAX_DURATION_SECONDS:
        raise ValueError(f"duration {value!r} is longer than the maximum of 30d")
    return value


# The API server's side of the maximum: sum the parts of the duration in CEL (the pattern has already
# checked its shape). Kubernetes' CEL has `findAll`, `double()` and the list `sum()`.
_DURATION_SUM = (
    "self.findAll('[0-9]+(\\\\.[0-9]+)?(ms|s|m|h|d)').map(p, "
    "p.endsWith('ms') ? double(p.substring(0, p.size() - 2)) / 1000.0 : "
    "p.endsWith('s') ? double(p.substring(0, p.size() - 1)) : "
    "p.endsWith('m') ? double(p.substring(0, p.size() - 1)) * 60.0 : "
    "p.endsWith('h') ? double(p.substring(0, p.size() - 1)) * 3600.0 : "
    "double(p.substring(0, p.size() - 1)) * 86400.0).sum()"
)


_LONGEST_DURATION = {"rule": f"{_DURATION_SUM} <= {MAX_DURATION_SECONDS}.0", "message": "must be at most 30d"}


def _check_dns_label(value: str) -> str:
    if not re.fullmatch(DNS_LABEL, value):
        raise ValueError(
            f"{value!r} is not a DNS label: lower-case letters, digits and '-', starting and ending "
            "with a letter or digit"
        )
    return value


# The schema carries the patterns (the API server enforces them); the validators give the operator's
# own, friendlier message instead of a regular expression.
Duration = Annotated[
    str,
    Field(
        max_length=32,
        json_schema_extra={
            "pattern": DURATION_PATTERN,
            "x-kubernetes-validations": [_LONGEST_DURATION],
        },
    ),
    AfterValidator(_check_duration),
]
DnsLabel = Annotated[
    str, Field(max_length=63, json_schema_extra={"pattern": DNS_LABEL}), AfterValidator(_check_dns_label)
]
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def _check_dns_subdomain(value: str) -> str:
    if not re.fullmatch(DNS_SUBDOMAIN, value):
        raise ValueError(f"{value!r} is not a DNS subdomain: lower-case DNS labels joined by '.'")
    return value


DnsSubdomain = Annotated[
    str,
    Field(min_length=1, max_length=253, json_schema_extra={"pattern": DNS_SUBDOMAIN}),
    AfterValidator(_check_dns_subdomain),
]
# A version is a DNS label short enough to leave room for the model name in `<name>-<version>`. (A
# field-level max_length on a DnsLabel field is overridden by the annotation's 63, hence its own type.)
VersionLabel = Annotated[
    str, Field(max_length=40, json_schema_extra={"pattern": DNS_LABEL}), AfterValidator(_check_dns_label)
]


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry; fieldPath makes the API server name the field at fault."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


class CamelModel(BaseModel):
    """Python names in snake_case, the resource in camelCase, unknown fields rejected (typos are errors)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def dump(self) -> dict[str, Any]:
        """The resource form: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# --------------------------------------------------------------------------------------------- spec


class Lineage(CamelModel):
    """Where a model version comes from, so that "what is serving now" has a full answer."""

    code_commit: str | None = Field(None, max_length=CLIP, description="Commit of the training code.")
    dataset: str | None = Field(
        None, max_length=CLIP, description="Dataset or snapshot the version was trained on."
    )
    training_run: str | None = Field(None, max_length=CLIP, description="Training run or experiment ID.")
    feature_schema: str | None = Field(
        None, max_length=CLIP, description="Version of the feature schema it expects."
    )


class ModelInfo(CamelModel):
    """The model version that should serve; a new `version` starts a rollout."""

    name: DnsLabel = Field(description="Model name (a DNS label).")
    version: VersionLabel = Field(
        description="Immutable model version ID (a DNS label); changing it starts a canary rollout.",
    )
    uri: str = Field(
        description="Where the server loads the model from; injected as MODEL_URI.",
        min_length=1,
        max_length=2048,
    )
    lineage: Lineage | None = Field(None, description="Code, data and run this version was built from.")
    evaluation: dict[str, float] | None = Field(
        None,
        max_length=MAX_METRICS * 5,
        description="Offline evaluation metrics of this version (e.g. auc), checked by gates.",
        json_schema_extra=validations(
            cel("self.all(k, k.size() <= 63)", "evaluation keys must be at most 63 characters")
        ),
    )
    owner: str | None = Field(
        None, max_length=CLIP, description="Who decides during an incident; named in Warning Events."
    )
    intended_use: str | None = Field(
        None, max_length=MAX_MESSAGE, description="What this model is meant to be used for."
    )

    @field_validator("evaluation")
    @classmethod
    def _short_keys(cls, evaluation: dict[str, float] | None) -> dict[str, float] | None:
        long = [k for k in evaluation or {} if len(k) > 63]
        if long:
            raise ValueError(f"evaluation keys must be at most 63 characters: {clip(long[0], 80)!r}")
        return evaluation


class ServiceSpec(CamelModel):
    """The Service in front of every version of the model."""

    port: int = Field(80, ge=1, le=65535, description="Port the Service exposes.")
    target_port: int = Field(8080, ge=1, le=65535, description="Container port of the model server.")


THRESHOLD_RULES = (
    cel("has(self.min) || has(self.max)", "set min, max or both"),
    cel("!has(self.min) || !has(self.max) || self.min <= self.max", "min must not exceed max"),
)


class Threshold(CamelModel):
    """A bound on a number: at least one of min and max."""

    model_config = ConfigDict(json_schema_extra=validations(*THRESHOLD_RULES))

    min: float | None = Field(None, description="Lowest acceptable value (inclusive).")
    max: float | None = Field(None, description="Highest acceptable value (inclusive).")

    @model_validator(mode="after")
    def _bounds(self) -> Threshold:
        if self.min is None and self.max is None:
            raise ValueError("set min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self

    def verdict(self, value: float) -> bool:
        """True when value lies inside the bounds."""
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def describe(self) -> str:
        return describe_bounds(self.min, self.max)


def describe_bounds(low: float | None, high: float | None) -> str:
    """ ">= 0.9", "<= 0.01" or ">= 0.1 and <= 0.2" (branches, not a join: it runs at every decision)."""
    if low is None:
        return "" if high is None else f"<= {high:g}"
    return f">= {low:g}" if high is None else f">= {low:g} and <= {high:g}"


class Gate(Threshold):
    """A pre-deploy check on the candidate's offline evaluation: it must hold before traffic moves.

    min/max bound the candidate's value; minDelta/maxDelta bound its difference from the value recorded
    for the version serving now (candidate - serving), so a candidate must beat production."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.min) || has(self.max) || has(self.minDelta) || has(self.maxDelta)",
                "set min, max, minDelta or maxDelta",
            ),
            THRESHOLD_RULES[1],
            cel(
                "!has(self.minDelta) || !has(self.maxDelta) || self.minDelta <= self.maxDelta",
                "minDelta must not exceed maxDelta",
            ),
        )
    )

    metric: str = Field(
        description="Key in spec.model.evaluation; a key may name a slice, <metric>@<slice>.",
        min_length=1,
        max_length=253,
    )
    min_delta: float | None = Field(
        None, description="Lowest acceptable (candidate - serving version's recorded value), e.g. 0 for auc."
    )
    max_delta: float | None = Field(
        None, description="Highest acceptable (candidate - serving version's recorded value), e.g. 10 for ms."
    )
    slices: bool | None = Field(
        None, description="Also hold every slice of the metric (keys <metric>@<slice>) to these bounds."
    )

    @model_validator(mode="after")
    def _bounds(self) -> Gate:
        if all(b is None for b in (self.min, self.max, self.min_delta, self.max_delta)):
            raise ValueError("set min, max, minDelta or maxDelta")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        if self.min_delta is not None and self.max_delta is not None and self.min_delta > self.max_delta:
            raise ValueError(f"minDelta ({self.min_delta}) must not exceed maxDelta ({self.max_delta})")
        return self


class HeaderMatch(CamelModel):
    """One request header a header-matched step requires (exact value, as Gateway API's `Exact` match)."""

    name: str = Field(
        min_length=1,
        max_length=256,
        description="Header name, e.g. x-canary.",
        json_schema_extra={"pattern": HEADER_NAME},
    )
    value: str = Field(min_length=1, max_length=4096, description="Exact value it must have.")

    @field_validator("name")
    @classmethod
    def _header_name(cls, name: str) -> str:
        if not re.fullmatch(HEADER_NAME, name):
            raise ValueError(f"{name!r} is not an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)")
        return name


class StepMatch(CamelModel):
    """Requests that reach the canary during a header-matched step (internal testers before any user)."""

    headers: list[HeaderMatch] = Field(
        min_length=1, max_length=MAX_HEADER_MATCHES, description="Every header must match (AND)."
    )


STEP_KIND_RULE = "[has(self.weight), has(self.mirror), has(self.match)].filter(x, x).size() == 1"
STEP_KIND_MESSAGE = "a step sets exactly one of weight, mirror or match"


class Step(CamelModel):
    """One canary stage, held for a pause or until a manual promote: a traffic weight, a shadow stage
    (`mirror`: the canary gets a copy of requests, callers only stable's answers) or a header-matched stage
    (`match`: only matching requests reach the canary). Shadow and header stages need a router that
    routes requests (spec.rollout.trafficRouting.gatewayAPI)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!(has(self.pause) && has(self.manual) && self.manual)",
                "a step waits for a pause duration or for a manual promote, not both",
            ),
            cel(STEP_KIND_RULE, STEP_KIND_MESSAGE),
        )
    )

    weight: int | None = Field(
        None,
        ge=1,
        le=100,
        description="Percent of callers on the canary (of replicas, with replica routing).",
    )
    mirror: int | None = Field(
        None,
        ge=1,
        le=100,
        description="Shadow stage: percent of requests copied to the canary; callers get stable's answers.",
    )
    match: StepMatch | None = Field(
        None, description="Header-matched stage: only these requests reach the canary."
    )
    pause: Duration | None = Field(
        None,
        description="How long the step holds once the canary is ready, e.g. 5m. "
        "Omit to advance after one passing analysis.",
    )
    manual: bool | None = Field(None, description="Hold the step until `canaria promote`.")

    @model_validator(mode="after")
    def _pause_or_manual(self) -> Step:
        if self.pause is not None and self.manual:
            raise ValueError("a step waits for a pause duration or for a manual promote, not both")
        if [self.weight, self.mirror, self.match].count(None) != 2:
            raise ValueError(STEP_KIND_MESSAGE)
        return self

    @property
    def pause_seconds(self) -> float:
        return parse_duration(self.pause) if self.pause else 0.0

    @property
    def live_weight(self) -> int:
        """Percent of callers answered by the canary: 0 in a shadow or header-matched stage."""
        return self.weight or 0


def _query_rule(field: str) -> dict[str, str]:
    """The CEL twin of check_template for one query field."""
    return {
        **cel(
            f"self.{field}.matches({cel_regex(QUERY_TEMPLATE_RE)})",
            f"{field} uses a template variable that is not one of: " + ", ".join(TEMPLATE_VARIABLES),
            f".{field}",
        ),
        "messageExpression": unknown_variable_message(field),
    }


class Comparison(CamelModel):
    """The canary's value against the stable version's or the baseline's, from the same query over the same
    window (rendered with the other's {{version}} and {{role}})."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("has(self.maxRatio) || has(self.maxDelta)", "set maxRatio, maxDelta or both")
        )
    )

    against: Literal["baseline", "stable"] = Field(
        description="baseline (needs rollout.baseline.enabled) or stable (the version serving)."
    )
    max_ratio: float | None = Field(None, ge=0, description="Highest acceptable canary / other, e.g. 1.1.")
    max_delta: float | None = Field(None, description="Highest acceptable canary - other.")

    @model_validator(mode="after")
    def _bound(self) -> Comparison:
        if self.max_ratio is None and self.max_delta is None:
            raise ValueError("set maxRatio, maxDelta or both")
        return self


class ProportionTest(CamelModel):
    """A rate of bad events (the metric's query counts them) compared by a one-sided two-proportion z-test:
    the run fails when the canary's rate is higher than the other's at the given confidence; below
    minSamples trials on either side it is Inconclusive, never Pass."""

    model_config = ConfigDict(json_schema_extra=validations(_query_rule("total")))

    against: Literal["baseline", "stable"] = Field(
        "baseline", description="baseline (needs rollout.baseline.enabled) or stable (the version serving)."
    )
    total: str = Field(
        min_length=1,
        max_length=4096,
        description="PromQL template counting all trials (e.g. requests) over the window; the metric's "
        "query counts the bad ones (e.g. 5xx) over the same window.",
    )
    confidence: float = Field(
        0.95, ge=0.5, le=0.9999, description="Confidence that the canary is worse, e.g. 0.95."
    )
    min_samples: int = Field(
        1000, ge=1, description="Trials needed on each side before the test may pass or fail."
    )

    @field_validator("total")
    @classmethod
    def _known_variables(cls, query: str) -> str:
        check_template(query)
        return query


class Metric(Threshold):
    """A Prometheus health query checked at every analysis interval."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.min) || has(self.max) || has(self.compare) || has(self.proportionTest)",
                "set min, max, compare or proportionTest",
            ),
            THRESHOLD_RULES[1],
            cel(
                "!has(self.compare) || !has(self.proportionTest)",
                "a metric compares values (compare) or rates (proportionTest), not both",
            ),
            _query_rule("query"),
        )
    )

    name: DnsLabel = Field(description="Metric name, unique in the analysis.")
    query: str = Field(
        min_length=1,
        max_length=4096,
        description="PromQL template; may use {{name}}, {{namespace}}, {{service}}, {{version}}, "
        "{{stableVersion}}, {{canaryWeight}}, {{interval}}, {{role}} (baseline when rendered for the "
        "baseline, else empty).",
    )
    aggregate: Literal["sum", "avg", "min", "max"] | None = Field(
        None, description="How to reduce several series to one value; without it several series are an error."
    )
    dry_run: bool | None = Field(None, description="Record the result but never gate on it.")
    compare: Comparison | None = Field(
        None, description="Also compare the canary's value with the stable version's or the baseline's."
    )
    proportion_test: ProportionTest | None = Field(
        None, description="The query counts bad events: test the canary's rate against the other's."
    )

    @field_validator("query")
    @classmethod
    def _known_variables(cls, query: str) -> str:
        check_template(query)
        return query

    @model_validator(mode="after")
    def _bounds(self) -> Metric:
        if self.compare is None and self.proportion_test is None and self.min is None and self.max is None:
            raise ValueError("set min, max, compare or proportionTest")
        if self.compare is not None and self.proportion_test is not None:
            raise ValueError("a metric compares values (compare) or rates (proportionTest), not both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self

    @property
    def queries_per_run(self) -> int:
        """Prometheus queries one run of this metric makes: a comparison runs them for both sides, and a
        proportion test counts events and trials."""
        return (2 if self.against is not None else 1) * (2 if self.proportion_test is not None else 1)

    @property
    def against(self) -> Literal["baseline", "stable"] | None:
        """Whose value this metric is compared with, if any."""
        other = self.compare or self.proportion_test
        return other.against if other is not None else None


class Analysis(CamelModel):
    """How often the canary is checked and how many bad checks are tolerated."""

    interval: Duration = Field(
        "1m",
        description=f"Time between analysis runs; at least {MIN_ANALYSIS_INTERVAL}.",
        json_schema_extra=validations(
            _LONGEST_DURATION,  # restated: a field's own validations replace its type's
            cel(
                f"{_DURATION_SUM} >= {parse_duration(MIN_ANALYSIS_INTERVAL)!r}",
                f"interval must be at least {MIN_ANALYSIS_INTERVAL}",
            ),
        ),
    )
    failure_limit: int = Field(
        0, ge=0, le=100, description="Failed runs tolerated in a row; one more reverts the canary."
    )
    inconclusive_limit: int = Field(
        2, ge=0, le=100, description="Inconclusive runs (no data, NaN, Prometheus down) tolerated in a row."
    )
    on_inconclusive: Literal["revert", "pause"] = Field(
        "revert", description="Past the inconclusive limit: revert, or pause for a person. Never promotes."
    )
    metrics: list[Metric] = Field(
        default_factory=list,
        max_length=MAX_METRICS,
        description="Health queries.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @field_validator("metrics")
    @classmethod
    def _unique_names(cls, metrics: list[Metric]) -> list[Metric]:
        names = [m.name for m in metrics]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate metric name(s): {', '.join(duplicates)}")
        return metrics

    @field_validator("interval")
    @classmethod
    def _not_too_often(cls, interval: str) -> str:
        if parse_duration(interval) < parse_duration(MIN_ANALYSIS_INTERVAL):
            raise ValueError(f"interval must be at least {MIN_ANALYSIS_INTERVAL}, got {interval}")
        return interval

    @property
    def interval_seconds(self) -> float:
        return parse_duration(self.interval)


class ReplicaRouting(CamelModel):
    """Route by replica ratio: one Service over every version, weight = share of replicas."""


class GatewayAPIRouting(CamelModel):
    """Route by a Gateway API HTTPRoute the user owns: Canaria sets exact weights on the backendRefs of the
    rule that sends to the model's Service, one Service per version (`<name>-<version>`)."""

    http_route: DnsSubdomain = Field(description="Name of the HTTPRoute, in the ModelDeployment's namespace.")
    canary_replicas: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Canary replicas at every step; default: its share of spec.replicas, at least one.",
    )


class TrafficRouting(CamelModel):
    """How traffic is split between versions: one router at most."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel("!(has(self.replicas) && has(self.gatewayAPI))", "set one router: replicas or gatewayAPI")
        )
    )

    replicas: ReplicaRouting | None = Field(
        None, description="Split by replica ratio behind one Service (the default, needs no mesh)."
    )
    gateway_api: GatewayAPIRouting | None = Field(
        None,
        alias="gatewayAPI",
        description="Exact weights, shadow and header-matched stages through a Gateway API HTTPRoute.",
    )

    @model_validator(mode="after")
    def _one_router(self) -> TrafficRouting:
        if self.replicas is not None and self.gateway_api is not None:
            raise ValueError("set one router: replicas or gatewayAPI")
        return self

    @property
    def router(self) -> str:
        """The router's name, as spelled in the spec."""
        return "gatewayAPI" if self.gateway_api is not None else "replicas"

    @property
    def exact(self) -> bool:
        """Whether the router splits requests itself: then a weight needs no matching replica ratio, the
        stable version stays full until promotion, and shadow and header stages are possible."""
        return self.gateway_api is not None

    @property
    def canary_replicas(self) -> int | None:
        """An explicit canary size, where the router allows one."""
        return self.gateway_api.canary_replicas if self.gateway_api is not None else None


class KeepPrevious(CamelModel):
    """The previous version kept ready, with no traffic, after a promotion: a rollback moves traffic, not
    pods."""

    for_: Duration = Field(
        alias="for",
        description="How long after the promotion the previous version stays ready (also for the whole "
        "bake, if that is longer); then it is scaled away.",
    )
    replicas: int | None = Field(
        None,
        ge=0,
        le=1000,
        description="Replicas kept ready; default: spec.replicas (the full count). 0 keeps nothing warm.",
    )

    @property
    def for_seconds(self) -> float:
        return parse_duration(self.for_)


def _check_template(template: dict[str, Any]) -> dict[str, Any]:
    """The shape the Deployment builder relies on (the CRD leaves the pod template to the apps API,
    which the operator asks by a dry run; this only keeps the builder from tripping over it)."""
    meta = template.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise ValueError("template.metadata must be an object")
    if meta is not None and not isinstance(meta.get("labels") or {}, dict):
        raise ValueError("template.metadata.labels must be an object")
    pod = template.get("spec")
    if not isinstance(pod, dict):
        raise ValueError("template.spec must be an object")
    containers = pod.get("containers")
    if not isinstance(containers, list) or not containers:
        raise ValueError("template.spec.containers must list at least one container")
    for i, container in enumerate(containers):
        if not isinstance(container, dict):
            raise ValueError(f"template.spec.containers[{i}] must be an object, not {container!r:.40}")
        env = container.get("env")
        if env is not None and not isinstance(env, list):
            raise ValueError(f"template.spec.containers[{i}].env must be a list")
        for j, var in enumerate(env or []):
            if not isinstance(var, dict):
                raise ValueError(
                    f"template.spec.containers[{i}].env[{j}] must be an object with name and value, "
                    f"not {var!r:.40}"
                )
    return template


PodTemplate = Annotated[dict[str, Any], AfterValidator(_check_template)]


class SmokeTest(CamelModel):
    """A test Job run against one version's own Service (its URL in TARGET_URL, with MODEL_NAME,
    MODEL_VERSION and MODEL_URI): before a canary gets any traffic (a failure refuses the version), and
    after a revert or rollback against the restored version (the verdict is the RollbackVerified
    condition)."""

    template: PodTemplate = Field(
        description="PodTemplateSpec of the test (image, command); exit code 0 passes. Runs once "
        "(restartPolicy Never unless set, no retries); the tail of its output is kept as the verdict's log.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    timeout: Duration = Field("5m", description="The Job's activeDeadlineSeconds: longer is a failure.")
    cleanup_after: Duration = Field(
        "1h", description="The Job's ttlSecondsAfterFinished: how long a finished test is kept to inspect."
    )

    @property
    def timeout_seconds(self) -> float:
        return parse_duration(self.timeout)

    @property
    def cleanup_after_seconds(self) -> float:
        return parse_duration(self.cleanup_after)


class Baseline(CamelModel):
    """A fresh Deployment of the stable version beside the canary, sized like it, so that comparisons are
    like for like (no warm-cache or long-uptime bias); it exists only while a canary runs."""

    enabled: bool = Field(False, description="Run a baseline beside every canary.")


def _default_steps() -> list[Step]:
    return [Step(weight=100)]


class Rollout(CamelModel):
    """How a new version earns its traffic."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "(has(self.baseline) && has(self.baseline.enabled) && self.baseline.enabled) "
                "|| !has(self.analysis) || !has(self.analysis.metrics) || !self.analysis.metrics.exists(m, "
                "(has(m.compare) && m.compare.against == 'baseline') || (has(m.proportionTest) && "
                "(!has(m.proportionTest.against) || m.proportionTest.against == 'baseline')))",
                "a metric compares against the baseline: set baseline.enabled",
                ".baseline",
            ),
            cel(
                "(has(self.trafficRouting) && has(self.trafficRouting.gatewayAPI)) || !has(self.steps) "
                "|| self.steps.all(s, has(s.weight))",
                "mirror and match steps need trafficRouting.gatewayAPI (replica routing splits by weight)",
                ".steps",
            ),
        )
    )

    steps: list[Step] = Field(
        default_factory=_default_steps,
        min_length=1,
        max_length=MAX_STEPS,
        description="Canary stages with strictly increasing weights; after the last, the canary is promoted.",
        json_schema_extra=validations(
            cel(
                "self.filter(s, has(s.weight)).map(s, s.weight).isSorted() && self.filter(s, has(s.weight))"
                ".all(a, self.filter(s, has(s.weight)).exists_one(b, b.weight == a.weight))",
                "step weights must be strictly increasing",
            )
        ),
    )
    analysis: Analysis = Field(default_factory=Analysis, description="Health checks of the canary.")
    bake: Duration | None = Field(
        None,
        description="After promotion, keep analysing this long; a failure reverts to the previous version.",
    )
    ready_while_baking: bool = Field(
        False,
        description="Report Ready (what `kubectl wait --for=condition=Ready`, Flux and Argo CD wait for) as "
        "soon as the new version serves at full weight, before its bake ends; by default Ready waits for "
        "the bake to pass.",
    )
    progress_deadline: Duration = Field(
        "10m", description="How long a canary may take to become ready at a step before it is reverted."
    )
    traffic_routing: TrafficRouting | None = Field(None, description="Traffic split; default: replica ratio.")
    keep_previous: KeepPrevious | None = Field(
        None,
        description="Keep the previous version ready, with no traffic, for a window after each promotion "
        "(during a bake it is kept ready at spec.replicas unless this says otherwise).",
    )
    baseline: Baseline | None = Field(
        None, description="A baseline Deployment of the stable version beside the canary, for comparisons."
    )
    smoke_test: SmokeTest | None = Field(
        None,
        description="A test Job against a version's own Service, before its canary gets traffic and after a "
        "revert or rollback to it.",
    )

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[Step]) -> list[Step]:
        weights = [s.weight for s in steps if s.weight is not None]
        for before, after in itertools.pairwise(weights):
            if after <= before:
                raise ValueError(f"step weights must be strictly increasing, got {weights}")
        return steps

    @model_validator(mode="after")
    def _baseline_for_comparisons(self) -> Rollout:
        wanting = [m.name for m in self.analysis.metrics if m.against == "baseline"]
        if wanting and not self.baseline_enabled:
            raise ValueError(
                f"metric(s) {', '.join(wanting)} compare against the baseline: set baseline.enabled"
            )
        return self

    @property
    def baseline_enabled(self) -> bool:
        return self.baseline is not None and self.baseline.enabled

    @property
    def bake_seconds(self) -> float:
        return parse_duration(self.bake) if self.bake else 0.0

    @property
    def progress_deadline_seconds(self) -> float:
        return parse_duration(self.progress_deadline)

    @model_validator(mode="after")
    def _router_can_do_steps(self) -> Rollout:
        if not self.routing.exact:
            kinds = [i + 1 for i, s in enumerate(self.steps) if s.weight is None]
            if kinds:
                raise ValueError(
                    f"step(s) {kinds}: mirror and match steps need trafficRouting.gatewayAPI "
                    "(replica routing can only split by weight)"
                )
        return self

    @property
    def routing(self) -> TrafficRouting:
        return self.traffic_routing or TrafficRouting()


class SecretKeyRef(CamelModel):
    """A key of a Secret in the ModelDeployment's namespace."""

    name: str = Field(description="Secret name.", min_length=1)
    key: str = Field(description="Key in the Secret's data.", min_length=1)


class PrometheusTLS(CamelModel):
    """TLS to Prometheus; verification is on unless switched off explicitly."""

    insecure_skip_verify: bool = Field(False, description="Do not verify the server certificate.")
    ca_secret_ref: SecretKeyRef | None = Field(None, description="CA bundle (PEM) to verify the server with.")


class PrometheusSpec(CamelModel):
    """Where the health queries run."""

    address: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Prometheus base URL; default: the operator's --prometheus-address.",
    )
    timeout: Duration = Field(
        "10s",
        description=f"Per-query timeout; at most {MAX_QUERY_TIMEOUT}.",
        json_schema_extra=validations(
            cel(
                f"{_DURATION_SUM} <= {parse_duration(MAX_QUERY_TIMEOUT)!r}",
                f"timeout must be at most {MAX_QUERY_TIMEOUT}",
            )
        ),
    )
    bearer_token_secret_ref: SecretKeyRef | None = Field(None, description="Bearer token for Prometheus.")
    tls: PrometheusTLS | None = Field(None, description="TLS options.")

    @field_validator("timeout")
    @classmethod
    def _not_too_long(cls, timeout: str) -> str:
        if parse_duration(timeout) > parse_duration(MAX_QUERY_TIMEOUT):
            raise ValueError(f"timeout must be at most {MAX_QUERY_TIMEOUT}, got {timeout}")
        return timeout


class NotificationsSpec(CamelModel):
    """Who hears about this model's transitions (receivers are configured operator-wide)."""

    receivers: list[DnsLabel] | None = Field(
        None,
        max_length=8,
        description="Names of operator-wide receivers (keys of the operator's notifications Secret); "
        "default: the operator's default receivers. Warning transitions always go to them.",
    )
    promotions: bool | None = Field(
        None, description="Also notify promotions and completed bakes (default: the operator's setting)."
    )


class ModelDeploymentSpec(CamelModel):
    """Which model version should serve, and how a new version earns its traffic."""

    model: ModelInfo = Field(description="The model version that should serve.")
    template: PodTemplate = Field(
        description="PodTemplateSpec of the model server (image, ports, probes, resources).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    replicas: int = Field(1, ge=0, le=1000, description="Replicas of the serving version.")
    service: ServiceSpec = Field(default_factory=ServiceSpec, description="The Service over every version.")
    gates: list[Gate] = Field(
        default_factory=list, max_length=MAX_METRICS, description="Pre-deploy checks on model.evaluation."
    )
    rollout: Rollout = Field(default_factory=Rollout, description="Canary steps, analysis and bake.")
    prometheus: PrometheusSpec = Field(default_factory=PrometheusSpec, description="Prometheus connection.")
    paused: bool = Field(False, description="Hold the rollout where it is (analysis keeps running).")
    notifications: NotificationsSpec | None = Field(
        None, description="Webhook notifications of this model's transitions, naming its owner."
    )


# ------------------------------------------------------------------------------------------- status


class Phase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    BAKING = "Baking"
    HEALTHY = "Healthy"
    REVERTED = "Reverted"
    FAILED = "Failed"


class Verdict(StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"  # the query itself is wrong (e.g. a PromQL syntax error): fail fast


class VersionRef(CamelModel):
    """A model version as it was deployed, with its lineage for traceability."""

    version: str = Field(description="Model version.")
    uri: str = Field(description="Model URI.")
    lineage: Lineage | None = Field(None, description="Lineage recorded when it was deployed.")
    since: datetime | None = Field(None, description="When it took this role.")


class WarmStatus(VersionRef):
    """The previous version, kept ready with no traffic so that a revert or rollback moves only traffic."""

    replicas: int = Field(ge=0, description="Replicas kept ready.")
    until: datetime | None = Field(
        None, description="When it is scaled away (absent: when the bake ends, or later by keepPrevious)."
    )


class SmokeTestStatus(CamelModel):
    """The latest smoke test: which version, why, and its verdict."""

    version: str = Field(description="The version tested.")
    uri: str = Field(description="Its model URI.")
    purpose: Literal["BeforeTraffic", "AfterRollback"] = Field(
        description="BeforeTraffic: a canary before any traffic; AfterRollback: the version a revert or "
        "rollback restored."
    )
    attempt: int = Field(ge=1, description="Attempt number for this version (names the Job).")
    phase: Literal["Pending", "Running", "Passed", "Failed"] = Field(description="Where it stands.")
    job: str | None = Field(None, description="The Job's name.")
    started_at: datetime | None = Field(None, description="When the Job was created.")
    finished_at: datetime | None = Field(None, description="When the verdict was recorded.")
    exit_code: int | None = Field(None, description="The test container's exit code, when it ended.")
    reason: str | None = Field(None, description="Why it failed (e.g. Error, DeadlineExceeded).")
    log: str | None = Field(None, description="The tail of the test's output.")


class PromoteRequest(CamelModel):
    """A `canaria promote` kept until the step can honour it, so an early promote is not lost."""

    user: str | None = Field(None, description="Who asked.")
    reason: str | None = Field(None, description="Why.")
    full: bool | None = Field(None, description="Skip every remaining step.")


class CanaryStatus(VersionRef):
    """The version being rolled out and where it stands."""

    step: int = Field(0, ge=0, description="Index of the current step in spec.rollout.steps.")
    weight: int = Field(0, ge=0, le=100, description="Weight of the current step.")
    step_started_at: datetime | None = Field(None, description="When the current step began.")
    ready_at: datetime | None = Field(None, description="When the canary became ready at this step.")
    promote_request: PromoteRequest | None = Field(
        None, description="A promote command waiting for this step's readiness and analysis."
    )


class TrafficStatus(CamelModel):
    """The split Canaria last set (or, with replica routing, asked for) and what it achieves."""

    router: str = Field(description="replicas or gatewayAPI.")
    stable: str = Field(description="Version answering callers outside the canary's share.")
    canary: str | None = Field(None, description="Version receiving the canary's share, if any.")
    weight: int = Field(0, ge=0, le=100, description="Percent of callers asked for the canary.")
    mirror: int | None = Field(None, ge=1, le=100, description="Percent of requests copied to the canary.")
    match: list[HeaderMatch] | None = Field(None, description="Headers that send a request to the canary.")
    effective_weight: int | None = Field(
        None, ge=0, le=100, description="Percent of callers the canary really answers, as the router reports."
    )
    description: str = Field("", description='What callers see, e.g. "25% (10% asked)".')


class Rejection(CamelModel):
    """A version that was reverted or refused; it is not rolled out again until `retry` or a new version."""

    version: str = Field(description="The rejected version (still named by the spec, possibly).")
    reason: str = Field(description="CamelCase reason, e.g. AnalysisFailed.")
    message: str = Field(description="What failed, with values.")
    at: datetime = Field(description="When.")


class MetricResult(CamelModel):
    """One metric of one analysis run."""

    name: str = Field(description="Metric name.")
    verdict: Verdict = Field(description="Pass, Fail, Inconclusive or Error.")
    value: float | None = Field(None, description="Observed value (absent when there was none).")
    min: float | None = Field(None, description="Lower bound.")
    max: float | None = Field(None, description="Upper bound.")
    reason: str | None = Field(None, description="Why it is not a plain pass/fail (no data, error, ...).")
    query: str | None = Field(None, description="The rendered query that ran.")
    dry_run: bool | None = Field(None, description="Recorded, not gating.")
    at: datetime | None = Field(None, description="When it ran.")
    against: str | None = Field(None, description="Compared with: baseline or stable.")
    against_value: float | None = Field(None, description="The other's value from the same query and window.")
    ratio: float | None = Field(None, description="value / againstValue.")
    p_value: float | None = Field(None, description="Proportion test: chance of a gap this large if equal.")
    samples: float | None = Field(None, description="Proportion test: the canary's trials in the window.")
    against_samples: float | None = Field(None, description="Proportion test: the other's trials.")

    def describe(self) -> str:
        bound = describe_bounds(self.min, self.max)  # not via a Threshold: this runs at every decision
        shown = f"{self.value:.6g}" if self.value is not None else "no value"
        if self.against is not None:
            other = f"{self.against_value:.6g}" if self.against_value is not None else "no value"
            shown += f" vs {self.against} {other}"
        bound = f" [{bound}]" if bound else ""
        extra = f" ({self.reason})" if self.reason else ""
        return f"{self.name}={shown}{bound} {self.verdict}{extra}"  # a StrEnum formats as its value


class AnalysisStatus(CamelModel):
    """Consecutive bad runs and the latest results."""

    failures: int = Field(0, ge=0, description="Failed runs since the last passing one.")
    inconclusive: int = Field(0, ge=0, description="Inconclusive runs since the last passing one.")
    last_run_at: datetime | None = Field(None, description="When the latest run finished.")
    verdict: Verdict | None = Field(None, description="Verdict of the latest run.")
    results: list[MetricResult] = Field(
        default_factory=list, description="Per-metric results of the latest run."
    )


class ConditionType(StrEnum):
    """The condition types Canaria sets, after kstatus (sigs.k8s.io/cli-utils) and Kubernetes conventions.

    Exactly one of Ready, Reconciling and Stalled is True at a time, so `kubectl wait`, Flux (kstatus) and
    Argo CD each read one unambiguous answer."""

    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    AVAILABLE = "Available"
    ROLLBACK_VERIFIED = "RollbackVerified"  # set after a revert or rollback when spec.rollout.smokeTest is
    TRAFFIC_ROUTED = "TrafficRouted"  # only with a router that splits requests itself (Gateway API)


class Condition(CamelModel):
    """Kubernetes condition convention (metav1.Condition)."""

    type: str = Field(
        description="Ready: the version the spec names serves at full weight (its bake passed, unless "
        "spec.rollout.readyWhileBaking). Reconciling: a rollout is on its way there. Stalled: the spec "
        "cannot make progress until a person acts (reverted, refused by gates, invalid, deadline). "
        "Available: some version serves (traffic is being answered)."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        description="CamelCase reason, the same on Ready, Reconciling and Stalled: Serving, Progressing, "
        "Paused, Baking, WaitingForReplicas, Pending, Reverted, GateFailed, ProgressDeadlineExceeded, "
        "InvalidSpec; on Available: StableServing or NotServing."
    )
    message: str = Field("", description="Human-readable detail.")
    last_transition_time: datetime | None = Field(None, description="When status last changed.")
    observed_generation: int | None = Field(
        None, description="metadata.generation this condition describes; older means not yet acted on."
    )


def conditions_summary(conditions: list[Condition]) -> str:
    """One line for people: `Ready=False  Reconciling=True (Progressing)  Stalled=False  Available=True`
    (the reason is shown once, on the True one of Ready / Reconciling / Stalled)."""
    return "  ".join(
        f"{c.type}={c.status}"
        + (f" ({c.reason})" if c.status == "True" and c.type != ConditionType.AVAILABLE else "")
        for c in conditions
    )


class HistoryEntry(CamelModel):
    """One transition in the audit trail."""

    seq: int = Field(ge=1, description="Transition number, increasing; names the matching Event.")
    time: datetime = Field(description="When.")
    from_phase: str | None = Field(None, alias="from", description="Phase before.")
    to_phase: str = Field(alias="to", description="Phase after.")
    reason: str = Field(description="CamelCase reason (also the Event's).")
    version: str | None = Field(None, description="Model version concerned.")
    message: str = Field("", description="What happened, with values.")
    user: str | None = Field(None, description="Who asked for it, when a person did.")
    change_reason: str | None = Field(
        None, description=f"canaria.dev/change-reason of the spec change (first {CLIP} characters)."
    )
    warning: bool | None = Field(None, description="A Warning transition (its Event is a Warning).")


class Refusal(CamelModel):
    """A spec generation the API server refused to build objects from: nothing moved, and it is not
    retried until the spec or a command changes."""

    generation: int = Field(description="The refused spec generation.")
    message: str = Field(description="The API server's message, naming the field.")
    at: datetime = Field(description="When.")


class CommandRecord(CamelModel):
    """The last day-2 command handled, so that a command is carried out once."""

    id: str = Field(description="Command ID (nonce).")
    action: str = Field(description="promote, abort, pause, resume or retry.")
    user: str | None = Field(None, description="Who issued it.")
    reason: str | None = Field(None, description="Why.")
    at: datetime | None = Field(None, description="When it was handled.")
    issued_at: datetime | None = Field(
        None, description="When it was issued; an older command put back on the resource is not run again."
    )
    result: str | None = Field(None, description="What it did, or why it did nothing.")


class RecordedEvaluation(CamelModel):
    """The offline evaluation a version was gated with, kept while it serves (or may serve again), so
    relative gates compare a candidate with the serving model whatever the spec says now."""

    version: str = Field(description="Model version.")
    evaluation: dict[str, float] = Field(default_factory=dict, description="Its spec.model.evaluation.")
    at: datetime | None = Field(None, description="When it was recorded (its gates passed).")


class NotificationRecord(CamelModel):
    """Delivery state of one receiver: the last transition handled, and the failing one if any."""

    receiver: str = Field(description="Receiver name (never its URL).")
    delivered_seq: int = Field(0, ge=0, description="History seq up to which every notification is handled.")
    delivered_at: datetime | None = Field(None, description="When the last notification was delivered.")
    attempts: int = Field(0, ge=0, description="Failed attempts at the failing notification.")
    failing_seq: int | None = Field(None, description="History seq of the notification being retried.")
    last_error: str | None = Field(None, description="The receiver's answer to the last failed attempt.")
    next_attempt_at: datetime | None = Field(None, description="When the failing one is tried again.")


class ModelDeploymentStatus(CamelModel):
    """What Canaria observed and did; the operator's only state."""

    model_config = ConfigDict(extra="ignore")

    phase: Phase | None = Field(None, description=", ".join(Phase) + ".")
    message: str | None = Field(None, description="What is happening and what happens next.")
    observed_generation: int | None = Field(None, description="Spec generation last acted on.")
    stable: VersionRef | None = Field(None, description="The version serving now.")
    canary: CanaryStatus | None = Field(None, description="The version being rolled out.")
    last_known_good: VersionRef | None = Field(None, description="Version a revert goes back to.")
    rejected: Rejection | None = Field(
        None, description="Version reverted or refused, not retried automatically."
    )
    bake_started_at: datetime | None = Field(None, description="When the current bake began.")
    warm: WarmStatus | None = Field(
        None, description="The previous version kept ready with no traffic, and until when."
    )
    smoke_test: SmokeTestStatus | None = Field(None, description="The latest smoke test and its verdict.")
    traffic: TrafficStatus | None = Field(None, description="The traffic split and its effective weight.")
    control_paused: bool | None = Field(None, description="Paused by `canaria pause` (not by the spec).")
    analysis: AnalysisStatus = Field(
        default_factory=AnalysisStatus, description="Analysis counters and results."
    )
    evaluations: list[RecordedEvaluation] = Field(
        default_factory=list,
        max_length=10,
        description="Offline evaluations of the stable, last known good and candidate versions, "
        "for relative gates.",
    )
    last_command: CommandRecord | None = Field(None, description="Last day-2 command handled.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready (the spec's version serves: what `kubectl wait --for=condition=Ready` and GitOps "
        "health checks wait for), Reconciling (a rollout is in progress), Stalled (reverted, refused or "
        "invalid: a person must act), Available (some version serves).",
    )
    refused: Refusal | None = Field(None, description="The spec generation the API server refused, if any.")
    history: list[HistoryEntry] = Field(
        default_factory=list,
        max_length=HISTORY_LIMIT,
        description=f"Last {HISTORY_LIMIT} transitions, at most {HISTORY_BYTES} bytes of text.",
    )
    events_through: int | None = Field(
        None, description="Every history entry up to this seq has its Event posted (the rest are re-posted)."
    )
    notifications: list[NotificationRecord] = Field(
        default_factory=list, max_length=16, description="Webhook delivery state, one entry per receiver."
    )


class ModelDeployment(BaseModel):
    """The whole resource as the operator reads it."""

    model_config = ConfigDict(extra="ignore")

    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus = Field(default_factory=ModelDeploymentStatus)
