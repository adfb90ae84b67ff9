"""A profile's link between hosts, from what ``collectives-tune --netns`` measured beside loopback.

    collectives-tune --transports tcp --netns --out t1.json      # tcp and tcp_hosts, side by side
    python perf/between_hosts.py t1.json,t2.json --base collectives/tuning/default_profile.json --out p.json

A tuned profile's ``tcp`` and ``tcp_hosts`` entries are fitted the same way a few seconds
apart (loopback, then two network namespaces), so their ratio is what the link between hosts
costs more than loopback, whatever terms the fit leaves out. This writes ``--base`` with a
``tcp_hosts`` entry: its ``tcp`` entry, α and β times those ratios (summed over the tuned
files), everything else kept, so the terms fitted to whole runs (waits, crowds, caches) stay.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from collectives.tuning.profile import BETWEEN_HOSTS, Profile, TransportCosts, load

HOSTS = "tcp" + BETWEEN_HOSTS


def ratios(tuned: list[Profile]) -> tuple[float, float]:
    """α and β of ``tcp_hosts`` over ``tcp``'s, each summed over the profiles."""
    missing = [p.source for p in tuned if HOSTS not in p.transports or "tcp" not in p.transports]
    if missing:
        raise SystemExit(f"between_hosts.py: {missing[0]!r} has no tcp and {HOSTS} entries (collectives-tune --netns)")
    alpha = sum(p.transports[HOSTS].alpha for p in tuned) / sum(p.transports["tcp"].alpha for p in tuned)
    beta = sum(p.transports[HOSTS].beta for p in tuned) / sum(p.transports["tcp"].beta for p in tuned)
    return alpha, beta


def with_hosts(base: Profile, alpha: float, beta: float, note: str) -> Profile:
    """``base`` and a ``tcp_hosts`` entry: its tcp, α times ``alpha``, β times ``beta``."""
    tcp = base.costs("tcp")
    hosts: TransportCosts = dataclasses.replace(tcp, alpha=tcp.alpha * alpha, beta=tcp.beta * beta)
    return dataclasses.replace(base, transports={**base.transports, HOSTS: hosts}, source=f"{base.source}; {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tuned", help="profiles of collectives-tune --netns, comma-separated")
    parser.add_argument("--base", required=True, help="the profile to give a link between hosts")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    alpha, beta = ratios([load(path) for path in args.tuned.split(",")])
    base = load(args.base)
    profile = with_hosts(base, alpha, beta, f"{HOSTS}: tcp with alpha x{alpha:.3f}, beta x{beta:.3f} ({args.tuned})")
    profile.save(args.out)
    print(f"# alpha x{alpha:.3f}, beta x{beta:.3f}")
    print("\n".join(profile.describe()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
