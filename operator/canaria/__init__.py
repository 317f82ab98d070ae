"""Canaria: canary rollouts of ML model versions on Kubernetes, gated by Prometheus."""

GROUP = "canaria.dev"
VERSION = "v1alpha1"
PLURAL = "modeldeployments"
KIND = "ModelDeployment"
