from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironlb.core import selectors

LABELS = {"app": "web", "tier": "front", "zone": "a"}


@pytest.mark.parametrize(
    ("raw", "matches"),
    [
        ({}, True),
        ({"matchLabels": {}}, True),
        ({"matchLabels": {"app": "web"}}, True),
        ({"matchLabels": {"app": "web", "tier": "back"}}, False),
        ({"matchLabels": {"missing": ""}}, False),
        ({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}, True),
        ({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}, False),
        ({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["b"]}]}, True),
        ({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}, False),
        # NotIn matches when the label is absent (Kubernetes semantics).
        ({"matchExpressions": [{"key": "gpu", "operator": "NotIn", "values": ["yes"]}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, False),
        ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist", "values": []}]}, False),
        (
            {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["back"]}],
            },
            False,
        ),
    ],
)
def test_matches_with_kubernetes_semantics(raw: Mapping[str, object], matches: bool) -> None:
    assert selectors.parse(raw).matches(LABELS) is matches


def test_selector_lists_follow_metallb_empty_matches_all_any_matches() -> None:
    web = selectors.parse({"matchLabels": {"app": "web"}})
    db = selectors.parse({"matchLabels": {"app": "db"}})
    assert selectors.any_matches([], LABELS)
    assert selectors.any_matches([db, web], LABELS)
    assert not selectors.any_matches([db], LABELS)


@pytest.mark.parametrize(
    ("raw", "path", "message"),
    [
        ([], "", "expected an object, got list"),
        ({"matchLabel": {}}, "matchLabel", "unknown field"),
        ({"matchLabels": ["a"]}, "matchLabels", "expected an object"),
        ({"matchLabels": {"a": 1}}, "matchLabels['a']", "expected a string, got number"),
        ({"matchExpressions": {}}, "matchExpressions", "expected a list"),
        ({"matchExpressions": [{"operator": "Exists"}]}, "matchExpressions[0].key", "required"),
        (
            {"matchExpressions": [{"key": "a", "operator": "exists"}]},
            "matchExpressions[0].operator",
            "'exists' is not one of In, NotIn, Exists, DoesNotExist",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "In"}]},
            "matchExpressions[0].values",
            "must not be empty for operator In",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
            "matchExpressions[0].values",
            "must be empty for operator Exists",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": ["x", "x"]}]},
            "matchExpressions[0].values",
            "duplicate values",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": ["x"], "value": 1}]},
            "matchExpressions[0].value",
            "unknown field",
        ),
    ],
)
def test_parse_errors_name_the_field(raw: object, path: str, message: str) -> None:
    with pytest.raises(selectors.SelectorError) as info:
        selectors.parse(raw)
    assert info.value.path == path
    assert message in info.value.message


def test_invalid_label_syntax_parses_but_is_reported() -> None:
    # Seed 004 selects nodes with `kubernetes.io/hostname: "*"`: not a wildcard in Kubernetes.
    selector = selectors.parse({"matchLabels": {"kubernetes.io/hostname": "*"}})
    assert not selector.matches({"kubernetes.io/hostname": "node-1"})
    [(path, message)] = selector.syntax_problems()
    assert path == "matchLabels['kubernetes.io/hostname']"
    assert "'*' is not a wildcard" in message


@pytest.mark.parametrize(
    ("key", "value", "valid"),
    [
        ("app", "web", True),
        ("app.kubernetes.io/name", "my-app_1.0", True),
        ("app", "", True),
        ("-app", "web", False),
        ("Example.COM/app", "web", False),
        ("/app", "web", False),
        ("app", "x" * 64, False),
        ("app", "web-", False),
    ],
)
def test_syntax_problems_follow_kubernetes_rules(key: str, value: str, valid: bool) -> None:
    problems = selectors.parse({"matchLabels": {key: value}}).syntax_problems()
    assert (not problems) is valid


def test_string_form_is_canonical_and_equality_is_by_value() -> None:
    a = selectors.parse(
        {
            "matchLabels": {"b": "2", "a": "1"},
            "matchExpressions": [{"key": "z", "operator": "NotIn", "values": ["y", "x"]}],
        }
    )
    b = selectors.parse(
        {
            "matchExpressions": [{"key": "z", "operator": "NotIn", "values": ["x", "y"]}],
            "matchLabels": {"a": "1", "b": "2"},
        }
    )
    assert str(a) == "a=1,b=2,z notin (x,y)"
    assert a == b
    assert hash(a) == hash(b)
    assert str(selectors.EVERYTHING) == "<everything>"
    with pytest.raises(AttributeError):
        a.match_labels = ()


names = st.sampled_from(["a", "b", "c"])
label_sets = st.dictionaries(names, names, max_size=3)
expressions = st.builds(
    lambda key, op, values: {"key": key, "operator": op, "values": values},
    names,
    st.sampled_from(["In", "NotIn"]),
    st.lists(names, min_size=1, max_size=3, unique=True),
) | st.builds(
    lambda key, op: {"key": key, "operator": op}, names, st.sampled_from(["Exists", "DoesNotExist"])
)


@given(label_sets, st.dictionaries(names, names, max_size=2), st.lists(expressions, max_size=3))
def test_matching_agrees_with_a_reference_reading(
    labels: dict[str, str], match_labels: dict[str, str], exprs: list[dict[str, object]]
) -> None:
    selector = selectors.parse({"matchLabels": match_labels, "matchExpressions": exprs})

    def holds(e: dict[str, object]) -> bool:
        key, values = str(e["key"]), e.get("values") or []
        assert isinstance(values, list)
        return {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[str(e["operator"])]

    expected = all(labels.get(k) == v for k, v in match_labels.items()) and all(
        holds(e) for e in exprs
    )
    assert selector.matches(labels) is expected
