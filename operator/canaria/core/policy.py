"""The operator-wide analysis policy: where a ModelDeployment may send its health queries, with what.

A ModelDeployment is tenant input, but its analysis runs from the operator's network position with the
operator's Secret access. Without a policy, anyone who may write a ModelDeployment could make the operator
query any internal URL every interval (and read the answer back from status), or send a Secret of the
namespace as a bearer token to a host of their choice. The policy is decided once, by whoever installs the
operator (flags of `canaria run`, chart values), and checked here, purely, before any request is made:

- the address must be the operator's default Prometheus or fall under one of the allowed addresses
  (same scheme, host and port; the path at or below the allowed one);
- a bearer token only travels over https, unless the operator was started to allow plain http;
- the analysis stays within a budget of queries per minute (metrics times runs per minute).

The Secrets themselves must carry `CREDENTIALS_LABEL`: the shell checks that label before it uses one.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from canaria.core.api import ModelDeploymentSpec

#: Label a Secret must carry (value "true") before the operator uses it for Prometheus: whoever may write
#: Secrets in the namespace consents, not whoever may write a ModelDeployment.
CREDENTIALS_LABEL = "canaria.dev/prometheus-credentials"

#: Default query budget per ModelDeployment: four metrics every second; tighten it in shared clusters.
DEFAULT_QUERIES_PER_MINUTE = 240

_DEFAULT_PORTS = {"http": 80, "https": 443}


class PolicyError(ValueError):
    """A ModelDeployment the policy refuses; ``field`` is the spec field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class _Origin:
    """An address cut into what the policy compares: scheme, host, port and path segments."""

    scheme: str
    host: str
    port: int
    path: tuple[str, ...]

    def covers(self, other: _Origin) -> bool:
        return (self.scheme, self.host, self.port) == (other.scheme, other.host, other.port) and (
            other.path[: len(self.path)] == self.path
        )


def _origin(address: str) -> _Origin:
    """Parse an address the policy can compare, or raise ValueError saying what is wrong with it.

    User info, queries and fragments are refused: ``http://allowed@elsewhere`` must never pass a prefix
    test, and the operator appends its own API path to the address.
    """
    parts = urlsplit(address.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"{address!r} must start with http:// or https://")
    if "@" in parts.netloc or parts.query or parts.fragment or not parts.hostname:
        raise ValueError(f"{address!r} must be scheme://host[:port][/path], without user, query or fragment")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError as error:
        raise ValueError(f"{address!r} has an invalid port") from error
    segments = tuple(s for s in parts.path.split("/") if s)
    if any(s in (".", "..") for s in segments):
        raise ValueError(f"{address!r} must not contain '.' or '..' path segments")
    return _Origin(scheme, parts.hostname.lower(), port, segments)


@dataclass(frozen=True)
class AnalysisPolicy:
    """Where analysis may go and how much of it one ModelDeployment may ask for.

    ``allowed_addresses`` are base URLs: each allows itself and every address below its path (an entry
    ``http://prom.team-a:9090`` allows ``http://prom.team-a:9090/prometheus`` but not
    ``http://prom.team-a.evil:9090``). The default Prometheus is always allowed.
    """

    default_address: str | None = None
    allowed_addresses: tuple[str, ...] = ()
    allow_plain_http_credentials: bool = False
    max_queries_per_minute: int = DEFAULT_QUERIES_PER_MINUTE

    def __post_init__(self) -> None:
        for address in (self.default_address, *self.allowed_addresses):
            if address is not None:
                _origin(address)  # a typo in the operator's own flags fails at start, not per object
        if self.max_queries_per_minute < 1:
            raise ValueError(
                f"the query budget must be at least 1 per minute, got {self.max_queries_per_minute}"
            )

    def describe(self) -> str:
        """The allowed addresses, as a refusal message shows them."""
        allowed = [a for a in (self.default_address, *self.allowed_addresses) if a]
        if not allowed:
            return "no address is allowed (the operator has no --prometheus-address nor --allowed-prometheus)"
        return "allowed: " + ", ".join(allowed)

    def address_allowed(self, address: str) -> bool:
        """Whether ``address`` is the default Prometheus or below an allowed address."""
        try:
            wanted = _origin(address)
        except ValueError:
            return False
        return any(
            _origin(entry).covers(wanted)
            for entry in (self.default_address, *self.allowed_addresses)
            if entry
        )

    def check(self, spec: ModelDeploymentSpec) -> None:
        """Raise PolicyError naming the field when the policy refuses ``spec``'s analysis; pure."""
        prometheus = spec.prometheus
        address = prometheus.address or self.default_address
        field = "spec.prometheus.address"
        if prometheus.address is not None:
            try:
                _origin(prometheus.address)
            except ValueError as error:
                raise PolicyError(field, str(error)) from None
            if not self.address_allowed(prometheus.address):
                raise PolicyError(
                    field,
                    f"{prometheus.address} is outside the operator's analysis policy ({self.describe()}); "
                    "an operator administrator can widen it with --allowed-prometheus "
                    "(chart value analysisPolicy.allowedPrometheus)",
                )
        if (
            prometheus.bearer_token_secret_ref is not None
            and address is not None
            and urlsplit(address).scheme.lower() != "https"
            and not self.allow_plain_http_credentials
        ):
            raise PolicyError(
                "spec.prometheus.bearerTokenSecretRef",
                f"a bearer token is only sent over https, and {address} is plain http "
                "(the operator runs without --allow-plain-http-credentials)",
            )
        analysis = spec.rollout.analysis
        if analysis.metrics:
            queries = sum(m.queries_per_run for m in analysis.metrics)
            per_minute = queries * 60.0 / analysis.interval_seconds
            if per_minute > self.max_queries_per_minute:
                raise PolicyError(
                    "spec.rollout.analysis.interval",
                    f"{len(analysis.metrics)} metrics every {analysis.interval} are {per_minute:g} queries "
                    f"a minute, over the operator's budget of {self.max_queries_per_minute} "
                    "(--max-queries-per-minute): lengthen the interval or drop metrics",
                )
