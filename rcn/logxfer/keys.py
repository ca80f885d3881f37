"""Log-transfer keys: link keys (hop layer) and group keys (end to end), by epoch (DESIGN.md 9).

A :class:`KeyRing` is what one device holds: for each link to a neighbour (its two ends'
log-transfer addresses, in an order both ends agree on: end 0, end 1) and, at an edge, for each order guarantee group it serves, the
keys of one or more epochs. An epoch is either ``send`` (what this device seals with: the
highest such epoch) or ``accept`` only (opened, never used to seal: a new key before every
device has it, or an old one during the overlap after a rotation). An epoch that is gone
from the ring is refused (``unknown_key``).

The key file (``[seal] keys`` of a device's TOML; written by ``rcn lab`` for static labs,
and by a device for the keys its management server sent, so a restart keeps working) is
text, one key per line, like a TLS key log -- the Wireshark dissector reads it too::

    # comment
    link  <epoch> <64 hex digits> <address> <address> send|accept
    group <group id> <epoch> <64 hex digits> send|accept|held

Addresses are kept in one canonical form (:func:`canonical_address`: an IP address as
``ipaddress`` writes it, an IPv4-mapped IPv6 one as IPv4, the port as a number; a host
name as written), so ``[0:0::1]:047001`` and ``[::1]:47001`` name the same link, as does
the address a socket reports.

It is written atomically (a temporary file created 0600 with ``O_EXCL``, synced, renamed
over the old one, the directory synced) and refused when other users may read it; an
error names the line and the field, never a value from the file (a key in the wrong
column must not reach a log). The management server's snapshots carry the same keys as
JSON (:meth:`KeyRing.to_snapshot`). Key material never appears in a repr, a log line,
``/status`` or ``/metrics``: :class:`Key` hides it.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass, field

from rcn.logxfer.routes import Address

KEY_SIZE = 32
SEND, ACCEPT, HELD = "send", "accept", "held"


class KeyFileError(ValueError):
    """A key file or snapshot key that cannot be used; the message names where and why."""


@dataclass(frozen=True)
class Key:
    epoch: int
    material: bytes = field(repr=False)
    send: bool = True

    def __post_init__(self):
        if len(self.material) != KEY_SIZE:
            raise KeyFileError(f"a key of epoch {self.epoch} has {len(self.material)} bytes, "
                               f"not {KEY_SIZE}")
        if not 0 < self.epoch < 1 << 32:
            raise KeyFileError(f"key epoch {self.epoch} is outside 1..4294967295")


def link_name(a: Address, b: Address) -> tuple[Address, Address]:
    """A canonical order of a link's two addresses (what a management server, which sees
    every device at one address, writes as end 0 and end 1)."""
    return (a, b) if (a.host, a.port) <= (b.host, b.port) else (b, a)


def _newest_send(keys: dict[int, Key]) -> Key | None:
    sending = [k for k in keys.values() if k.send]
    return max(sending, key=lambda k: k.epoch) if sending else None


@dataclass
class KeyRing:
    """Keys by link and by group; see the module doc."""

    links: dict[tuple[Address, Address], dict[int, Key]] = field(default_factory=dict)
    groups: dict[int, dict[int, Key]] = field(default_factory=dict)
    #: group -> epoch -> key: retired epochs a source edge keeps to open its own log only
    held: dict[int, dict[int, Key]] = field(default_factory=dict)

    # -- lookups -------------------------------------------------------------------------
    def link_keys(self, me: Address, peer: Address) -> dict[int, Key]:
        keys = self.links.get((me, peer))
        return keys if keys is not None else self.links.get((peer, me), {})

    def link_end(self, me: Address, peer: Address) -> int:
        """Which end of its link ``me`` is: 0 when it is written first, else 1. Both ends
        agree (each names the link's ends in the same order, each as it addresses them),
        so the hop layer keys each direction apart even when a WAN emulator relays the
        link and the two ends see different addresses."""
        return 0 if (me, peer) in self.links else 1

    def link_send_key(self, me: Address, peer: Address) -> Key | None:
        return _newest_send(self.link_keys(me, peer))

    def neighbours(self, me: Address) -> set[Address]:
        """Every address this device shares a link key with."""
        return {b if a == me else a for a, b in self.links if me in (a, b)}

    def group_key(self, group: int, epoch: int) -> Key | None:
        return self.groups.get(group, {}).get(epoch)

    def group_send_key(self, group: int) -> Key | None:
        return _newest_send(self.groups.get(group, {}))

    def stored_group_key(self, group: int, epoch: int) -> Key | None:
        """A key that opens this edge's own stored entries: held epochs too."""
        key = self.group_key(group, epoch)
        return key if key is not None else self.held.get(group, {}).get(epoch)

    def add_link(self, a: Address, b: Address, key: Key) -> None:
        """A key of the link whose ends are ``a`` (end 0) and ``b`` (end 1)."""
        name = (b, a) if (b, a) in self.links else (a, b)
        self.links.setdefault(name, {})[key.epoch] = key

    def add_group(self, group: int, key: Key) -> None:
        self.groups.setdefault(group, {})[key.epoch] = key

    def add_held(self, group: int, key: Key) -> None:
        """A retired group epoch kept to open this edge's own log (never sent with)."""
        self.held.setdefault(group, {})[key.epoch] = Key(key.epoch, key.material, False)

    def only_links(self) -> "KeyRing":
        """The same ring without group keys (what a core may hold)."""
        return KeyRing(links={k: dict(v) for k, v in self.links.items()})

    def epochs(self) -> dict:
        """Which epochs are held, without any key material (for /status and logs)."""
        shown = {"links": {f"{a} {b}": sorted(keys) for (a, b), keys in self.links.items()},
                 "groups": {str(g): sorted(keys) for g, keys in self.groups.items()}}
        if self.held:
            shown["held"] = {str(g): sorted(keys) for g, keys in self.held.items() if keys}
        return shown

    def __len__(self) -> int:
        return (sum(map(len, self.links.values())) + sum(map(len, self.groups.values()))
                + sum(map(len, self.held.values())))

    # -- the key file ----------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str, where: str = "key file") -> "KeyRing":
        ring = cls()
        for number, line in enumerate(text.splitlines(), 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            at = f"{where} line {number}"
            try:
                if words[0] == "link" and len(words) == 6:
                    _, epoch, material, a, b, use = words
                    ring.add_link(_address(a, at), _address(b, at),
                                  _key(epoch, material, use, at))
                elif words[0] == "group" and len(words) == 5:
                    _, group, epoch, material, use = words
                    add = ring.add_held if use == HELD else ring.add_group
                    add(_int(group, "group id", at),
                        _key(epoch, material, SEND if use == HELD else use, at))
                else:
                    raise KeyFileError(f"{at}: expected 'link EPOCH KEY ADDRESS ADDRESS "
                                       f"send|accept' or 'group ID EPOCH KEY "
                                       f"send|accept|held' ({len(words)} words)")
            except KeyFileError as exc:
                if str(exc).startswith(at):
                    raise
                raise KeyFileError(f"{at}: {exc}") from None
        return ring

    def dump(self) -> str:
        lines = ["# RCN log-transfer keys: keep this file 0600 (DESIGN.md 9)"]
        for (a, b), keys in sorted(self.links.items(), key=lambda kv: str(kv[0])):
            for k in sorted(keys.values(), key=lambda k: k.epoch):
                lines.append(f"link {k.epoch} {k.material.hex()} {a} {b} "
                             f"{SEND if k.send else ACCEPT}")
        for group, keys in sorted(self.groups.items()):
            for k in sorted(keys.values(), key=lambda k: k.epoch):
                lines.append(f"group {group} {k.epoch} {k.material.hex()} "
                             f"{SEND if k.send else ACCEPT}")
        for group, keys in sorted(self.held.items()):
            for k in sorted(keys.values(), key=lambda k: k.epoch):
                lines.append(f"group {group} {k.epoch} {k.material.hex()} {HELD}")
        return "\n".join(lines) + "\n"

    @classmethod
    def load(cls, path: str) -> "KeyRing":
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise KeyFileError(f"key file {path}: {exc.strerror}") from None
        with os.fdopen(fd) as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise KeyFileError(f"key file {path} is mode {stat.S_IMODE(mode):04o}: other "
                                   f"users may read it; chmod 600 {path}")
            try:
                text = f.read()
            except UnicodeDecodeError:
                raise KeyFileError(f"key file {path} is not text") from None
        return cls.parse(text, f"key file {path}")

    def save(self, path: str) -> None:
        """Write the key file atomically: a new temporary file, created 0600 (``O_EXCL``:
        never one another user made, and no chmod window), written and synced, renamed
        over ``path``, then the directory synced so the rename survives a crash. A
        temporary file a crash left behind is removed first."""
        tmp = f"{path}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o600)
        except FileExistsError:
            os.unlink(tmp)
            fd = os.open(tmp, flags, 0o600)
        try:
            data = memoryview(self.dump().encode())
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        directory = os.open(os.path.dirname(os.path.abspath(path)),
                            os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    # -- snapshots (management channel) ----------------------------------------------------
    def to_snapshot(self) -> dict:
        return {
            "link": [{"a": str(a), "b": str(b), "epoch": k.epoch, "key": k.material.hex(),
                      "send": k.send}
                     for (a, b), keys in self.links.items() for k in keys.values()],
            "group": [{"group": g, "epoch": k.epoch, "key": k.material.hex(), "send": k.send}
                      for g, keys in self.groups.items() for k in keys.values()],
        }

    @classmethod
    def from_snapshot(cls, doc: dict, where: str = "snapshot keys") -> "KeyRing":
        if not isinstance(doc, dict):
            raise KeyFileError(f"{where}: expected a table")
        ring = cls()
        for i, row in enumerate(_rows(doc, "link", where)):
            at = f"{where}.link[{i}]"
            ring.add_link(_address(row.get("a"), at), _address(row.get("b"), at),
                          _key(row.get("epoch"), row.get("key"),
                               SEND if row.get("send") is True else ACCEPT, at))
        for i, row in enumerate(_rows(doc, "group", where)):
            at = f"{where}.group[{i}]"
            ring.add_group(_int(row.get("group"), "group id", at),
                           _key(row.get("epoch"), row.get("key"),
                                SEND if row.get("send") is True else ACCEPT, at))
        return ring


def ring_at_start(path: str | None, managed: bool) -> KeyRing:
    """A sealed device's keys at start: its key file; without one yet, an empty ring when a
    management server will send keys (``managed``), else :class:`KeyFileError`."""
    if path is not None and os.path.exists(path):
        return KeyRing.load(path)
    if managed:
        return KeyRing()
    raise KeyFileError(f"key file {path}: missing -- sealed log transfer needs the keys "
                       f"(`rcn lab` writes key files; or configure [mgmt])")


def new_key(epoch: int, send: bool = True) -> Key:
    return Key(epoch, os.urandom(KEY_SIZE), send)


def _rows(doc: dict, name: str, where: str) -> list[dict]:
    rows = doc.get(name, [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise KeyFileError(f"{where}.{name}: expected a list of tables")
    return rows


def canonical_address(address: Address) -> Address:
    """One form of an address, the one a socket reports: an IP address as ``ipaddress``
    writes it (``0:0::1`` is ``::1``; an IPv4-mapped IPv6 address is the IPv4 one), the port
    a number (``047001`` is 47001). A host name is kept as written -- it must match the
    device's configuration, which names it the same way; names are never resolved."""
    host = address.host.strip()
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return Address(host, int(address.port))
    mapped = getattr(ip, "ipv4_mapped", None)
    return Address(str(mapped if mapped is not None else ip), int(address.port))


def _address(text, at: str) -> Address:
    try:
        return canonical_address(Address.parse(text))
    except (ValueError, TypeError, AttributeError):
        raise KeyFileError(f"{at}: not an address (host:port)") from None


def _int(value, what: str, at: str) -> int:
    if isinstance(value, (bool, float)):        # JSON's 1.5, 1e309 or true: not an id
        raise KeyFileError(f"{at}: the {what} is not a whole number")
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise KeyFileError(f"{at}: the {what} is not a number") from None
    if not 0 <= number < 1 << 32:
        raise KeyFileError(f"{at}: the {what} is outside 0..4294967295")
    return number


def _key(epoch, material, use, at: str) -> Key:
    if use not in (SEND, ACCEPT):
        raise KeyFileError(f"{at}: the last word is not 'send' or 'accept' (or 'held', for "
                           f"a group key)")
    if not isinstance(material, str) or len(material) != 2 * KEY_SIZE:
        raise KeyFileError(f"{at}: a key is {2 * KEY_SIZE} hex digits")
    try:
        raw = bytes.fromhex(material)
    except ValueError:
        raise KeyFileError(f"{at}: the key is not hex") from None
    return Key(_int(epoch, "epoch", at), raw, use == SEND)
