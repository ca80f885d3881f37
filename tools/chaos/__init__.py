"""Thrash a lab under a journalled workload and judge every fault (issue 15).

    python -m tools.chaos [--seed 1] [--rounds 3] [--roles ROLE,...]
                          [--faults kill,stop,cut,rotate]
                          [--rate 200] [--recovery-timeout 60] [--dir DIR] [--keep]
                          [--json report.json]

In the manner of teuthology's thrashers: a lab (:mod:`rcn.lab`, real daemons on loopback)
runs a host (:mod:`rcn.bench.workload`: stamped blocks over NBD to the source volume, a
journal of every acknowledged write); then, role after role, at random moments drawn
from ``--seed``, one fault:

* ``kill``  -- SIGKILL the role's daemon, then start it again with the same file and
  ports (:func:`rcn.lab.restart`);
* ``stop``  -- SIGSTOP it for a random 0.5-5 s, then SIGCONT;
* ``cut``   -- take the role's WAN links down through ``rcn-wanem``'s SCPI console
  (:class:`rcn.wanem.driver.WanemDriver`) for a random 0.5-5 s, then up again;
* ``rotate`` -- (``mgmt`` only) rotate every link and group key through the management
  server (``POST /api/v1/keys/rotate``, as ``rcn key rotate --all``) and wait until each
  new epoch is the one sent with (:mod:`tools.chaos.keys`). Besides the checks below, the
  edges' ``/status`` from before it to after the recovery must show no refusal of the
  seal and no retransmission storm. Without the endpoint the fault is *skipped*.

Both labs run sealed, as every configuration does (issue 17): the management lab's devices
take their keys from the server's snapshots, the WAN emulator lab's from the key files
``rcn lab`` writes (each end of an emulated link names the other by the emulator's port).

Roles: ``source-array`` (arrayA), ``target-array`` (arrayB), ``source-edge`` (edgeA),
``target-edge`` (edgeB), ``core`` (core1), ``mgmt`` (the management server). ``--rounds
N`` is the number of faults per role; a role's faults go round the kinds that apply to
it (shuffled by the seed), and the roles take turns. ``kill``, ``stop`` and ``rotate`` run
in the default lab (``mgmt = true``, pairs made with pair-create); ``cut`` in a lab with two
WAN emulator links, edgeA-core1 (LINK1) and core1-edgeB (LINK2), which ``rcn lab`` can
only build with static tables (no management server). A cut of the source edge is LINK1,
of the target edge LINK2, of the core both. Arrays and the management server are not
cut: their links (FCIP to the edge, AMP) do not pass through the emulator in a lab.

After each fault chaos waits for the documented recovery (``RECOVERY`` in
:mod:`tools.chaos.catalogue`: automatic, or ``rcn array resync`` on the source array once
the pair shows Suspend or failure Suspend, docs/pairs.md) until every party shows the pair
Duplex -- both arrays (rows and FCIP link up), both edges' ``/status`` and, with a
management server, its ``/pairs`` and every device up to date -- and the target edge has
applied everything the source edge had logged when that first held. The time from the
fault's end (restarted, SIGCONT, link up) to then is the recovery time. Then, on the live
target volume:

* invariant 1 (DESIGN.md): :func:`rcn.bench.consistency.check_prefix` of every host's
  region -- each write acknowledged before the newest write visible on the target is
  there (else *lost*), no block is *torn*;
* *backwards*: no block shows an older write of its host than it showed at the previous
  check (k never decreases);
* invariant 5, bounded resources: each daemon's resident memory and open descriptors
  under ``RSS_LIMIT`` and ``FD_LIMIT``;
* invariant 6, bad input answered: each daemon answers ``/metrics`` (200) and a request
  for a path it does not have with a 4xx (the WAN emulator: ``*IDN?``, and an unknown
  command answered with an error in ``SYST:ERR?``).

A fault after which no documented recovery brings Duplex back within
``--recovery-timeout`` seconds is *stuck*: chaos records what each party shows (arrays,
edges' ``/status``, the management server), stops that lab and carries on in a fresh
one. A host whose connection died with the source array starts again on a new region of
the volume (its own run id and journal), as a host reconnects. At the end of each lab the
hosts stop, the target drains, the volumes are compared (sha256) and every host's region
checked with :func:`rcn.bench.consistency.check_final`.

The table has a row per role: faults, writes acknowledged during them, lost, torn,
backwards, recovery time p50/max, manual steps (commands issued), stuck, the
resource/answer checks that failed, and (``seal``) rotations' refusals and storms and the
faults skipped. ``--json`` writes every fault's record too. Exit
status 0 when nothing was lost, torn, went backwards, got stuck, broke a bound or (a
rotation) was refused or stormed; 1
otherwise; 2 for bad options. The lab directories are removed at the end unless the run
failed and ``--keep`` was given (``--dir``: kept always).

The package, one concern a module: :mod:`~tools.chaos.catalogue` (roles, fault kinds, the
documented recovery per fault, the plan), :mod:`~tools.chaos.parties` (what the arrays,
edges and management server show), :mod:`~tools.chaos.probes` (invariants 5 and 6),
:mod:`~tools.chaos.keys` (the rotation fault and its seal checks),
:mod:`~tools.chaos.driver` (the labs, hosts and faults of a run),
:mod:`~tools.chaos.report` (a fault's record, the table) and :mod:`~tools.chaos.cli`.
"""
