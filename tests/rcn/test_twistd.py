"""twistd's ``--umask`` and ``--uid``/``--gid`` reach the daemons' files (issue 15, item 11).

twistd calls ``makeService`` before it applies ``--umask`` and sheds privileges, so a
daemon that created its files there got umask 022 modes and root-owned directories.
Each role that writes files (rcn-storage, rcn-edge, rcn-mgmt; rcn-core and rcn-wanem
write none) runs here as a real ``twistd -n`` process (the installed copy: run ``make
venv`` after changing rcn/), on free loopback ports, in a temporary directory:

* with ``--umask 077``, nothing it created has group or other bits;
* as root with ``--uid nobody --gid nogroup``, it creates its data directory owned by
  nobody and serves (a write through the array's NBD export, an edge's durable log
  commit, a settings change on the management server);
* a daemon that cannot create its data directory fails start-up with a message naming
  the path and exit status 1.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import stat
import sys

from twisted.internet import defer, error, reactor
from twisted.trial.unittest import SkipTest, TestCase

from rcn import lab
from rcn.httpjson import request_json
from rcn.nbd.client import connect
from rcn.logxfer.routes import Address
from tests.support import CollectOutput, free_port, poll, seal_with, until

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
A, B = "50:0a:09:80:00:00:00:01", "50:0a:09:80:00:00:00:02"
BLOCK = bytes(range(256)) * 16                  # 4 KiB
HTTP_GET = b"GET /openapi.json HTTP/1.0\r\n\r\n"


class Daemon(CollectOutput):
    """A daemon's output (stdout and stderr) and, once ended, its exit ``status``."""

    def __init__(self, name: str):
        super().__init__()
        self.name, self.process, self.status = name, None, None

    def processEnded(self, reason):
        self.status = reason.value.exitCode
        super().processEnded(reason)

    def text(self) -> str:
        return b"".join(self.output).decode(errors="replace")

    def tail(self) -> str:
        return self.text()[-3000:]


def answers(port: int, hello: bytes) -> bool:
    """Whether 127.0.0.1:PORT sends something (after ``hello``) within a second."""
    with socket.socket() as s:
        s.settimeout(1.0)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(hello)
            return bool(s.recv(1))
        except OSError:
            return False


def created(root: str) -> dict[str, tuple[int, int]]:
    """Every file and directory under ``root`` and ``root`` itself: path -> (mode, uid)."""
    out = {}
    for directory, dirs, files in os.walk(root):
        for path in [directory] + [os.path.join(directory, n) for n in files]:
            st = os.lstat(path)
            out[os.path.relpath(path, root)] = (stat.S_IMODE(st.st_mode), st.st_uid)
    return out


def nobody() -> tuple[int, int]:
    """uid of nobody and gid of nogroup; skips unless this test runs as root and both exist."""
    if os.geteuid() != 0:
        raise SkipTest("--uid/--gid need root: this test runs as uid "
                       f"{os.geteuid()}")
    try:
        return pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    except KeyError as exc:
        raise SkipTest(f"no such user or group on this machine: {exc}") from None


class DaemonFiles(TestCase):
    timeout = 120

    def setUp(self):
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        os.chmod(os.path.dirname(self.dir), 0o755)      # mkdtemp's 0700: nobody may pass

    # -- the daemon ----------------------------------------------------------------------
    def twistd(self, plugin: str, doc: dict, *options: str, daemonise: bool = False) -> Daemon:
        """``twistd -n OPTIONS PLUGIN --config DIR/PLUGIN.toml`` in DIR, stopped at cleanup.
        ``daemonise``: without ``-n`` (pid file and log in DIR); twistd exits once the daemon
        it forked has started, and cleanup stops the daemon by its pid."""
        path = os.path.join(self.dir, f"{plugin}.toml")
        with open(path, "w") as f:
            f.write(lab.render_device(plugin.removeprefix("rcn-"), doc))
        if daemonise:
            pidfile = os.path.join(self.dir, f"{plugin}.pid")
            mode = ["--pidfile", pidfile, "--logfile", os.path.join(self.dir, f"{plugin}.log")]
            self.addCleanup(self.stop_daemon, pidfile)
        else:
            mode = ["-n", "--pidfile=", "--logfile=-"]
        output = Daemon(plugin)
        output.process = reactor.spawnProcess(
            output, TWISTD, [TWISTD, *mode, *options, plugin, "--config", path],
            env=dict(os.environ, PYTHONUNBUFFERED="1"), path=self.dir)
        self.addCleanup(self.stop, output)
        return output

    @defer.inlineCallbacks
    def stop(self, output: Daemon):
        if not output.ended.called:
            try:
                output.process.signalProcess("TERM")
            except error.ProcessExitedAlready:
                pass
            if not (yield poll(lambda: output.ended.called, 10.0)):
                output.process.signalProcess("KILL")
        yield output.ended

    @defer.inlineCallbacks
    def stop_daemon(self, pidfile: str):
        try:
            with open(pidfile) as f:
                pid = int(f.read())
        except FileNotFoundError:
            return
        for sig in (15, 9):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            if (yield poll(lambda: not os.path.exists(f"/proc/{pid}"), 10.0)):
                return

    def serving(self, output: Daemon, port: int, hello: bytes = b"") -> defer.Deferred:
        """Fires once ``port`` answers (``hello`` sent, some bytes back: the daemon's reactor
        runs, so it has started; the socket itself is bound before); fails if it exits."""
        def check():
            return output.ended.called or answers(port, hello)

        def judged(_):
            if output.ended.called:
                self.fail(f"{output.name} exited {output.status}:\n{output.tail()}")
        return until(f"{output.name} listening on {port}", check, 60.0,
                     output.tail).addCallback(judged)

    def exited(self, output: Daemon) -> defer.Deferred:
        return until(f"{output.name} exited", lambda: output.ended.called, 60.0, output.tail)

    # -- the roles -------------------------------------------------------------------------
    def storage(self, data_dir: str, *options: str):
        """rcn-storage with one 1 MiB volume; (process output, NBD port)."""
        nbd = free_port()
        doc = {"array": {"wwpn": A, "data_dir": data_dir},
               "nbd": {"listen": f"tcp:{nbd}:interface=127.0.0.1"},
               "control": {"listen": f"tcp:{free_port()}:interface=127.0.0.1"},
               "volume": [{"lun": 0, "name": "vol0", "capacity": "1MiB"}]}
        output = self.twistd("rcn-storage", doc, *options)
        return output, nbd

    def edge(self, data_dir: str, *options: str, daemonise: bool = False):
        """rcn-edge with a durable log and an NBD front end (volume "vm", whose writes are
        acknowledged once their log entry is durable); (process output, NBD port)."""
        nbd = free_port()
        me = f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
        partner = f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
        doc = {"edge": {"id": "edgeA", "log": me, "data_dir": data_dir},
               "log": {"mode": "durable"},
               "customer": [{"id": "acme"}],
               "route": [{"source_wwn": A, "target_wwn": B, "path": [me, partner]}],
               "nbd": {"listen": f"tcp:{nbd}:interface=127.0.0.1"},
               "nbd_volume": [{"name": "vm", "capacity": "1MiB", "source_wwn": A,
                               "source_lun": 0, "target_wwn": B, "target_lun": 0,
                               "group": 9, "customer": "acme"}]}
        seal_with(self, doc, links=[(Address.parse(me), Address.parse(partner))], groups=[9])
        output = self.twistd("rcn-edge", doc, *options, daemonise=daemonise)
        return output, nbd

    def mgmt(self, data_dir: str, *options: str):
        """rcn-mgmt with its database and operator token in ``data_dir`` (which it does not
        create: the test does); (process output, API URL)."""
        http = free_port()
        doc = {"mgmt": {"id": "mgmt", "database": f"{data_dir}/mgmt.sqlite",
                        "operator_token_file": f"{data_dir}/operator.token",
                        "http": f"tcp:{http}:interface=127.0.0.1",
                        "amp": f"tcp:{free_port()}:interface=127.0.0.1"}}
        output = self.twistd("rcn-mgmt", doc, *options)
        return output, http

    @defer.inlineCallbacks
    def nbd_write(self, port: int, export: str):
        """A 4 KiB write at offset 4096 with FUA, answered. (An edge's volume answers once
        the write's log entry is durable; it reads through a target, which is absent here.)"""
        client = yield connect(reactor, "127.0.0.1", port, export)
        try:
            yield client.write(4096, BLOCK, fua=True)
        finally:
            yield client.disconnect()

    def settings_change(self, http: int, token_file: str) -> dict:
        with open(token_file) as f:
            token = f.read().strip()
        return request_json(f"http://127.0.0.1:{http}/api/v1/customers", 10.0, "POST",
                            {"id": "acme"}, token)

    def assert_private(self, root: str) -> dict:
        files = created(root)
        loose = {path: oct(mode) for path, (mode, _) in files.items() if mode & 0o077}
        self.assertEqual(loose, {}, f"group/other bits under --umask 077 in {root}")
        return files

    def assert_owned_by(self, root: str, uid: int) -> dict:
        files = created(root)
        others = {path: owner for path, (_, owner) in files.items() if owner != uid}
        self.assertEqual(others, {}, f"not owned by uid {uid} in {root}")
        return files

    # -- --umask 077 ------------------------------------------------------------------------
    @defer.inlineCallbacks
    def test_storage_umask_077_volume_files_and_directory_private(self):
        output, nbd = self.storage("data", "--umask", "077")
        yield self.serving(output, nbd)
        yield self.nbd_write(nbd, "vol0")
        files = self.assert_private(os.path.join(self.dir, "data"))
        self.assertEqual(set(files), {".", "vol0.img", "pairs.json"})

    @defer.inlineCallbacks
    def test_edge_umask_077_log_and_state_files_private(self):
        output, nbd = self.edge("data", "--umask", "077")
        yield self.serving(output, nbd)
        yield self.nbd_write(nbd, "vm")              # a durable commit: a segment file
        files = self.assert_private(os.path.join(self.dir, "data"))
        self.assertIn("applied.json", files)
        self.assertTrue(any(p.startswith("log/") and p.endswith(".seg") for p in files), files)

    @defer.inlineCallbacks
    def test_mgmt_umask_077_database_private_token_0600(self):
        os.makedirs(os.path.join(self.dir, "data"), 0o700)
        output, http = self.mgmt("data", "--umask", "077")
        yield self.serving(output, http, HTTP_GET)
        yield until("the operator token written",
                    lambda: os.path.exists(os.path.join(self.dir, "data", "operator.token")),
                    30.0, output.tail)
        self.settings_change(http, os.path.join(self.dir, "data", "operator.token"))
        files = self.assert_private(os.path.join(self.dir, "data"))
        self.assertEqual(files["operator.token"][0], 0o600)
        self.assertIn("mgmt.sqlite", files)

    @defer.inlineCallbacks
    def test_mgmt_umask_000_token_stays_0600(self):
        """The operator's token is a secret: 0600 whatever the umask."""
        data = os.path.join(self.dir, "data")
        os.makedirs(data, 0o700)
        output, http = self.mgmt("data", "--umask", "000")
        yield self.serving(output, http, HTTP_GET)
        token = os.path.join(data, "operator.token")
        yield until("the operator token written", lambda: os.path.exists(token), 30.0,
                    output.tail)
        self.assertEqual(created(data)["operator.token"][0], 0o600)

    @defer.inlineCallbacks
    def test_edge_daemonised_by_twistd_commits_its_log(self):
        """Without -n twistd forks after makeService: the edge's fsync thread must be
        started after that (in startService), or no commit ever ends."""
        parent, nbd = self.edge("data", daemonise=True)
        yield self.exited(parent)
        self.assertEqual(parent.status, 0, parent.text())
        yield until("rcn-edge answering", lambda: answers(nbd, b""), 60.0)
        yield self.nbd_write(nbd, "vm").addTimeout(30, reactor)
        files = self.assert_private(os.path.join(self.dir, "data"))   # twistd's own umask 077
        self.assertTrue(any(p.endswith(".seg") for p in files), files)

    # -- --uid nobody --gid nogroup -----------------------------------------------------
    def run_dir(self, uid: int, gid: int) -> str:
        """DIR/run, owned by nobody: where the daemon may create its data directory."""
        run = os.path.join(self.dir, "run")
        os.makedirs(run)
        os.chown(run, uid, gid)
        return run

    @defer.inlineCallbacks
    def test_storage_as_nobody_owns_its_data_directory_and_serves_writes(self):
        uid, gid = nobody()
        run = self.run_dir(uid, gid)
        output, nbd = self.storage("run/data", "--uid", "nobody", "--gid", "nogroup")
        yield self.serving(output, nbd)
        yield self.nbd_write(nbd, "vol0")
        files = self.assert_owned_by(os.path.join(run, "data"), uid)
        self.assertEqual(set(files), {".", "vol0.img", "pairs.json"})
        with open(os.path.join(run, "data", "vol0.img"), "rb") as f:
            f.seek(4096)
            self.assertEqual(f.read(len(BLOCK)), BLOCK)

    @defer.inlineCallbacks
    def test_edge_as_nobody_owns_its_data_directory_and_commits_its_log(self):
        uid, gid = nobody()
        run = self.run_dir(uid, gid)
        output, nbd = self.edge("run/data", "--uid", "nobody", "--gid", "nogroup")
        yield self.serving(output, nbd)
        yield self.nbd_write(nbd, "vm")              # GOOD only once the entry is durable
        files = self.assert_owned_by(os.path.join(run, "data"), uid)
        segments = [p for p in files if p.startswith("log/") and p.endswith(".seg")]
        self.assertTrue(segments, files)
        self.assertGreater(os.path.getsize(os.path.join(run, "data", segments[0])), len(BLOCK))

    @defer.inlineCallbacks
    def test_mgmt_as_nobody_owns_its_database_and_answers(self):
        """Its start migrates the database and stores the operator token's digest there (as
        nobody); the API then authenticates against it. (A request with a body would make
        twisted.web import email.policy, which nobody cannot where the interpreter lives
        under a private home, as here.)"""
        uid, gid = nobody()
        run = self.run_dir(uid, gid)
        output, http = self.mgmt("run", "--uid", "nobody", "--gid", "nogroup")
        yield self.serving(output, http, HTTP_GET)
        token = os.path.join(run, "operator.token")
        yield until("the operator token written", lambda: os.path.exists(token), 30.0,
                    output.tail)
        with open(token) as f:
            whoami = request_json(f"http://127.0.0.1:{http}/api/v1/whoami", 10.0,
                                  token=f.read().strip())
        self.assertTrue(whoami["operator"], whoami)
        self.assertEqual(set(self.assert_owned_by(run, uid)),
                         {".", "mgmt.sqlite", "operator.token"})

    # -- cannot open --------------------------------------------------------------------
    @defer.inlineCallbacks
    def test_daemon_that_cannot_create_its_data_directory_exits_1_naming_it(self):
        """As root: --uid nobody under a root-owned directory; otherwise a read-only one."""
        locked = os.path.join(self.dir, "locked")
        os.makedirs(locked)
        if os.geteuid() == 0:
            nobody()
            options = ("--uid", "nobody", "--gid", "nogroup")
        else:
            os.chmod(locked, 0o500)
            self.addCleanup(os.chmod, locked, 0o700)
            options = ()
        data = os.path.join(locked, "data")
        for role in (self.storage, self.edge, self.mgmt):
            output, _ = role("locked/data", *options)
            yield self.exited(output)
            text = output.text()
            self.assertNotEqual(output.status, 0, text)
            self.assertIn(f"StartError: {output.name} ", text)
            self.assertIn("cannot open its files: ", text)
            self.assertIn(data, text)
            self.assertFalse(os.path.exists(data))
