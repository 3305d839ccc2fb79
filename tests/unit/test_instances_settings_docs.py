"""docs/instances.md's settings table against instances/settings.py: every declared key (and the
free namespaces) has its row, and the row's type, default and live columns say what the code
does. The table keeps its hand-written meanings (richer than the settings' one-line help), so
it is checked rather than generated."""

from __future__ import annotations

import re
from pathlib import Path

from jaula.instances import settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "instances.md"
TYPE_WORDS = {"size": "size", "cpus": "cpus", "bool": "bool", "cpuset": "cpu list"}


def _rows() -> dict[str, list[str]]:
    """key -> [type, default, live, meaning] for each row of the table under "## Settings"."""
    section = DOC.read_text().split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[0].startswith("`"):
            continue
        for key in re.findall(r"`([^`]+)`", cells[0]):
            rows[key] = cells[1:]
    return rows


def test_every_setting_has_a_row_and_no_row_is_unknown() -> None:
    rows = _rows()
    assert set(rows) == set(settings.SETTINGS) | set(settings.FREE_HELP), (
        "docs/instances.md's settings table and instances/settings.py differ: "
        f"missing {sorted(set(settings.SETTINGS) | set(settings.FREE_HELP) - set(rows))}, "
        f"unknown {sorted(set(rows) - set(settings.SETTINGS) - set(settings.FREE_HELP))}")


def test_each_row_says_the_settings_type_default_and_liveness() -> None:
    rows = _rows()
    for key, s in settings.SETTINGS.items():
        type_, default, live, _ = rows[key]
        assert live == ("yes" if s.live else "no"), (key, live)
        if s.default is not None:
            assert default == settings.show(key, s.default), (key, default, s.default)
        if s.type in TYPE_WORDS:
            assert type_ == TYPE_WORDS[s.type], (key, type_)
        elif s.type == "string":  # its choices
            for choice in re.findall(r"[a-z]+", type_):  # each a value its check takes
                s.parse(choice)
    for key in ("user.*", "environment.*"):
        assert rows[key][2] == "yes"  # free keys are always live (settings.is_live)
    assert rows["nic.<name>.*"][2] == "limits only"
    assert settings.is_live("nic.eth0.limits.egress") and not settings.is_live("nic.eth0.network")
