"""The Kubernetes shell: API calls, owned objects, one reconcile, the kopf handlers, the CRD and the RBAC.

It imports the core and the providers, never the CLI or the sandbox.
"""
