"""Handler targets: what the daemons do with bytes from the network or an operator.

Each input drives a fresh, fully in-memory instance (task.Clock, StringTransport, SQLite in
memory, the edge's memory log store), so an input's outcome never depends on earlier ones
and a saved finding replays alone. Handlers declare no exception types: a handler either
answers (an error reply, a counted drop, a closed connection) or the input is a finding.
A traceback the code logs instead of raising (``log.failure``: AMP's "unhandled by client
application", the log-transfer protocol's ``handler_error``, the console's "internal
error") is caught by the engine as a finding too.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile

from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

# The code under test is imported here, not on first use: an import inside a timed input
# would count against the hang limit.
import rcn.edge.device  # noqa: F401
import rcn.mgmt.distribution  # noqa: F401
import rcn.mgmt.endpoints  # noqa: F401
import rcn.mgmt.routing  # noqa: F401
import rcn.mgmt.server  # noqa: F401
import rcn.nbd.server  # noqa: F401
import rcn.rio.protocol  # noqa: F401
import rcn.wanem.service  # noqa: F401
from datapath.frames import els, fcip, fcp, logentry, nbd
from datapath.frames.errors import DecodeError
from datapath.frames.fields import Layout, uint
from tools.fuzz_targets.kit import MiB, Finding, Target, register
from tools.fuzz_targets.frames import (FCIP_FIELDS, LOG_FIELDS, command_area, control_area,
                                       fix_fcip, fix_log_crcs, response_area)

_PEER = IPv4Address("TCP", "10.0.0.66", 40066)
_LOST = Failure(ConnectionDone("fuzz input ended"))


def _feed(protocol, data: bytes, step: int) -> None:
    for at in range(0, len(data), step):
        if getattr(protocol.transport, "disconnecting", False):
            return
        protocol.dataReceived(data[at:at + step])


def _step(data: bytes, largest: int = 257) -> int:
    """Chunk size for a stream input, chosen by its length (so splits vary with mutation)."""
    return 1 + len(data) % largest if len(data) % 3 else len(data) or 1


# -- NBD server -----------------------------------------------------------------------------------

class _MemoryExport:
    def __init__(self, name: str, size: int, read_only: bool = False, block_size: int = 512):
        self.name, self.size, self.read_only = name, size, read_only
        self.block_size, self.description, self.min_block_size = block_size, "fuzz", 1
        self.data = bytearray(size)

    def read(self, offset, length):
        return bytes(self.data[offset:offset + length])

    def write(self, offset, data, fua):
        self.data[offset:offset + len(data)] = data

    def flush(self):
        return None

    def trim(self, offset, length):
        self.data[offset:offset + length] = bytes(length)

    def write_zeroes(self, offset, length, may_trim):
        self.data[offset:offset + length] = bytes(length)


def run_nbd(data: bytes):
    from rcn.nbd.export import ExportTable
    from rcn.nbd.server import NbdServerFactory
    from rcn.nbd.session import ServerLimits
    clock = Clock()
    limits = ServerLimits(max_request_bytes=1 << 16, max_skip_bytes=1 << 18,
                          max_inflight_bytes=1 << 18, max_backlog_bytes=1 << 16,
                          max_option_bytes=4096, max_options=16, handshake_timeout=5.0)
    exports = ExportTable([_MemoryExport("mem", 1 << 18), _MemoryExport("ro", 1 << 16, True, 4096)])
    factory = NbdServerFactory(exports, clock, limits)
    proto = factory.buildProtocol(_PEER)
    transport = StringTransport(peerAddress=_PEER)
    proto.makeConnection(transport)
    _feed(proto, data, _step(data))
    clock.advance(10)
    proto.connectionLost(_LOST)
    return frozenset(k for k, v in factory.counters.items() if v) | {transport.disconnecting}


def nbd_seeds() -> list[bytes]:
    from rcn.nbd import protocol as P
    flags = P.CLIENT_FLAGS.pack(P.FLAG_C_FIXED_NEWSTYLE | P.FLAG_C_NO_ZEROES)
    go = P.option_request(P.OPT_GO, P.go_data(b"mem", (P.INFO_BLOCK_SIZE, P.INFO_EXPORT)))
    requests = b"".join((
        P.request(P.CMD_WRITE, 1, 4096, 1024, P.CMD_FLAG_FUA, bytes(range(256)) * 4),
        P.request(P.CMD_READ, 2, 4096, 512), P.request(P.CMD_FLUSH, 3),
        P.request(P.CMD_TRIM, 4, 0, 4096), P.request(P.CMD_WRITE_ZEROES, 5, 8192, 4096),
        P.request(P.CMD_BLOCK_STATUS, 6, 0, 512), P.request(P.CMD_DISC, 7)))
    return [flags + go + requests,
            flags + P.option_request(P.OPT_LIST) + P.option_request(P.OPT_INFO, P.go_data(b"ro", ()))
            + P.option_request(P.OPT_STRUCTURED_REPLY) + P.option_request(P.OPT_ABORT),
            P.CLIENT_FLAGS.pack(P.FLAG_C_FIXED_NEWSTYLE) + P.option_request(P.OPT_EXPORT_NAME, b"ro")
            + P.request(P.CMD_READ, 9, 0, 4096) + P.request(P.CMD_WRITE, 10, 0, 512, 0, bytes(512))]


_NBD_GO = Layout("nbd_go", [uint("name_length", 4)])

register(Target(
    "nbd-server", "the NBD server (rcn.nbd.server + session) over a StringTransport: client "
    "flags, option haggling, transmission requests, fed in pieces; then the handshake timer "
    "and a lost connection",
    run_nbd, nbd_seeds,
    fields=((b"IHAVEOPT", 0, nbd.OPTION_HEADER), (b"IHAVEOPT", 16, _NBD_GO),
            (bytes.fromhex("25609513"), 0, nbd.REQUEST)),
    memory_bound=lambda n: 16 * MiB + 64 * n, max_len=1 << 17, test_runs=200))


# -- AMP to rcn-mgmt -------------------------------------------------------------------------------

def run_amp(data: bytes):
    from rcn.mgmt.distribution import DistributionServer
    clock = Clock()
    versions = {"edge-a": 3, "core-1": 1}

    def snapshot_for(device: str):
        return versions[device], {"device": device, "routes": [[1, 2, ["edge-a", "core-1"]]]}

    server = DistributionServer(clock, snapshot_for, lambda device, figures: None,
                                snapshot_timeout=2.0, query_timeout=1.0)
    proto = server.factory().buildProtocol(_PEER)
    transport = StringTransport(peerAddress=_PEER)
    proto.makeConnection(transport)
    _feed(proto, data, _step(data, 101))
    clock.advance(3)
    proto.connectionLost(_LOST)
    return (frozenset(k for k, v in server.counters.items() if v), transport.disconnecting,
            len(transport.value()) > 0)


def _box(**kw) -> bytes:
    from twisted.protocols.amp import AmpBox
    return AmpBox(**{k: v if isinstance(v, bytes) else str(v).encode() for k, v in kw.items()}
                  ).serialize()


def amp_seeds() -> list[bytes]:
    register_box = _box(_command="Register", _ask=1, device_id="edge-a", role="edge",
                        log_address="10.0.0.9:47001", version=0)
    report = _box(_command="Report", _ask=2, figures=json.dumps(
        {"tick": 1, "lag": {"7": 0.25}, "pairs": {"7": "duplex"}}))
    # answers and errors to the server's own questions (AMP tags) come from the mutator's
    # words: an answer to a tag never asked is issue 15 item 7
    return [register_box + report,
            report + register_box + _box(_command="Report", _ask=3, figures="{\"lag\": [1e999]}"),
            _box(_command="Register", _ask=7, device_id="core-1", role="core",
                 log_address="10.0.0.8:47001", version="x") + _box(_command="Snapshot", _ask=8)]


register(Target(
    "amp-mgmt", "AMP boxes to rcn-mgmt's DistributionServer (rcn.mgmt.distribution."
    "ServerProtocol) over a StringTransport: Register, Report, answers and errors to its "
    "Snapshot and ResidualQuery; rcn.mgmtlink promises bad input is answered (BadArguments, "
    "BadJSON), never a dropped connection with a traceback",
    run_amp, amp_seeds, fields=((b"_", -2, Layout("amp_key", [uint("key_length", 2)])),),
    tokens=(b"\x00\x08_command", b"\x00\x04_ask", b"\x00\x07_answer", b"\x00\x06_error",
            b"Register", b"Report", b"Snapshot", b"ResidualQuery", b"\x00\x07figures",
            b"\x00\x09figures.1", b"\x00\x07version", b"NaN", b"1e999", b"\xff\xfe", b"\x00\x00",
            b"{\"a\":", b"[[[[[[[[", b"-1", b"99999999999999999999999"),
    test_runs=200))


# -- REST API of rcn-mgmt --------------------------------------------------------------------------

_TOKENS = {"op": "operator-token-0123456789"}
_S1, _T1 = "50:0a:09:80:00:00:00:01", "50:0a:09:80:00:00:00:02"


def _mgmt_server():
    """A server and its /api/v1 resource (what rcn.mgmt.service.site mounts there; the
    OpenAPI document and the dashboard's files are left out: they cost 60 ms a server)."""
    from rcn.mgmt.api import ApiResource
    from rcn.mgmt.endpoints import endpoints
    from rcn.mgmt.model import OPERATOR
    from rcn.mgmt.server import MgmtServer
    from rcn.mgmt.errors import SettingsError
    from rcn.mgmt.store import SQLiteStore
    clock = Clock()
    server = MgmtServer(clock, SQLiteStore(":memory:"))
    server.settings.set_token(OPERATOR, None, _TOKENS["op"])

    def authenticate(token):
        try:
            return server.settings.authenticate(token)
        except SettingsError:
            return None
    return clock, server, ApiResource(endpoints(server), authenticate)


def _call(api, method: bytes, path: bytes, token: str | None, body: bytes):
    from io import BytesIO

    from twisted.web.test.requesthelper import DummyRequest
    req = DummyRequest([p for p in path.strip(b"/").split(b"/") if p])
    req.method = method
    if token:
        req.requestHeaders.setRawHeaders(b"authorization", [b"Bearer " + token.encode()])
    req.content = BytesIO(body)            # twisted.web always gives a request its content
    result = api.render(req)
    if isinstance(result, bytes):
        req.write(result)
        req.finish()
    return req


def _setup_requests() -> list[tuple[bytes, bytes, bytes]]:
    rows = []
    for name, role, port in (("edgeA", "edge", 1), ("edgeB", "edge", 2), ("core1", "core", 3)):
        rows.append((b"POST", b"/devices", {"id": name, "role": role,
                                           "log_address": f"127.0.0.1:4700{port}"}))
    rows += [(b"POST", b"/links", {"a": "edgeA", "b": "core1", "capacity": 1e9}),
             (b"POST", b"/links", {"a": "core1", "b": "edgeB", "capacity": 1e9}),
             (b"POST", b"/customers", {"id": "acme", "max_pairs": 4}),
             (b"POST", b"/storages", {"storage_wwn": _S1, "edge_id": "edgeA", "customer_id": "acme"}),
             (b"POST", b"/storages", {"storage_wwn": _T1, "edge_id": "edgeB", "customer_id": "acme"}),
             (b"POST", b"/pairs", {"source_wwn": _S1, "source_lun": 0, "target_wwn": _T1,
                                   "target_lun": 0, "policy": "A-1", "load_entries": 100})]
    return [(m, p, json.dumps(b).encode()) for m, p, b in rows]


def run_rest(data: bytes):
    """Line 1: ``METHOD /path`` (under /api/v1); line 2: the token (``op``, empty: none, or
    literal); the rest: the body (none when empty)."""
    head, _, rest = data.partition(b"\n")
    token_line, _, body = rest.partition(b"\n")
    method, _, path = head.partition(b" ")
    token = token_line.decode("latin-1")
    token = _TOKENS.get(token, token) or None
    clock, server, api = _mgmt_server()
    for m, p, b in _setup_requests():
        req = _call(api, m, p, _TOKENS["op"], b)
        if req.responseCode not in (None, 200, 201):
            raise Finding(f"setup request {m} {p} answered {req.responseCode}")
    req = _call(api, method, path, token, body)
    clock.advance(1)
    code = req.responseCode or 200
    if not req.finished:
        raise Finding(f"{method!r} {path!r}: no answer (request never finished)")
    if code == 500 or code > 503:            # 503: a device that is not there, a fair answer
        raise Finding(f"{method!r} {path!r}: answered {code}: {b''.join(req.written)[:200]!r}")
    return (code, method, len(path.split(b"/")))


def rest_seeds() -> list[bytes]:
    def req(method, path, body=None, token="op"):
        return (f"{method} {path}\n{token}\n".encode()
                + (b"" if body is None else json.dumps(body).encode()))
    return [req("GET", "/status"), req("GET", "/pairs/1"), req("GET", "/pairs/1/residual"),
            req("PATCH", "/pairs/1", {"state": "suspend"}), req("DELETE", "/pairs/1"),
            req("POST", "/pairs", {"source_wwn": _T1, "source_lun": 1, "target_wwn": _S1,
                                   "target_lun": 1, "policy": "A-1", "load_entries": 10}),
            req("PATCH", "/devices/edgeA", {"log_address": "127.0.0.1:1"}),
            req("GET", "/customers/acme", token=""), req("POST", "/customers/acme/token"),
            req("DELETE", "/links/edgeA/core1"), req("GET", "/lag"), req("GET", "/topology"),
            req("POST", "/routes/recompute")]


register(Target(
    "rest-api", "REST requests to rcn-mgmt (rcn.mgmt.api over twisted.web's DummyRequest, on a "
    "server with devices, links, a customer, storages and a pair): method, path, token, JSON "
    "body; api.py's contract: 400/401/403/404/405/409 as JSON, never a 500",
    run_rest, rest_seeds,
    tokens=(b"GET", b"POST", b"PATCH", b"DELETE", b"/pairs/", b"/devices/", b"/customers/",
            b"/storages/", b"/links/", b"99999999999999999999999999", b"-1", b"%00", b"..",
            b"[[[[[[[[[[[[", b"{\"state\":", b"null", b"1e999", b"\"\\ud800\"", b"true"),
    memory_bound=lambda n: 32 * MiB + 64 * n, test_runs=60))


# -- SCPI (rcn-wanem) and console lines -----------------------------------------------------------

def run_scpi(data: bytes):
    from rcn.wanem.link import LinkSpec, WanEmulator
    from rcn.wanem.scpi import ScpiConsole
    from rcn.wanem.service import ScpiProtocol
    clock = Clock()
    wanem = WanEmulator(clock, [LinkSpec(47001, ("10.0.9.9", 47001)),
                                LinkSpec(47002, ("10.0.9.8", 47001), settings={"delay": 0.005})])
    proto = ScpiProtocol(ScpiConsole(wanem))
    transport = StringTransport()
    proto.makeConnection(transport)
    _feed(proto, data, _step(data, 61))
    errors = proto.console.handle("SYST:ERR:COUN?")
    return (errors, len(transport.value()) > 0)


register(Target(
    "scpi", "SCPI lines to rcn-wanem's console (rcn.wanem.service.ScpiProtocol over "
    "ScpiConsole): every error must land in the error queue (SYST:ERR?), never a traceback",
    run_scpi, lambda: [b"*IDN?\nLINK1:DEL 20;JIT 5\nLINK2:LOSS?\nSYST:ERR?\n",
                       b"LINK1:RATE 10M\r\nLINK:QUE 65536;STATE DOWN\r\nLINK1:STAT? AB\r\n*RST\n",
                       b":LINK2:REOR 5;:LINK2:DUP MAX\nLINK1:DEL MIN\nSYST:ERR:COUN?\n*CLS\n"],
    tokens=(b"LINK1:", b"LINK2:", b"LINK9:", b"DEL", b"JIT", b"LOSS", b"DUP", b"REOR", b"RATE",
            b"QUE", b"STATE", b"STAT?", b"SYST:ERR?", b"*RST", b"*IDN?", b"MIN", b"MAX", b"DEF",
            b"1e999", b"nan", b"inf", b"-0", b"9" * 400, b"10G", b";", b":", b"?", b"\n"),
    test_runs=300))


class _Service:
    running = True

    def startService(self):
        self.running = True

    def stopService(self):
        self.running = False


def run_console(data: bytes):
    from types import SimpleNamespace

    from rcn.console.protocol import ConsoleProtocol
    from rcn.core.console import core_console
    from rcn.logxfer.routes import Address, Route, RouteTable
    routes = RouteTable([Route(1, 2, (Address("10.0.0.1", 1), Address("10.0.0.2", 1)))])
    config = SimpleNamespace(id="core1", listen=Address("10.0.0.2", 1), mgmt=None,
                             batch=SimpleNamespace(enabled=True, max_delay=0.001, max_bytes=65000,
                                                   max_entries=64))
    relay = SimpleNamespace(routes=routes, debug=False, counters=lambda: {"relayed": 3, "drops": 1})
    proto = ConsoleProtocol(core_console(config, relay, _Service()), "core1", banner="RCN core")
    transport = StringTransport()
    proto.makeConnection(transport)
    _feed(proto, data, _step(data, 61))
    return (proto.lines, transport.disconnecting, transport.value().count(b"% "))


register(Target(
    "console", "console lines (rcn.console.protocol.ConsoleProtocol and the CommandTree of "
    "rcn.console.commands, with the core's commands): abbreviations, '?', choices, long lines",
    run_console, lambda: [b"sh ver\r\nshow counters\nclear counters\nshow ?\nsh ro\r\n",
                          b"debug log ?\ndebug log-transfer on\nshutdown log-transfer\n"
                          b"no shut log\nhelp\nshow config\nexit\n"],
    tokens=(b"show", b"sh", b"no", b"clear", b"debug", b"shutdown", b"counters", b"routes",
            b"config", b"?", b"help", b"exit", b"on", b"off", b"\r", b"\n", b"\r\n", b"\xff",
            b" " * 3, b"x" * 1100),
    test_runs=300))


# -- TOML configs of each role ---------------------------------------------------------------------

_ROLES = ("core", "edge", "mgmt", "storage", "wanem")
_CONFIG_DIR: str | None = None


def _config_dir() -> str:
    global _CONFIG_DIR
    if _CONFIG_DIR is None:
        _CONFIG_DIR = tempfile.mkdtemp(prefix="rcn-fuzz-config-")
        atexit.register(shutil.rmtree, _CONFIG_DIR, True)
    return _CONFIG_DIR


def _config_runner(role: str):
    def run(data: bytes):
        import importlib

        from rcn.config import ConfigError, load_toml
        module = importlib.import_module(f"rcn.{role}.config")
        path = os.path.join(_config_dir(), f"{role}.toml")
        with open(path, "wb") as f:
            f.write(data)
        try:
            load_toml(path, module.parse_config)
        except ConfigError as exc:
            return ("ConfigError", str(exc).split(":")[1][:20] if ":" in str(exc) else "")
        return ("ok",)
    return run


def config_seeds(role: str) -> list[bytes]:
    from rcn.lab import device_configs, parse_topology, plan, render_device
    out = []
    for doc in ({"wanem": [{"between": ["edgeA", "core1"], "delay_ms": 20, "loss": 0.01}],
                 "lab": {"consoles": True, "batching": False}},
                {"lab": {"mgmt": True, "virtual_wwns": True, "log_mode": "memory"},
                 "pair": [{"lun": 0}, {"lun": 3, "target_lun": 5, "group": 9}]}):
        lab = plan(parse_topology(doc), _config_dir(),
                   ports=(list(range(20000, 20040)), list(range(21000, 21040))))
        docs = device_configs(lab)
        out += [render_device(role, docs[d["name"]]).encode() for d in lab["devices"]
                if d["role"] == role]
    return out


_TOML_TOKENS = (b" = ", b"[", b"]", b"[[", b"]]", b"\"", b"'''", b"1.0", b"-1", b"0x", b"inf",
                b"nan", b"true", b"{}", b"[1.0]", b"99999999999999999999999", b"1979-05-27",
                b"\"64KiB\"", b"\"1 TiB\"", b"\"tcp:1\"", b"\"127.0.0.1:0\"", b"\xff", b"\n")
for _role in _ROLES:
    register(Target(
        f"config-{_role}", f"rcn-{_role}'s TOML configuration (rcn.config.load_toml with "
        f"rcn.{_role}.config.parse_config): anything wrong must be a ConfigError naming file "
        "and key",
        _config_runner(_role), lambda role=_role: config_seeds(role), tokens=_TOML_TOKENS,
        max_len=1 << 14, test_runs=150))


# -- the edge's log-transfer handler ---------------------------------------------------------------

_A, _B = 0x500A098000000001, 0x500A098000000002          # source pair A -> B (group 7)
_C, _D = 0x500A098000000003, 0x500A098000000004          # target pair C -> D (group 9)


def _edge():
    from rcn.edge.applystate import ApplyState
    from rcn.edge.device import EdgeDevice, EdgeSettings, PairEntry
    from rcn.edge.logstore import LogStore
    from rcn.logxfer.routes import Address, Route, RouteTable
    from rcn.rio.fcp import ScsiResult
    me, core, far = Address("10.0.0.1", 1), Address("10.0.0.2", 1), Address("10.0.0.3", 1)

    class Target:
        def execute(self, command):
            return succeed(ScsiResult())

    clock = Clock()
    store = LogStore(None, mode="memory")
    store.open()
    state = ApplyState(None)
    state.open()
    settings = EdgeSettings(me=me, pairs=[PairEntry(_A, 0, _B, 4, 7)],
                            routes=RouteTable([Route(_A, _B, (me, core, far)),
                                               Route(_C, _D, (far, core, me))]),
                            max_segment_entries=64)
    target = Target()
    edge = EdgeDevice(clock, settings, store, state, lambda data, address: None,
                      apply_target_for=lambda header: target)
    return clock, edge, core


def _write(lba: int):
    from rcn.rio.fcp import ScsiCommand, build_write16_cdb
    cdb = build_write16_cdb(lba, 1)
    return ScsiCommand(0x010100, _A, 0x010200, _B, 4, cdb, fcp.parse_cdb(cdb),
                       fcp.TaskAttribute.ORDERED, bytes(512), 0, lba)


def run_edge(data: bytes):
    """``data``: datagrams, each a 2-byte length then that many bytes."""
    clock, edge, core = _edge()
    for lba in range(3):                        # sequences 1..3 of group 7 are outstanding
        edge.rio_command(_write(lba), _B)
    clock.advance(0)
    at = 0
    while at + 2 <= len(data):
        n = int.from_bytes(data[at:at + 2], "big")
        datagram = data[at + 2:at + 2 + n]
        at += 2 + n
        try:                                     # as rcn.logxfer.protocol's datagramReceived
            entry = logentry.parse_datagram(datagram, fast=True)
        except DecodeError:
            continue
        if entry.crc_ok:
            edge.entry_received(entry, datagram, core)
        clock.advance(0.05)
    clock.advance(2)
    edge.stop()
    return (frozenset(edge.drops.by_reason), frozenset(k for k, v in edge.counters.items() if v))


def edge_seeds() -> list[bytes]:
    E, F = logentry.EntryType, logentry.EntryFlag
    src = dict(group_id=7, source_wwn=_A, target_wwn=_B, target_lun=4)
    tgt = dict(group_id=9, source_wwn=_C, target_wwn=_D, target_lun=2, source_lun=1)

    def pack(datagrams):
        return b"".join(len(d).to_bytes(2, "big") + d for d in datagrams)
    wr = [logentry.build_entry(E.WR, command_area(1), sequence=s, **tgt) for s in (1, 2, 3)]
    return [
        pack([logentry.build_entry(E.WROK, response_area(), sequence=1, **src),
              logentry.build_entry(E.WROK, response_area(), sequence=3, flags=F.CUMULATIVE, **src),
              logentry.build_nak([(2, 2)], **src), logentry.build_keepalive(5, 123)]),
        pack([wr[0], wr[2], wr[1], logentry.build_entry(E.CTRL, control_area(), sequence=4, **tgt)]),
        pack([logentry.build_batch(wr[:2], group_id=9), *logentry.segment_entry(
            E.WR, command_area(2), 400, sequence=3, **tgt)]),
        pack([logentry.build_entry(E.CTRL_OK, response_area(), sequence=2, **src),
              logentry.build_entry(E.CTRL, control_area(), sequence=1, flags=F.REVERSE, **src)]),
    ]


register(Target(
    "edge-device", "hostile datagrams to a whole EdgeDevice (rcn.edge.device.entry_received on "
    "task.Clock with the memory log store; a source pair with writes outstanding and a target "
    "pair to apply to): WROK (single, cumulative), NAK, KEEPALIVE, WR, CTRL, CTRL_OK, BATCH, "
    "segments; every bad one must be a counted drop",
    run_edge, edge_seeds, fields=LOG_FIELDS, fixup=fix_log_crcs,
    memory_bound=lambda n: 32 * MiB + 64 * n, max_len=1 << 17, test_runs=100))


# -- the FCIP protocol of the edge's RIO port --------------------------------------------------------

_ARRAY_WWN, _PARTNER_WWN = 0x500A098000000001, 0x500A098000000002


def _fabric_config():
    from rcn.rio.fabric import FabricConfig, VirtualStorageEntry, access_table
    from rcn.rio.fcp import ScsiResult, ScsiTarget

    class Good(ScsiTarget):
        def execute(self, command):
            return ScsiResult(data_in=bytes(min(command.data_in_length, 4096)))

    def attach(vs):
        vs.target = Good()
    return FabricConfig(
        virtual_storages=[VirtualStorageEntry(wwn=_PARTNER_WWN, partner_wwn=_PARTNER_WWN,
                                              partner_edge_id="edge-b")],
        access=access_table([(_PARTNER_WWN, _ARRAY_WWN)]), attach=attach, max_links=2,
        max_exchanges=64, max_transfer=1 << 16, max_buffered=1 << 18)


def run_rio_port(data: bytes):
    from rcn.rio.protocol import FcipServerFactory
    clock = Clock()
    factory = FcipServerFactory(clock, _fabric_config())
    proto = factory.buildProtocol(_PEER)
    transport = StringTransport(peerAddress=_PEER)
    proto.makeConnection(transport)
    _feed(proto, data, _step(data, 509))
    clock.advance(40)
    proto.connectionLost(_LOST)
    return (frozenset(k for k, v in proto.counters.items() if v), transport.disconnecting)


def rio_port_seeds() -> list[bytes]:
    """What an array sends: logins, a write, a read and an RCN CONTROL, recorded over iosim."""
    from twisted.test import iosim

    from rcn.rio.array import ArrayConfig
    from rcn.rio.protocol import FcipClientFactory, FcipServerFactory
    clock = Clock()
    sent: list[bytes] = []
    server = FcipServerFactory(clock, _fabric_config())
    client = FcipClientFactory(clock, ArrayConfig(port_wwn=_ARRAY_WWN, node_wwn=_ARRAY_WWN),
                               frame_tap=lambda proto, frame: sent.append(frame))
    array, _, pump = iosim.connectedServerAndClient(
        lambda: server.buildProtocol(None), lambda: client.buildProtocol(None))
    d = array.endpoint.session(_PARTNER_WWN)
    pump.flush()
    sessions = []
    d.addCallback(sessions.append)
    if not sessions:
        raise RuntimeError("rio-port seeds: the array did not log in")
    login = b"".join(sent)
    sessions[0].write(0, 8, bytes(range(256)) * 12)
    pump.flush()
    write = b"".join(sent)[len(login):]
    del sent[:]
    sessions[0].execute(0, fcp.build_read16(0, 2), data_in_length=1024)
    sessions[0].execute(0, fcp.build_rcn_control(fcp.RcnServiceAction.SUSPEND, 7, 0))
    pump.flush()
    return [login + write, login + b"".join(sent), write]


register(Target(
    "rio-port", "the FCIP byte stream an array sends to the edge's RIO port (rcn.rio.protocol."
    "FcipProtocol over a FabricPort: FLOGI, PLOGI, GID_PN, PRLI, FCP exchanges), fed in pieces",
    run_rio_port, rio_port_seeds, fields=FCIP_FIELDS + ((fcip.SYNC_PATTERN, 56, els.PRLI),),
    fixup=fix_fcip, memory_bound=lambda n: 16 * MiB + 64 * n, max_len=1 << 17, test_runs=100))


# -- the storage array's pair file (rcn.storage.pairstore) -----------------------------------------

class _Volume:
    def __init__(self, capacity: int):
        self.capacity = capacity


def run_pair_file(data: bytes):
    """``data``: the array's ``pairs.json``, loaded against two 4 MiB volumes."""
    import numpy as np

    from rcn.storage.pairs import PairTable
    from rcn.storage.pairstore import PairStore
    directory = os.path.join(_config_dir(), "pairs")
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    with open(os.path.join(directory, "pairs.json"), "wb") as f:
        f.write(data)
    table = PairTable()
    PairStore(directory).load(table, {0: _Volume(4 * MiB), 1: _Volume(4 * MiB)})
    return tuple((p.lun, p.role, p.state.value, int(np.count_nonzero(p.bitmap.words)))
                 for p in table)


def pair_file_seeds() -> list[bytes]:
    row = {"lun": 0, "role": "source", "partner_wwpn": "50:0a:09:80:00:00:00:02",
           "partner_lun": 0, "group": 7, "state": "duplex", "mode": "sync", "queue_limit": 1024,
           "capacity": 4 * MiB, "track_size": 65536, "link_lost": False, "copies_completed": 1}
    target = dict(row, lun=1, role="target", state="failure-suspend", link_lost=True)
    return [json.dumps({"version": 1, "rows": rows}, indent=1).encode()
            for rows in ([row], [row, target], [])]


def _pair_file_clean():
    from rcn.storage.pairstore import PairStoreError
    return (PairStoreError,)


register(Target(
    "pair-file", "rcn-storage's pair table file at start (rcn.storage.pairstore.PairStore.load: "
    "rows and their memory-mapped bitmap files, sized by the row's capacity, which its volume "
    "bounds): it loads, or PairStoreError names the file",
    run_pair_file, pair_file_seeds, clean=_pair_file_clean(),
    tokens=(b'"lun"', b'"capacity"', b'"track_size"', b'"state"', b'"role"', b"1e999",
            b"-1", b"18446744073709551616", b"true", b"null", b"[]", b"{}", b'"target"'),
    test_runs=100))


# -- HTTP requests to every daemon's site (rcn.web.BoundedSite) -------------------------------------

class _Echo:
    isLeaf = True

    def render(self, request):
        request.content.read()
        return b"{}"

    def getChildWithDefault(self, name, request):
        return self


def run_http(data: bytes):
    """Raw bytes of one HTTP connection to a BoundedSite (bodies bounded to 4 KiB)."""
    from twisted.web import resource

    from rcn.web import BoundedSite
    site = BoundedSite(resource.Resource(), max_body=4096)
    site.resource.putChild(b"x", _Echo())
    site.resource.putChild(b"", _Echo())
    proto = site.buildProtocol(_PEER)
    transport = StringTransport()
    proto.makeConnection(transport)
    step = _step(data)
    for at in range(0, len(data), step):
        if transport.disconnecting:
            break
        proto.dataReceived(data[at:at + step])
    answer = transport.value()
    proto.connectionLost(_LOST)
    # pipelined requests before the refused one get their own answers first: the 413
    # must be the connection's last response
    last = answer.rfind(b"HTTP/1.1 ")
    if site.refused and (last < 0 or answer[last:last + 13] != b"HTTP/1.1 413 "):
        raise Finding(f"a refused body was not answered 413: {answer[last:last + 80]!r}")
    return (site.refused, answer[9:12])


register(Target(
    "http-site", "one HTTP connection's bytes to a daemon's site (rcn.web.BoundedSite over "
    "twisted.web's HTTPChannel): a body over the bound answers 413 before it is kept",
    run_http, lambda: [
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"800\r\n" + b"a" * 0x800 + b"\r\n800\r\n" + b"b" * 0x800 + b"\r\n800\r\n"
        + b"c" * 0x800 + b"\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n"],
    tokens=(b"Content-Length: ", b"Transfer-Encoding: chunked\r\n", b"\r\n\r\n", b"\r\n",
            b"99999999999999999999", b"-1", b"POST /x HTTP/1.1\r\n", b"0\r\n\r\n", b"fff\r\n"),
    test_runs=150))
