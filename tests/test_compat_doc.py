"""corefile-compat.md names every plugin of CoreDNS's plugin.cfg, and tells the truth about
which ones this build supports."""

from __future__ import annotations

from dnsserver.assembly import setups
from dnsserver.corefile import PLUGIN_ORDER

from helpers import ROOT


def table() -> dict[str, str]:
    rows: dict[str, str] = {}
    for line in (ROOT / "corefile-compat.md").read_text().splitlines():
        if not line.startswith("| ") or line.startswith(("| plugin", "|---")):
            continue
        names, status = (c.strip() for c in line.strip("|").split("|")[:2])
        for name in names.split(","):
            rows[name.strip()] = status
    return rows


def test_every_plugin_has_a_row_and_the_status_matches_the_build() -> None:
    rows = table()
    assert set(PLUGIN_ORDER) <= set(rows), set(PLUGIN_ORDER) - set(rows)
    built = set(setups())
    for name in PLUGIN_ORDER:
        said = rows[name]
        assert (name in built) == (said in ("supported", "partly")), (name, said)
