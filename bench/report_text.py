"""The fixed text of docs/benchmarks.md: how each side is measured, and where the profiling
behind the design is recorded (bench.report puts the run's figures around it)."""

NOTE = """\
Figures from a **shared 2-core machine** (other jobs may run at the same time: the load
average at the start is above), loopback, every process real. Medians over the repeats;
"x etcd" is the median of each repeat's own ratio
(kds and etcd run back to back, so the ratio holds better than either figure). Produced by
`scripts/bench` (see the README); raw results in `benchmarks.json`.

How each side is measured:
- **kds**: a real `globalcp` process (default settings, JSON logs at info); zones run as
  fleets of real `ZoneClient`s, each with its own SQLite store and its own gRPC stream; 10
  zones share two processes, 100 zones two as well. The propagation scenario runs again with
  each zone in a process of its own, as zones are deployed (and each etcd watcher in its
  own): the "a process each" figures. Sync runs as in production: TLS with global's own CA
  and a zone token per zone; gRPC as the daemons set it (`GRPC_EXPERIMENTS=-event_engine_client`,
  `kds/grpc_env.py`). The "plaintext" columns run the same scenario with `--kds-insecure` (no TLS,
  no tokens), as etcd runs here. Single writes are HTTP PUTs to global's API, sent with
  kdsctl's own client (the standard library's http.client, one kept-alive connection),
  timed from the API's answer to the commit on the last zone. Bulk is one `kdsctl apply -f`
  of a YAML file, timed from starting kdsctl to the commit on the last zone.
- **etcd** (Debian's etcd-server, one member, temp data dir): writes are KV.Put (bulk: one Txn
  of all the puts), watchers are grpc.aio Watch streams on a prefix, each on its own channel
  and TCP connection (as each zone is), at gRPC's default settings, split across processes
  like the zones, keeping
  key -> value in memory (no disk, no acknowledgement). Timed from the write's answer (bulk:
  from sending the Txn) to the last watcher receiving it.

Reading the ratios: etcd sends watch events as it answers the write, so its figure "from the
acknowledgement" is near zero for one watcher, and any ratio over it is large; the table timed
from sending the write counts both sides' own commit. A zone does more than a watcher: it
decodes, plans and commits each batch to SQLite and acknowledges it (one ack may cover the
batches that came within `--ack-delay`, 500 ms by default, of each other). With 100 zones, 50 zones share one
process and its one interpreter lock on a 2-core machine that also runs global, so the
100-zone figures measure how much CPU the zones and global need per write more than any
wait; a zone on its own host pays none of the other 49 zones' work. With a process each,
no zone waits on another's apply, but every process wakes for every write, so each member
costs about twice the CPU and a hundred processes share the two cores. The bulk figure for kds
includes starting kdsctl and parsing a 10,000-document YAML file; etcd's starts from a
transaction already built in memory.
"""


PROFILED = """## What was profiled and fixed

The profiling that led to the current design, each fix with its before and after, is in
[performance-work.md](performance-work.md). Those figures come from the investigations
themselves, each under its own conditions, not from this run.
"""
