"""kopf's peering identity comes from the Pod's name, or the host and process: never from the passwd
database, which has no entry for the image's uid 65532 (nor for the uids OpenShift assigns)."""

from __future__ import annotations

import os
import pwd
import socket

import pytest

from canaria.kube.operator import operator_identity


@pytest.fixture
def no_passwd_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `getpwuid` does under a uid the image's /etc/passwd does not list."""

    def missing(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", missing)
    for name in ("USER", "LOGNAME", "LNAME", "USERNAME"):  # getpass.getuser() reads these first
        monkeypatch.delenv(name, raising=False)


def test_identity_is_the_pod_name(no_passwd_entry: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "canaria-7d9f8-abcde")
    assert operator_identity() == "canaria-7d9f8-abcde"


def test_identity_outside_a_pod_is_host_and_pid(
    no_passwd_entry: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POD_NAME", raising=False)
    assert operator_identity() == f"{socket.gethostname()}/{os.getpid()}"
