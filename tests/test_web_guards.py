"""The web app's pure rules: where a request comes from, what its body claims to be, how
many logins an address may try, how long a session lives, which page ``before=`` asks for."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioforge.web._dashboard import MAX_ID, page_key
from trioforge.web._origin import is_json, same_origin
from trioforge.web._sessions import Sessions, Throttle


@pytest.mark.parametrize(
    ("origin", "fetch_site", "host", "verdict"),
    [
        ("http://127.0.0.1:8080", None, "127.0.0.1:8080", True),
        ("http://127.0.0.1:8080", "same-origin", "127.0.0.1:8080", True),
        (None, "same-origin", "127.0.0.1:8080", True),
        ("https://jobs.example", None, "jobs.example", True),  # a proxy that ends TLS
        ("https://jobs.example:443", None, "jobs.example", True),
        ("HTTP://Jobs.Example", None, "jobs.example:80", True),
        ("http://[::1]:8080", None, "[::1]:8080", True),
        ("http://127.0.0.1:18182", None, "127.0.0.1:8080", False),  # another port
        ("http://127.0.0.1:18182", "same-site", "127.0.0.1:8080", False),
        ("http://127.0.0.1:8080", "same-site", "127.0.0.1:8080", False),  # they disagree
        (None, "cross-site", "127.0.0.1:8080", False),
        (None, "none", "127.0.0.1:8080", False),
        ("http://evil.example", None, "jobs.example", False),
        ("null", None, "127.0.0.1:8080", False),
        ("file://", None, "127.0.0.1:8080", False),
        ("http://127.0.0.1:99999", None, "127.0.0.1:8080", False),
        ("http://127.0.0.1:8080", None, None, False),
        (None, None, "127.0.0.1:8080", None),  # a script says nothing
    ],
)
def test_same_origin(origin: str | None, fetch_site: str | None, host: str | None,
                     verdict: bool | None) -> None:  # fmt: skip
    assert same_origin(origin, fetch_site, host) is verdict


@given(st.text(), st.one_of(st.none(), st.text()), st.text())
def test_same_origin_never_raises(origin: str, fetch_site: str | None, host: str) -> None:
    assert same_origin(origin, fetch_site, host) in (True, False)


def test_only_json_is_json() -> None:
    assert is_json("application/json")
    assert is_json("Application/JSON; charset=utf-8")
    for other in (None, "", "text/plain", "application/x-www-form-urlencoded",
                  "multipart/form-data; boundary=x", "application/jsonx"):  # fmt: skip
        assert not is_json(other)


@given(st.lists(st.floats(min_value=0, max_value=1000), max_size=60))
def test_the_throttle_lets_through_a_burst_then_one_per_period(gaps: list[float]) -> None:
    throttle = Throttle(burst=3, every=5.0)
    now, taken, waits = 0.0, 0, []
    for gap in gaps:
        now += gap
        wait = throttle.take("10.0.0.1", now)
        if wait == 0.0:
            taken += 1
        else:
            waits.append(wait)
            assert 0 < wait <= 5.0
            assert throttle.take("10.0.0.1", now + wait) == 0.0  # the wait it named is enough
            taken += 1
            now += wait
        assert taken <= 3 + now / 5.0 + 1e-6
    assert throttle.take("10.0.0.2", now) == 0.0  # another address has its own bucket


def test_a_full_throttle_forgets_addresses_whose_bucket_refilled() -> None:
    throttle = Throttle(burst=1, every=1.0, most=2)
    for n in range(3):
        assert throttle.take(f"a{n}", 0.0) == 0.0
    assert throttle.take("late", 10.0) == 0.0
    assert throttle.take("a0", 10.0) == 0.0  # forgotten, so a full bucket again


def test_sessions_expire_are_closed_and_are_bounded() -> None:
    sessions = Sessions(lifetime=10.0, most=2)
    first, session = sessions.open(0.0)
    assert sessions.get(first, 9.9) == session
    assert sessions.get(first, 10.0) is None
    second, _ = sessions.open(0.0)
    sessions.close(second)
    assert sessions.get(second, 1.0) is None
    ids = [sessions.open(0.0)[0] for _ in range(3)]
    assert [sessions.get(i, 1.0) is not None for i in ids] == [False, True, True]
    assert sessions.get(None, 1.0) is None
    assert sessions.get("", 1.0) is None
    assert len({first, second, *ids}) == 5


@pytest.mark.parametrize(
    ("before", "key"),
    [("42", 42), ("", None), ("²", None), ("١٢", None), ("-1", None), ("1e9", None),
     (" 4", None), ("99999999999999999999999999", MAX_ID), (str(MAX_ID), MAX_ID)],
)  # fmt: skip
def test_page_keys_are_ascii_ids(before: str, key: int | None) -> None:
    assert page_key(before) == key
