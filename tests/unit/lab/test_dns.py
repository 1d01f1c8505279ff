"""The lab's PowerDNS configuration and its reading of dig's answers (pure parts of lab.dns)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ironlb.lab import dns, netns

# dig +noall +comments +answer, as dig 9.18 prints it against the lab's PowerDNS 4.7.
TWO_ADDRESSES = """;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 5413
;; flags: qr aa; QUERY: 1, ANSWER: 2, AUTHORITY: 0, ADDITIONAL: 1

;; OPT PSEUDOSECTION:
; EDNS: version: 0, flags:; udp: 1232
;; ANSWER SECTION:
web.ironlb.test.\t60\tIN\tA\t198.18.0.237
web.ironlb.test.\t60\tIN\tA\t198.18.0.236
"""
NXDOMAIN = """;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NXDOMAIN, id: 35847
;; flags: qr aa; QUERY: 1, ANSWER: 0, AUTHORITY: 1, ADDITIONAL: 1

;; OPT PSEUDOSECTION:
; EDNS: version: 0, flags:; udp: 1232
"""
REFUSED = """;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: REFUSED, id: 9841
;; flags: qr; QUERY: 1, ANSWER: 0, AUTHORITY: 0, ADDITIONAL: 1
"""
NO_SERVER = """;; communications error to 198.18.0.53#53: connection refused
;; no servers could be reached
"""


def test_records_of_the_type_asked_for_sorted() -> None:
    answer = dns.parse_dig(TWO_ADDRESSES, "A")
    assert answer == dns.Answer("NOERROR", True, ("198.18.0.236", "198.18.0.237"))
    assert dns.parse_dig(TWO_ADDRESSES, "AAAA") == dns.Answer("NOERROR", True, ())


def test_no_such_name_and_refusal_are_answers() -> None:
    assert dns.parse_dig(NXDOMAIN, "A") == dns.Answer("NXDOMAIN", True, ())
    assert dns.parse_dig(REFUSED, "A") == dns.Answer("REFUSED", False, ())


def test_no_answer_is_not_an_empty_answer() -> None:
    # A test waiting for a record to go away must not pass because the server is gone.
    assert dns.parse_dig(NO_SERVER, "A") is None
    assert dns.parse_dig("", "A") is None


def config(**kw: object) -> dns.PdnsConfig:
    args: dict[str, object] = {
        "ipv4": "198.18.0.53",
        "ipv6": "2001:db8::53",
        "api_key": "k" * 16,
        "workdir": Path("/lab/pdns"),
    }
    return dns.PdnsConfig(**{**args, **kw})  # type: ignore[arg-type]


def settings(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_listens_only_on_its_lab_addresses_and_keeps_its_files_in_its_workdir() -> None:
    s = settings(dns.render(config()))
    assert s["local-address"] == "198.18.0.53, 2001:db8::53"
    assert s["webserver-address"] == "198.18.0.53"
    assert s["webserver-allow-from"] == "198.18.0.0/24,2001:db8::/64"
    assert s["api"] == "yes"
    assert s["api-key"] == "k" * 16
    assert s["gsqlite3-database"] == "/lab/pdns/pdns.sqlite3"
    assert s["socket-dir"] == "/lab/pdns"
    assert s["daemon"] == "no"


def test_sends_no_query_of_its_own_and_caches_nothing() -> None:
    s = settings(dns.render(config()))
    assert s["security-poll-suffix"] == ""  # the default asks secpoll.powerdns.com
    assert s["expand-alias"] == "no"
    assert s["only-notify"] == ""
    assert s["primary"] == s["secondary"] == "no"
    assert s["disable-axfr"] == "yes"
    assert s["cache-ttl"] == s["negquery-cache-ttl"] == s["query-cache-ttl"] == "0"


@pytest.mark.parametrize(
    ("field", "value"),
    [("ipv4", "192.168.1.53"), ("ipv6", "fd00::53"), ("api_allow_from", ("0.0.0.0/0",))],
)
def test_addresses_outside_the_lab_are_refused(field: str, value: object) -> None:
    with pytest.raises(netns.LabError, match="outside the lab"):
        config(**{field: value})


def test_an_api_key_that_would_break_the_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="API key"):
        config(api_key="short")
    with pytest.raises(ValueError, match="API key"):
        config(api_key="spaces are\nnewlines")
