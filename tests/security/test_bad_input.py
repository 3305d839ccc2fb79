"""Bad input, generated (hypothesis): names of instances, templates and profiles (jaula.names) and
the settings parsers (instances/settings.py). Whatever comes in, the answer is the normalized
value or a ConfigError whose message says what was wrong and what is allowed: never another
exception (a traceback to the user), never a name that could be a path. And a refused name
makes nothing: the container driver creates no folder, no volume."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaula.errors import ConfigError
from jaula.instances import settings as inst_settings
from jaula.instances.model import Instance, Profile
from jaula.names import NAME_MAX, RULE, validate_name
from tests.integration.pool_checks import mounts_under

DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")
SOME = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# the tricks: path parts, control characters, look-alikes, long names
TRICKS = st.one_of(
    st.sampled_from(["..", ".", "../x", "a/b", "/etc", "x/..", "..a", "a..b", "-a", "a-", "A", "a b", "a\0b",
                     "a\nb", "a\tb", "a\x7fb", "é", "а", "ａ", "a\u200bb", "a.b", "a_b", "", " ", "~root", "$(id)",
                     "a;b", "*", "a" * (NAME_MAX + 1), "\\x"]),
    st.builds(lambda a, t, b: a + t + b, st.text(string.ascii_lowercase, min_size=1, max_size=5),
              st.sampled_from(["/", "..", "\0", "\n", "\x1b", "é", "İ", "\u202e", ".", " ", "_", "A"]),
              st.text(string.ascii_lowercase, min_size=1, max_size=5)),
    st.text(string.ascii_lowercase + string.digits, min_size=NAME_MAX + 1, max_size=300),
)


def refused(name: object, what: str = "Instance") -> str:
    with pytest.raises(ConfigError) as e:
        validate_name(name, what)
    msg = str(e.value)
    assert msg.startswith(f"{what} name ") and RULE in msg, msg
    assert msg.isprintable(), f"the message echoes raw input: {msg!r}"
    if isinstance(name, str):
        assert msg.isascii(), f"the message echoes raw input: {msg!r}"
    return msg


@SOME
@given(st.text(max_size=100))
def test_any_text_is_a_dns_label_or_refused_with_the_rule(name: str) -> None:
    try:
        assert validate_name(name) == name
    except ConfigError as e:
        assert RULE in str(e)
        assert not DNS_LABEL.match(name), f"a DNS label was refused: {name!r}"
    else:
        assert DNS_LABEL.match(name), f"accepted {name!r}"
        assert "/" not in name and ".." not in name and name.isascii()


@SOME
@given(TRICKS)
def test_path_tricks_control_characters_unicode_and_long_names_are_refused(name: str) -> None:
    refused(name)
    refused(name, "Template")
    refused(name, "Profile")


@SOME
@given(st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.booleans(), st.binary(max_size=10),
                 st.lists(st.text(max_size=3), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))
def test_names_that_are_not_strings_are_refused(name: object) -> None:
    refused(name)


@SOME
@given(TRICKS)
def test_models_refuse_a_bad_name_first(name: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(RULE)):
        Instance.new(name, "busybox")
    with pytest.raises(ConfigError, match=re.escape(RULE)):
        Instance.new("ok", name)
    with pytest.raises(ConfigError, match=re.escape(RULE)):
        Profile.new(name)


KEYS = st.one_of(st.sampled_from(inst_settings.known_keys()), st.sampled_from(list(inst_settings.SETTINGS)),
                 st.builds(lambda p, k: p + k, st.sampled_from(["user.", "environment.", "nic.eth0.", "limits.", ""]),
                           st.text(max_size=12)),
                 st.text(max_size=20))
VALUES = st.one_of(st.none(), st.text(max_size=30), st.integers(min_value=-2**70, max_value=2**70),
                   st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                   st.sampled_from(["512MiB", "1.5", "0-3,6", "true", "off", "1e400", "-1", "0", "9" * 40, "nan",
                                    "inf", "1.5GiB", " 2 ", "host", "private", "\0", "3-1", "0x10"]),
                   st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2))


@SOME
@given(st.dictionaries(KEYS, VALUES, max_size=6))
def test_settings_are_normalized_or_refused_with_every_problem(config: dict) -> None:
    try:
        out = inst_settings.validate(config)
    except ConfigError as e:
        assert e.problems and all(isinstance(p, str) and p for p in e.problems)
        return
    # what passed is stable: validating the result again gives the result
    assert inst_settings.validate(out) == out
    assert set(out) <= set(config)


@SOME
@given(st.one_of(st.text(max_size=30), st.integers(min_value=-2**70, max_value=2**70), st.floats(), st.booleans(), st.none()))
def test_size_parser(value: object) -> None:
    try:
        n = inst_settings.parse_size(value)
    except ValueError as e:
        assert "size" in str(e) or "too small" in str(e), str(e)
    else:
        assert isinstance(n, int) and n >= 1


@pytest.mark.root
@settings(max_examples=60, deadline=None)
@given(TRICKS)
def test_the_driver_makes_nothing_for_a_refused_name(tmp_path_factory: pytest.TempPathFactory, name: str) -> None:
    """An Instance record built around the model's check (as a corrupt row would be) is refused by
    the container driver before it makes a folder, a volume or a mount."""
    from jaula.instances.container import ContainerDriver
    from jaula.storage import TemplateStore
    from jaula.storage.pool import open_pool

    top = tmp_path_factory.mktemp("bad-name")
    pool = open_pool("dir", str(top / "pool"))
    driver = ContainerDriver(str(top / "run"), pool, TemplateStore(root=top / "templates", cache=top / "cache"))
    before = sorted(str(p.relative_to(top)) for p in Path(top).rglob("*"))
    inst = Instance(name=name, template="bb", idmap_base=65536 * 20)
    with pytest.raises(ConfigError, match=re.escape(RULE)):
        driver.create(inst)
    assert sorted(str(p.relative_to(top)) for p in Path(top).rglob("*")) == before
    assert mounts_under(str(top)) == []
