"""Settings are checked once, when built: every bad value is a `SettingError` naming its field;
regular-expression lists split only at the commas that separate expressions."""

from __future__ import annotations

import re
from typing import Any

import pytest

from ironlb.controller import settings as controller_settings
from ironlb.core import settings
from ironlb.speaker import settings as speaker_settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("^lo$", ("^lo$",)),
        ("^lo$,^docker.*", ("^lo$", "^docker.*")),
        ("^eth{1,2}$", ("^eth{1,2}$",)),
        ("^eth[0-9]{1,2}$,^lo$", ("^eth[0-9]{1,2}$", "^lo$")),
        ("^(a|b,c)$,^d", ("^(a|b,c)$", "^d")),
        ("^x[,]y$,^z", ("^x[,]y$", "^z")),
        (r"^x\,y$,^z", (r"^x\,y$", "^z")),
        ("^[],]x$", ("^[],]x$",)),
        (" ^a , ^b ,", ("^a", "^b")),
        ("", ()),
    ],
)
def test_patterns_split_at_separating_commas_only(text: str, expected: tuple[str, ...]) -> None:
    assert settings.split_patterns(text) == expected
    for pattern in expected:
        re.compile(pattern)


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("metrics_port", 0, "port number"),
        ("metrics_port", 70000, "port number"),
        ("membership_port", -1, "port number"),
        ("probe_interval", 0.0, "more than 0"),
        ("suspicion_timeout", -0.5, "more than 0"),
        ("gratuitous_interval", 0.0, "more than 0"),
        ("gratuitous_duration", -1.0, "0 or more"),
        ("handover_timeout", -1.0, "0 or more"),
        ("probe_before_announce", -0.1, "0 or more"),
        ("bind_address", "node-1", "not an IP address"),
        ("node_name", "Node_1", "object name"),
        ("namespace", "metallb.system", "valid name"),
        ("membership_secret", "", "object name"),
        ("kubeconfig", "/nonexistent/kubeconfig", "no such file"),
        ("excluded_interfaces", ("^lo$", "^eth{1,2}("), "bad regular expression '^eth{1,2}('"),
        ("lb_class", " ", "empty"),
    ],
)
def test_a_bad_speaker_setting_names_its_field(field: str, value: Any, problem: str) -> None:
    with pytest.raises(settings.SettingError) as caught:
        speaker_settings.Settings(**{field: value})
    assert caught.value.field == field
    assert problem in caught.value.problem


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("workers", 0, "at least 1"),
        ("lease_duration", 0.0, "more than 0"),
        ("listen_address", "everywhere", "not an IP address"),
        ("webhook_port", 70000, "port number"),
        ("webhook_port", 7472, "must differ from --metrics-port"),
        ("lease_name", "Lease!", "object name"),
        ("identity", "", "empty"),
    ],
)
def test_a_bad_controller_setting_names_its_field(field: str, value: Any, problem: str) -> None:
    with pytest.raises(settings.SettingError) as caught:
        controller_settings.Settings(**{field: value})
    assert caught.value.field == field
    assert problem in caught.value.problem


def test_the_defaults_are_valid() -> None:
    speaker_settings.Settings()
    controller_settings.Settings(webhook_port=0)
    controller_settings.Settings()


def test_good_values_pass() -> None:
    s = speaker_settings.Settings(
        bind_address="2001:db8::1",
        metrics_port=65535,
        handover_timeout=0.0,
        excluded_interfaces=("^eth{1,2}$",),
        node_name="node-1.example",
    )
    assert s.excluded_interfaces == ("^eth{1,2}$",)


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("pod_cidr_peers", ("router-a", "Router_B"), "'Router_B'"),
        ("pod_cidr_communities", ("65000:1", "65000:70000"), "16-bit"),
        ("pod_cidr_communities", ("big:1:2:3",), "large community"),
        ("pod_cidr_communities", ("my alias",), "'my alias'"),
    ],
)
def test_bad_pod_cidr_settings_name_their_field(field: str, value: Any, problem: str) -> None:
    with pytest.raises(settings.SettingError) as caught:
        speaker_settings.Settings(advertise_pod_cidrs=True, **{field: value})
    assert caught.value.field == field
    assert problem in caught.value.problem


@pytest.mark.parametrize("field", ["pod_cidr_peers", "pod_cidr_communities"])
def test_pod_cidr_choices_need_the_advertisement(field: str) -> None:
    with pytest.raises(settings.SettingError) as caught:
        speaker_settings.Settings(**{field: ("router",)})
    assert caught.value.field == field
    assert "--advertise-pod-cidrs" in caught.value.problem


def test_pod_cidr_advertisement_follows_the_settings() -> None:
    assert speaker_settings.Settings().pod_cidr_advertisement() is None
    chosen = speaker_settings.Settings(
        advertise_pod_cidrs=True,
        pod_cidr_peers=("r1", "r2"),
        pod_cidr_communities=("65000:1", "large:1:2:3", "an-alias"),
    ).pod_cidr_advertisement()
    assert chosen is not None
    assert chosen.peers == {"r1", "r2"}
    assert chosen.communities == ("65000:1", "large:1:2:3", "an-alias")
    everyone = speaker_settings.Settings(advertise_pod_cidrs=True).pod_cidr_advertisement()
    assert everyone is not None
    assert not everyone.peers
    assert not everyone.communities
