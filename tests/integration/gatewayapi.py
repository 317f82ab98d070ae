"""The Gateway API's HTTPRoute for the integration tier: its CRD, and a user's route.

The upstream CRD YAML cannot be downloaded here, so this is a structural schema of the fields Canaria
reads and writes, with the bounds and defaults of the Gateway API specification (v1, standard channel):
at most 16 rules, 16 backendRefs and 16 filters per rule, 8 matches... weights 0..1,000,000 (default 1),
mirror percent 0..100, header matches Exact by default. Like upstream, no list here declares a list type,
so every list is atomic for server-side apply (the rules list too: that is what Canaria must live with).
Fields Canaria never touches (filters other than RequestMirror, timeouts) are kept opaque.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client

from .harness import install_crd

GROUP = "gateway.networking.k8s.io"
VERSION = "v1"
PLURAL = "httproutes"
USER = "platform-team"  # the field manager of the person who owns the route

_NAME = {"type": "string", "minLength": 1, "maxLength": 253}
_OPAQUE = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
_BACKEND_REF = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "group": {"type": "string", "default": "", "maxLength": 253},
        "kind": {"type": "string", "default": "Service", "maxLength": 63, "minLength": 1},
        "name": _NAME,
        "namespace": {"type": "string", "maxLength": 63, "minLength": 1},
        "port": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 65535},
    },
}
_FILTER = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {
            "type": "string",
            "enum": [
                "RequestHeaderModifier",
                "ResponseHeaderModifier",
                "RequestMirror",
                "RequestRedirect",
                "URLRewrite",
                "ExtensionRef",
            ],
        },
        "requestMirror": {
            "type": "object",
            "required": ["backendRef"],
            "properties": {
                "backendRef": _BACKEND_REF,
                "percent": {"type": "integer", "format": "int32", "minimum": 0, "maximum": 100},
                "fraction": {
                    "type": "object",
                    "required": ["numerator"],
                    "properties": {
                        "numerator": {"type": "integer", "format": "int32", "minimum": 0},
                        "denominator": {"type": "integer", "format": "int32", "minimum": 1, "default": 100},
                    },
                },
            },
        },
        "requestHeaderModifier": _OPAQUE,
        "responseHeaderModifier": _OPAQUE,
        "requestRedirect": _OPAQUE,
        "urlRewrite": _OPAQUE,
        "extensionRef": _OPAQUE,
    },
}
_MATCH = {
    "type": "object",
    "properties": {
        "path": {
            "type": "object",
            "default": {"type": "PathPrefix", "value": "/"},
            "properties": {
                "type": {"type": "string", "enum": ["Exact", "PathPrefix", "RegularExpression"]},
                "value": {"type": "string", "maxLength": 1024},
            },
        },
        "headers": {
            "type": "array",
            "maxItems": 16,
            "items": {
                "type": "object",
                "required": ["name", "value"],
                "properties": {
                    "type": {"type": "string", "enum": ["Exact", "RegularExpression"], "default": "Exact"},
                    "name": {"type": "string", "minLength": 1, "maxLength": 256},
                    "value": {"type": "string", "maxLength": 4096},
                },
            },
        },
        "queryParams": {"type": "array", "maxItems": 16, "items": _OPAQUE},
        "method": {"type": "string"},
    },
}
_RULE = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 253},
        "matches": {"type": "array", "maxItems": 64, "items": _MATCH},
        "filters": {"type": "array", "maxItems": 16, "items": _FILTER},
        "backendRefs": {
            "type": "array",
            "maxItems": 16,
            "items": {
                **_BACKEND_REF,
                "properties": {
                    **_BACKEND_REF["properties"],
                    "weight": {
                        "type": "integer",
                        "format": "int32",
                        "default": 1,
                        "minimum": 0,
                        "maximum": 1000000,
                    },
                    "filters": {"type": "array", "maxItems": 16, "items": _FILTER},
                },
            },
        },
        "timeouts": _OPAQUE,
    },
}
_CONDITION = {
    "type": "object",
    "required": ["type", "status"],
    "properties": {
        "type": {"type": "string"},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "observedGeneration": {"type": "integer"},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
    },
}
SCHEMA = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "properties": {
                "parentRefs": {
                    "type": "array",
                    "maxItems": 32,
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "group": {"type": "string", "default": GROUP},
                            "kind": {"type": "string", "default": "Gateway"},
                            "namespace": {"type": "string"},
                            "name": _NAME,
                            "sectionName": {"type": "string"},
                            "port": {"type": "integer", "format": "int32"},
                        },
                    },
                },
                "hostnames": {"type": "array", "maxItems": 16, "items": {"type": "string", "maxLength": 253}},
                "rules": {
                    "type": "array",
                    "maxItems": 16,
                    "default": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}],
                    "items": _RULE,
                },
            },
        },
        "status": {
            "type": "object",
            "properties": {
                "parents": {
                    "type": "array",
                    "maxItems": 32,
                    "items": {
                        "type": "object",
                        "required": ["parentRef", "controllerName"],
                        "properties": {
                            "parentRef": _OPAQUE,
                            "controllerName": {"type": "string"},
                            "conditions": {"type": "array", "maxItems": 8, "items": _CONDITION},
                        },
                    },
                }
            },
        },
    },
}


def install_httproute_crd(api: client.ApiClient) -> None:
    """Create the HTTPRoute CRD and wait until it is served."""
    install_crd(
        api,
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            # as upstream's: a CRD in a protected *.k8s.io group must name its API review
            "metadata": {
                "name": f"{PLURAL}.{GROUP}",
                "annotations": {
                    "api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api/pull/2466"
                },
            },
            "spec": {
                "group": GROUP,
                "scope": "Namespaced",
                "names": {
                    "plural": PLURAL,
                    "singular": "httproute",
                    "kind": "HTTPRoute",
                    "listKind": "HTTPRouteList",
                },
                "versions": [
                    {
                        "name": VERSION,
                        "served": True,
                        "storage": True,
                        "schema": {"openAPIV3Schema": SCHEMA},
                        "subresources": {"status": {}},
                    }
                ],
            },
        },
    )


class Routes:
    """HTTPRoutes of one namespace, written as the route's owner (field manager `USER`)."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace

    def apply(self, name: str, spec: dict[str, Any], *, manager: str = USER) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "HTTPRoute",
            "metadata": {"name": name},
            "spec": spec,
        }
        return self.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            name,
            body,
            field_manager=manager,
            force=True,
            _content_type="application/apply-patch+yaml",
        )

    def get(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def set_accepted(self, name: str, accepted: bool, message: str = "") -> None:
        """Play the Gateway controller: report whether the parent accepts the route."""
        route = self.get(name)
        condition = {
            "type": "Accepted",
            "status": "True" if accepted else "False",
            "reason": "Accepted" if accepted else "NotAllowedByListeners",
            "message": message,
            "lastTransitionTime": "2026-12-01T00:00:00Z",
        }
        route["status"] = {
            "parents": [
                {
                    "parentRef": {"name": "gateway"},
                    "controllerName": "canaria.dev/test-gateway",
                    "conditions": [condition],
                }
            ]
        }
        self.custom.replace_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, PLURAL, name, route
        )

    def owners(self, name: str) -> dict[str, set[str]]:
        """manager → the top-level spec fields it owns (from managedFields)."""
        owned: dict[str, set[str]] = {}
        for entry in self.get(name)["metadata"].get("managedFields") or []:
            spec = (entry.get("fieldsV1") or {}).get("f:spec") or {}
            owned.setdefault(entry["manager"], set()).update(k.removeprefix("f:") for k in spec if k != ".")
        return owned
