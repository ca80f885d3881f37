"""Fuzz every parser and network-facing handler of the RCN (issue 15).

    python -m tools.fuzz --list
    python -m tools.fuzz TARGET [TARGET...] --runs N --seed S [--max-seconds T] [--atheris]
    python -m tools.fuzz --replay [TARGET...]          # corpus + regressions, no mutation
    python -m tools.fuzz all --runs 2000                # every target

The targets live in :mod:`tools.fuzz_targets` (one row each: what it feeds, its seeds from
the project's builders, the exceptions it declares clean, its memory bound). A failure is
anything but a declared outcome: an exception of another type, a hang (one input running
longer than ``--hang-seconds``, 1 s by default), a tracemalloc peak over the target's
bound, or a traceback the code logged (``log.failure``) while handling the input.

Engine: a seeded mutation fuzzer (bit flips, byte inserts and deletes, interesting integers
written at the offsets of the field tables in ``datapath/frames`` -- length and count fields
first --, splices with other corpus entries, dictionary words for text targets), guided by
the feature each target returns (which error, which kind of record): an input that shows a
new one joins the corpus. ``--atheris`` runs the same target under atheris (libFuzzer,
coverage-guided; ``pip install atheris``) instead.

Corpus: ``tests/fuzz/corpus/<target>/`` (seeds and the inputs that found new features;
``--save-corpus`` adds this run's, a few at a time). Findings are written to
``tests/fuzz/regressions/<target>/<sha1>.bin`` with a ``.txt`` beside it (what failed);
``make test`` replays both directories (tests/tools/test_fuzz.py). A regression input named
``xfail-*.bin`` is a known finding in code that is fixed elsewhere: the replay expects it to
fail still, and says so when it no longer does.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import resource
import signal
import sys
import time
import traceback
import tracemalloc
from dataclasses import dataclass, field

from tools.fuzz_targets import load
from tools.fuzz_targets.kit import Finding, Target

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS_DIR = os.path.join(ROOT, "tests", "fuzz", "corpus")
REGRESSION_DIR = os.path.join(ROOT, "tests", "fuzz", "regressions")
HANG_SECONDS = 1.0
MAX_CORPUS_SAVE = 8          # new corpus entries written per target per run (--save-corpus)

#: values that break length and count checks, per field width in bytes
_INTERESTING = (0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 63, 64, 100, 127, 128, 255, 256, 511,
                512, 1023, 1024, 2047, 2048, 2112, 4095, 4096, 4097, 32767, 32768, 65535, 65536,
                1 << 20, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, 1 << 62, (1 << 63) - 1,
                1 << 63, (1 << 64) - 1)
_LENGTHY = ("len", "count", "size", "dl", "items", "offset", "index", "total", "words")


class Hang(BaseException):
    """The input ran past the hang limit (BaseException: no ``except Exception`` eats it)."""


@dataclass
class Outcome:
    feature: object = None
    failure: str | None = None       # None: a declared outcome
    kind: str = ""                   # crash, hang, memory, mismatch, logged
    signature: str = ""              # what makes two findings the same bug
    seconds: float = 0.0
    peak: int = 0


@dataclass
class Stats:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    findings: list = field(default_factory=list)     # Outcome, data
    new_corpus: list = field(default_factory=list)
    features: int = 0

    def line(self) -> str:
        rate = self.inputs / self.seconds if self.seconds else 0.0
        return (f"{self.target}: {self.inputs} inputs, {rate:.0f} exec/s, "
                f"{len(self.findings)} findings, {len(self.new_corpus)} new corpus entries, "
                f"{self.features} features")


# -- logged tracebacks ----------------------------------------------------------------------------

class _FailureLog:
    """Collects ``log.failure`` events (tracebacks the code logged instead of raising)."""

    def __init__(self):
        self.events: list[dict] = []
        self.installed = False

    def __call__(self, event: dict) -> None:
        if "log_failure" in event:
            self.events.append(event)

    def install(self) -> None:
        if not self.installed:
            from twisted.logger import globalLogPublisher
            globalLogPublisher.addObserver(self)
            self.installed = True

    def take(self) -> list[dict]:
        events, self.events = self.events, []
        return events


FAILURE_LOG = _FailureLog()


def quiet_logging() -> None:
    """CLI only: start Twisted's logging with our observer alone (no buffered events)."""
    from twisted.logger import globalLogBeginner
    globalLogBeginner.beginLoggingTo([FAILURE_LOG], discardBuffer=True, redirectStandardIO=False)
    FAILURE_LOG.installed = True


# -- running one input ----------------------------------------------------------------------------

def _where(exc: BaseException, line: bool = True, outermost: bool = False) -> str:
    """The innermost frame of the project's own code in the traceback (``line``: with its
    line number; signatures leave it out, so they survive edits elsewhere in the file).
    ``outermost``: the handler the harness called instead (where a hang was interrupted is
    chance; the handler it hangs in is not)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f.filename.startswith(ROOT) and "/tools/fuzz" not in f.filename
            and "/.venv/" not in f.filename]
    f = (ours or frames or [None])[0 if outermost and ours else -1]
    if f is None:
        return ""
    name = f.filename.split("site-packages/")[-1] if "site-packages/" in f.filename \
        else os.path.relpath(f.filename, ROOT)
    return f" at {name}{f':{f.lineno}' if line else ''} ({f.name})"


def _on_alarm(signum, frame):
    raise Hang()


def run_one(target: Target, data: bytes, hang_seconds: float = HANG_SECONDS,
            memory: bool = True) -> Outcome:
    """Run ``target`` on ``data`` and judge the result. A hang is confirmed by running the
    input once more: the first run may have paid a one-time cost (a module imported on
    first use, a numba compile) or lost the CPU to other processes for a moment."""
    out = _attempt(target, data, hang_seconds, memory)
    if out.kind == "hang":
        again = _attempt(target, data, hang_seconds, memory)
        if again.kind != "hang":
            return again
    return out


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _attempt(target: Target, data: bytes, hang_seconds: float, memory) -> Outcome:
    """``memory``: True (tracemalloc peak), ``"rss"`` (growth of the process's peak RSS:
    cheap, for long runs; it sees an input only when it sets a new peak) or False."""
    FAILURE_LOG.take()
    out = Outcome()
    if memory == "rss":
        rss = _maxrss()
    elif memory:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, hang_seconds)
    start = time.perf_counter()
    try:
        out.feature = target.run(data)
    except Hang as exc:
        out.kind = "hang"
        out.failure = f"still running after {hang_seconds:g} s{_where(exc)}"
        out.signature = f"hang{_where(exc, False, outermost=True)}"
    except Finding as exc:
        out.kind, out.failure = "mismatch", str(exc)[:2000]
        out.signature = "mismatch: " + str(exc)[:40]
    except target.clean as exc:
        out.feature = ("clean", type(exc).__name__, getattr(exc, "field", None))
    except BaseException as exc:   # noqa: B036 -- everything else is the finding
        if isinstance(exc, KeyboardInterrupt):
            raise
        out.kind = "crash"
        out.failure = f"{type(exc).__name__}: {str(exc)[:300]}{_where(exc)}"
        out.signature = f"{type(exc).__name__}{_where(exc, False)}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        out.seconds = time.perf_counter() - start
    if memory:
        out.peak = _maxrss() - rss if memory == "rss" else \
            tracemalloc.get_traced_memory()[1] - base
        bound = target.memory_bound(len(data))
        if out.failure is None and out.peak > bound:
            out.kind, out.signature = "memory", "memory"
            out.failure = (f"{'peak RSS grew' if memory == 'rss' else 'tracemalloc peak'} "
                           f"{out.peak} bytes for a {len(data)}-byte input, "
                           f"over the bound {bound} ({target.memory_text})")
    logged = FAILURE_LOG.take()
    if any(e["log_failure"].check(Hang) for e in logged):
        # a handler that catches everything (maybeDeferred) logged the alarm: still a hang
        out.kind, out.failure = "hang", f"still running after {hang_seconds:g} s (caught and logged)"
        out.signature = "hang"
    elif logged and out.kind in ("", "mismatch"):
        failure = logged[0]["log_failure"]
        cause = f"{failure.type.__name__}{_where(failure.value, False)}"
        text = f"logged traceback: {failure.type.__name__}: {str(failure.value)[:300]}" \
               f"{_where(failure.value)}"
        if out.failure is None:
            out.kind, out.failure, out.signature = "logged", text, cause
        else:                                  # a 500 and the traceback behind it
            out.failure, out.signature = f"{out.failure} ({text})", cause
    return out


# -- mutation --------------------------------------------------------------------------------------

class Mutator:
    """Seeded mutations of one target's inputs (see the module doc)."""

    def __init__(self, target: Target, rng: random.Random):
        self.target = target
        self.rng = rng
        self.fields = []          # (marker, offset, layout, field, field offset, weight)
        for marker, offset, layout in target.fields:
            for f in layout.fields:
                if f.raw:
                    continue
                weight = 4 if any(w in f.name for w in _LENGTHY) else 1
                self.fields.append((marker, offset + layout.offsets[f.name], f.width, weight))
        self.weights = [w for *_, w in self.fields]

    def mutate(self, data: bytes, corpus: list[bytes]) -> bytes:
        rng = self.rng
        out = bytearray(data)
        for _ in range(1 + int(rng.expovariate(0.7))):
            op = rng.randrange(10)
            if op <= 2 and self.fields:
                self._field(out)
            elif op == 3:
                self._flip(out)
            elif op == 4:
                self._set_byte(out)
            elif op == 5:
                self._insert(out)
            elif op == 6:
                self._delete(out)
            elif op == 7 and corpus:
                out = self._splice(out, rng.choice(corpus))
            elif op == 8 and self.target.tokens:
                self._token(out)
            else:
                self._arith(out)
        out = bytes(out[:self.target.max_len])
        if self.target.fixup is not None:
            out = self.target.fixup(out, rng)
        return out

    def _anchors(self, out: bytearray, marker: bytes | None) -> list[int]:
        if marker is None:
            return [0]
        found, at = [], out.find(marker)
        while at >= 0 and len(found) < 64:
            found.append(at)
            at = out.find(marker, at + 1)
        return found

    def _field(self, out: bytearray) -> None:
        marker, offset, width, _ = self.rng.choices(self.fields, self.weights)[0]
        anchors = self._anchors(out, marker)
        if not anchors:
            return
        at = self.rng.choice(anchors) + offset
        if at < 0 or at + width > len(out):
            return
        choice = self.rng.random()
        if choice < 0.6:
            value = self.rng.choice(_INTERESTING)
        elif choice < 0.8:
            value = len(out) + self.rng.randint(-8, 8)
            if self.rng.random() < 0.5:
                value //= 4
        else:
            value = int.from_bytes(out[at:at + width], "big") + self.rng.randint(-16, 16)
        out[at:at + width] = (value % (1 << (8 * width))).to_bytes(width, "big")

    def _flip(self, out: bytearray) -> None:
        if out:
            out[self.rng.randrange(len(out))] ^= 1 << self.rng.randrange(8)

    def _set_byte(self, out: bytearray) -> None:
        if out:
            out[self.rng.randrange(len(out))] = self.rng.choice((0, 0xFF, 0x7F, 0x80, 1,
                                                                 self.rng.randrange(256)))

    def _insert(self, out: bytearray) -> None:
        at = self.rng.randint(0, len(out))
        if self.rng.random() < 0.5 and out:
            start = self.rng.randrange(len(out))
            chunk = out[start:start + self.rng.randint(1, 64)]      # repeat a piece
        else:
            chunk = bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 8)))
        out[at:at] = chunk

    def _delete(self, out: bytearray) -> None:
        if out:
            at = self.rng.randrange(len(out))
            del out[at:at + self.rng.choice((1, 1, 2, 4, 8, 64, len(out)))]

    def _splice(self, out: bytearray, other: bytes) -> bytearray:
        if not other:
            return out
        cut = self.rng.randint(0, len(out))
        start = self.rng.randrange(len(other))
        return out[:cut] + other[start:start + self.rng.randint(1, len(other))]

    def _token(self, out: bytearray) -> None:
        token = self.rng.choice(self.target.tokens)
        at = self.rng.randint(0, len(out))
        if self.rng.random() < 0.5:
            end = at
            while end < len(out) and chr(out[end]).isalnum():
                end += 1
            out[at:end] = token                                    # replace a word
        else:
            out[at:at] = token

    def _arith(self, out: bytearray) -> None:
        if len(out) >= 4:
            at = self.rng.randrange(len(out) - 3)
            width = self.rng.choice((1, 2, 4))
            value = int.from_bytes(out[at:at + width], "big") + self.rng.randint(-35, 35)
            out[at:at + width] = (value % (1 << (8 * width))).to_bytes(width, "big")


# -- corpus and findings -------------------------------------------------------------------------

def _files(directory: str) -> list[tuple[str, bytes]]:
    if not os.path.isdir(directory):
        return []
    out = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".txt") or name.startswith("."):
            continue
        with open(os.path.join(directory, name), "rb") as f:
            out.append((name, f.read()))
    return out


def corpus_files(target: str) -> list[tuple[str, bytes]]:
    return _files(os.path.join(CORPUS_DIR, target))


def regression_files(target: str) -> list[tuple[str, bytes]]:
    return _files(os.path.join(REGRESSION_DIR, target))


def seeds(target: Target) -> list[bytes]:
    """The builders' seeds and the kept corpus, without duplicates, in a fixed order."""
    out, seen = [], set()
    for data in [*target.seeds(), *(d for _, d in corpus_files(target.name))]:
        if data not in seen:
            seen.add(data)
            out.append(data)
    return out


def _name(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:16]


def save_finding(target: str, data: bytes, outcome: Outcome, directory: str = REGRESSION_DIR,
                 prefix: str = "") -> str:
    """``<sha1>.bin`` and a ``.txt`` beside it: the signature, what failed, the input in hex.
    ``prefix`` ``xfail-``: a known finding in code this tool may not fix (see the module doc)."""
    path = os.path.join(directory, target, prefix + _name(data) + ".bin")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    with open(path[:-4] + ".txt", "w") as f:
        f.write(f"signature: {outcome.signature}\n{outcome.kind}: {outcome.failure}\n"
                f"input ({len(data)} bytes): {data[:512].hex()}{'...' if len(data) > 512 else ''}\n")
    return path


def known_signatures(target: str) -> dict[str, str]:
    """signature -> file of the target's ``xfail-`` regression inputs (known findings)."""
    out = {}
    directory = os.path.join(REGRESSION_DIR, target)
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else ():
        if name.startswith("xfail-") and name.endswith(".txt"):
            with open(os.path.join(directory, name)) as f:
                first = f.readline()
            if first.startswith("signature: "):
                out[first[len("signature: "):].rstrip("\n")] = name[:-4] + ".bin"
    return out


def save_corpus(target: str, data: bytes) -> str:
    path = os.path.join(CORPUS_DIR, target, _name(data))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


# -- the engines ---------------------------------------------------------------------------------

def fuzz(target: Target, runs: int, seed: int = 0, max_seconds: float | None = None,
         hang_seconds: float = HANG_SECONDS, memory: bool = True, progress=None,
         progress_every: float = 10.0, stop_on_finding: bool = False) -> Stats:
    """The built-in engine: replay the seeds, then ``runs`` mutants (fewer if time runs out)."""
    rng = random.Random(f"{target.name}:{seed}")
    mutator = Mutator(target, rng)
    stats = Stats(target.name)
    corpus = seeds(target)
    seen: set = set()
    start = time.perf_counter()
    next_report = start + progress_every

    def one(data: bytes, mutant: bool) -> None:
        outcome = run_one(target, data, hang_seconds, memory)
        stats.inputs += 1
        if outcome.failure is not None:
            stats.findings.append((outcome, data))
            return
        try:
            feature = hash(outcome.feature)
        except TypeError:
            feature = hash(repr(outcome.feature))
        if feature not in seen:
            seen.add(feature)
            if mutant:
                corpus.append(data)
                stats.new_corpus.append(data)

    for data in list(corpus):
        one(data, False)
    for _ in range(runs):
        if stop_on_finding and stats.findings:
            break
        now = time.perf_counter()
        if max_seconds is not None and now - start > max_seconds:
            break
        if progress is not None and now >= next_report:
            next_report = now + progress_every
            stats.seconds, stats.features = now - start, len(seen)
            progress(stats)
        one(mutator.mutate(rng.choice(corpus), corpus), True)
    stats.seconds = time.perf_counter() - start
    stats.features = len(seen)
    return stats


def fuzz_atheris(target: Target, runs: int, seed: int, max_seconds: float | None,
                 hang_seconds: float, memory: bool) -> None:
    """libFuzzer through atheris; a finding is saved, printed, and ends the run (exit 1)."""
    import tempfile

    import atheris

    work = tempfile.mkdtemp(prefix=f"rcn-fuzz-{target.name}-")
    for data in seeds(target):
        with open(os.path.join(work, _name(data)), "wb") as f:
            f.write(data)

    def test_one_input(data: bytes) -> None:
        outcome = run_one(target, data, hang_seconds, memory)
        if outcome.failure is not None:
            path = save_finding(target.name, data, outcome)
            print(f"\n{target.name}: {outcome.kind}: {outcome.failure}\n  saved {path}",
                  flush=True)
            raise RuntimeError(outcome.failure)

    args = [sys.argv[0], work, f"-runs={runs}", f"-seed={seed or 1}",
            f"-max_len={target.max_len}", "-print_final_stats=1"]
    if max_seconds:
        args.append(f"-max_total_time={int(max_seconds)}")
    print(f"{target.name}: instrumented {_instrument_project(atheris)} functions", flush=True)
    atheris.Setup(args, test_one_input)
    print(f"{target.name}: atheris working corpus in {work}", flush=True)
    atheris.Fuzz()


def _instrument_project(atheris) -> int:
    """Coverage for the project's own functions (atheris.instrument_all() would take every
    loaded library too: minutes, and coverage of numpy that guides nothing)."""
    import inspect
    done = 0
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None) or ""
        if not path.startswith(ROOT) or "/.venv/" in path or "/tools/" in path:
            continue
        for obj in list(vars(module).values()):
            members = vars(obj).values() if inspect.isclass(obj) else (obj,)
            for func in members:
                func = getattr(func, "__func__", func)
                if inspect.isfunction(func) and func.__module__ == module.__name__:
                    atheris.instrument_func(func)
                    done += 1
    return done


def replay(target: Target, hang_seconds: float = HANG_SECONDS, memory: bool = True) -> list:
    """Corpus and regressions once each: ``(name, outcome, expected_failure)`` for every file
    whose outcome is not what it should be (a failure, or an ``xfail-`` input that passes)."""
    wrong = []
    for name, data in [*(("seed", d) for d in target.seeds()),
                       *corpus_files(target.name), *regression_files(target.name)]:
        expected = name.startswith("xfail-")
        # a known hang hangs at any limit; the short one keeps the replay quick
        outcome = run_one(target, data, min(hang_seconds, HANG_SECONDS) if expected
                          else hang_seconds, memory)
        if (outcome.failure is not None) != expected:
            wrong.append((name, outcome, expected))
    return wrong


# -- the command line --------------------------------------------------------------------------

def _print_progress(stats: Stats) -> None:
    print(f"  ... {stats.line()} after {stats.seconds:.0f} s", flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.fuzz", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", metavar="TARGET", help="target names, or 'all'")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--replay", action="store_true",
                        help="run the corpus and regression inputs once, no mutation")
    parser.add_argument("--runs", type=int, default=10_000, help="mutated inputs per target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, help="stop each target after this long")
    parser.add_argument("--hang-seconds", type=float, default=HANG_SECONDS,
                        help=f"one input running longer is a hang (default {HANG_SECONDS:g})")
    parser.add_argument("--memory", choices=("tracemalloc", "rss", "off"), default="tracemalloc",
                        help="the memory check: tracemalloc peak per input (default), growth "
                             "of the peak RSS (5x faster: long runs), or none")
    parser.add_argument("--atheris", action="store_true",
                        help="coverage-guided with atheris (one target; pip install atheris)")
    parser.add_argument("--save-corpus", action="store_true",
                        help=f"keep up to {MAX_CORPUS_SAVE} new corpus entries per target in "
                             "tests/fuzz/corpus")
    parser.add_argument("--no-save", action="store_true", help="do not write findings")
    parser.add_argument("--xfail", action="store_true",
                        help="save new findings as xfail- inputs (known bugs fixed elsewhere)")
    parser.add_argument("--progress", type=float, default=30.0,
                        help="seconds between progress lines (default 30)")
    return parser


def _print_list(targets: dict[str, Target]) -> None:
    for t in targets.values():
        tag = " [parser]" if t.parser else ""
        print(f"{t.name}{tag}\n    {t.doc}\n    clean: "
              f"{', '.join(e.__name__ for e in t.clean) or 'nothing but returning'}; "
              f"memory bound: {t.memory_text}")


def _chosen(args, targets: dict[str, Target], parser: argparse.ArgumentParser) -> list[str]:
    """The target names to run: all of them for 'all' (or none named, with --replay)."""
    names = list(targets) if args.targets in ([], ["all"]) and args.replay or \
        args.targets == ["all"] else args.targets
    if not names:
        parser.error("name a target (--list shows them), or 'all'")
    unknown = [n for n in names if n not in targets]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; --list shows them")
    return names


def _replay_one(target: Target, args, memory) -> bool:
    """Replay one target's inputs and print what is wrong; True if anything is."""
    name = target.name
    wrong = replay(target, args.hang_seconds, memory)
    total = len(target.seeds()) + len(corpus_files(name)) + len(regression_files(name))
    print(f"{name}: replayed {total} inputs, {len(wrong)} wrong")
    for file, outcome, expected in wrong:
        print(f"  {file}: " + ("fails no more: rename it without xfail-" if expected
                               else f"{outcome.kind}: {outcome.failure}"))
    return bool(wrong)


def _fuzz_one(target: Target, args, memory) -> bool:
    """Fuzz one target, print and save its findings; True if one is not a known one."""
    name = target.name
    stats = fuzz(target, args.runs, args.seed, args.max_seconds, args.hang_seconds, memory,
                 _print_progress, args.progress)
    print(stats.line(), flush=True)
    known = known_signatures(name)
    new = any(o.signature not in known for o, _ in stats.findings)
    shortest: dict[str, tuple[Outcome, bytes]] = {}     # one input per bug, the shortest
    for outcome, data in stats.findings:
        if outcome.signature not in shortest or len(data) < len(shortest[outcome.signature][1]):
            shortest[outcome.signature] = (outcome, data)
    for outcome, data in shortest.values():
        count = sum(o.signature == outcome.signature for o, _ in stats.findings)
        if outcome.signature in known:
            path = f"\n  known: {known[outcome.signature]}"
        elif args.no_save:
            path = ""
        else:
            path = "\n  saved " + os.path.relpath(
                save_finding(name, data, outcome, prefix="xfail-" if args.xfail else ""))
        print(f"  {outcome.kind} ({count} inputs): {outcome.failure}\n  input "
              f"{data[:64].hex()}{'...' if len(data) > 64 else ''}{path}")
    if args.save_corpus:
        for data in sorted(stats.new_corpus, key=len)[:MAX_CORPUS_SAVE]:
            save_corpus(name, data)
    return new


def main(argv: list[str] | None = None) -> int:
    targets = load()
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        _print_list(targets)
        return 0
    names = _chosen(args, targets, parser)
    quiet_logging()
    memory = {"tracemalloc": True, "rss": "rss", "off": False}[args.memory]
    if memory is True:
        tracemalloc.start()
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    if args.atheris:
        if len(names) != 1:
            parser.error("--atheris runs one target")
        fuzz_atheris(targets[names[0]], args.runs, args.seed, args.max_seconds,
                     args.hang_seconds, memory)
        return 0
    status = 0
    for name in names:
        run = _replay_one if args.replay else _fuzz_one
        status |= run(targets[name], args, memory)
    return status


if __name__ == "__main__":
    sys.exit(main())
