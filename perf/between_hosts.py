"""A profile's link between hosts, from what ``collectives-tune --netns`` measured beside loopback.

    collectives-tune --transports tcp --netns --out t1.json      # tcp and tcp_hosts, side by side
    python perf/between_hosts.py t1.json,t2.json --base collectives/tuning/default_profile.json --out p.json

A tuned profile's ``tcp`` and ``tcp_hosts`` entries are fitted the same way seconds apart
(loopback, then two network namespaces), so the ratio of their β is what a byte between hosts
costs more than over loopback, whatever terms the fit leaves out. This writes ``--base`` with
a ``tcp_hosts`` entry: its ``tcp`` entry with β times that ratio (summed over the tuned
files), everything else kept, so the terms fitted to whole runs (waits, crowds, caches) stay.
α is kept too: at 2 ranks the sweep's fit trades α against the per-call overhead, so their
ratio is noise, and the small calls it times measure alike on both links (docs/simulation.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from collectives.tuning.profile import BETWEEN_HOSTS, Profile, load

HOSTS = "tcp" + BETWEEN_HOSTS


def beta_ratio(tuned: list[Profile]) -> float:
    """β of ``tcp_hosts`` over ``tcp``'s, each summed over the profiles."""
    missing = [p.source for p in tuned if HOSTS not in p.transports or "tcp" not in p.transports]
    if missing:
        raise SystemExit(f"between_hosts.py: {missing[0]!r} has no tcp and {HOSTS} entries (collectives-tune --netns)")
    return sum(p.transports[HOSTS].beta for p in tuned) / sum(p.transports["tcp"].beta for p in tuned)


def with_hosts(base: Profile, beta: float, note: str) -> Profile:
    """``base`` and a ``tcp_hosts`` entry: its tcp with β times ``beta``."""
    tcp = base.costs("tcp")
    hosts = dataclasses.replace(tcp, beta=tcp.beta * beta)
    return dataclasses.replace(base, transports={**base.transports, HOSTS: hosts}, source=f"{base.source}; {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tuned", help="profiles of collectives-tune --netns, comma-separated")
    parser.add_argument("--base", required=True, help="the profile to give a link between hosts")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    beta = beta_ratio([load(path) for path in args.tuned.split(",")])
    base = load(args.base)
    profile = with_hosts(base, beta, f"{HOSTS}: tcp with beta x{beta:.3f} (perf/between_hosts.py {args.tuned})")
    profile.save(args.out)
    print(f"# {HOSTS}: tcp's beta x{beta:.3f}")
    print("\n".join(profile.describe()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
