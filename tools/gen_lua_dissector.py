"""Generate the Wireshark Lua dissector for the RCN log-transfer protocol.

Everything the dissector knows about the bytes comes from the field tables in
``datapath.frames.logentry`` (``LOG_HEADER``, ``COUNT_HEADER``, ``NAK_RANGE``,
``KEEPALIVE``), ``datapath.frames.hop`` (``HOP_HEADER``) and their constants:
change a table and regenerate, never edit the output by hand.

    python -m tools.gen_lua_dissector [-o rcnlog.lua] [--port 47001]
    tshark -X lua_script:rcnlog.lua -r capture.pcap
    tshark -X lua_script:rcnlog.lua -o rcnlog.key_file:/path/keys -r capture.pcap

The generated protocol is ``rcnlog``. Its fields are ``rcnlog.<field>`` with
the table's field names; a field whose name an earlier table already uses is
``rcnlog.<table>_<field>`` (``rcnlog.count_reserved``). The dissector shows
the header, then by entry type: each FC frame of a WR/WROK/CTRL/CTRL_OK RIO
area (unsegmented entries only) through Wireshark's ``fcsof`` dissector, the
NAK ranges, the keepalive probe, or each entry of a BATCH. It does not check
the entry's CRC32C.

Sealed log transfer (DESIGN.md 9): a datagram that starts with "RCNH" is a hop
envelope: its header gets its own tree (``HOP_HEADER``; the fields whose names
the log header uses are ``rcnlog.hop_<field>``), then the entry inside it as
above, then the hop tag (``rcnlog.hop_tag``), shown as not checked. An entry
with ``seal`` 1 shows its clear header and "sealed end to end: N bytes, group
key epoch E". With the preference "Key file" (``rcnlog.key_file``: a key file
of ``rcn.logxfer.keys``; only its ``group`` lines are read) the dissector opens
unsegmented sealed bodies: AES-256-GCM decryption is AES-CTR from the counter
block nonce || 2 (J0 = nonce || 1 is only the tag's), with AES-256 written in
pure Lua 5.2 (``bit32``) and generated into the script; the opened body goes
into a new Tvb ("Opened body") that the RIO-area and NAK dissection read. The
Lua dissector checks NEITHER tag (the hop tag would need HKDF-SHA256, the body's
GHASH): a wrong key shows as malformed FC frames. ``rcn-decode --keys`` checks
both.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):          # run as ``python tools/gen_lua_dissector.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datapath.frames import hop, logentry               # noqa: E402
from datapath.frames.fields import Layout               # noqa: E402
from rcn.logxfer.keys import KEY_SIZE                   # noqa: E402

PROTO = "rcnlog"
#: the tables the dissector reads, with the Lua name of each
LAYOUTS: tuple[tuple[str, Layout], ...] = (
    ("LOG", logentry.LOG_HEADER),
    ("COUNT", logentry.COUNT_HEADER),
    ("NAK_RANGE", logentry.NAK_RANGE),
    ("KEEPALIVE", logentry.KEEPALIVE),
    ("HOP", hop.HOP_HEADER),
)
#: integer fields whose names contain one of these words are shown in hex
_HEX_WORDS = ("magic", "flags", "crc", "wwn")
_UINT_PROTOFIELD = {1: "uint8", 2: "uint16", 3: "uint24", 4: "uint32", 8: "uint64"}


def _lua_str(text: str) -> str:
    """A double-quoted Lua 5.2 string literal (non-ASCII bytes as decimal escapes)."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 32 <= byte < 127:
            out.append(ch)
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


_ACRONYMS = {"id": "ID", "ttl": "TTL", "io": "I/O", "wwn": "WWN", "lun": "LUN", "ns": "(ns)",
             "crc32c": "CRC32C", "rio": "RIO"}


def _label(name: str) -> str:
    """``group_id`` -> ``Group ID``: the name shown in the packet tree."""
    words = [_ACRONYMS.get(word, word) for word in name.split("_")]
    return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]])


def _short(layout: Layout) -> str:
    return layout.layer.removeprefix("log_")


def _base(name: str) -> str:
    return "base.HEX" if any(word in name for word in _HEX_WORDS) else "base.DEC"


class _Fields:
    """ProtoField declarations, with one unique abbreviation per field."""

    def __init__(self):
        self.abbrevs: set[str] = set()
        self.lines: list[str] = []
        self.vars: list[str] = []

    def unique(self, layout: Layout, name: str) -> str:
        abbrev = f"{PROTO}.{name}"
        if abbrev in self.abbrevs:
            abbrev = f"{PROTO}.{_short(layout)}_{name}"
        if abbrev in self.abbrevs:
            raise ValueError(f"{layout.layer}.{name}: field name {abbrev} is taken twice")
        self.abbrevs.add(abbrev)
        return abbrev

    def declare(self, var: str, abbrev: str, kind: str, *args: str) -> str:
        self.lines.append(f"local {var} = ProtoField.{kind}({_lua_str(abbrev)}, {', '.join(args)})")
        self.vars.append(var)
        return var


def _value_string(var: str, values: dict[int, str]) -> str:
    items = ", ".join(f"[{value}] = {_lua_str(label)}" for value, label in sorted(values.items()))
    return f"local {var} = {{ {items} }}"


def _layout_block(lua_name: str, layout: Layout, fields: _Fields, preamble: list[str]) -> str:
    """Declare the layout's ProtoFields; return its Lua table (offsets, widths, fields)."""
    entries = []
    for name, offset, width, is_raw, bit_masks, doc, values in layout.rows():
        abbrev = fields.unique(layout, name)
        var = "pf_" + abbrev.removeprefix(PROTO + ".").replace(".", "_")
        if is_raw:
            fields.declare(var, abbrev, "bytes", _lua_str(_label(name)), "base.NONE", _lua_str(doc))
        else:
            vs = "nil"
            if values:
                vs = f"vs_{var.removeprefix('pf_')}"
                preamble.append(_value_string(vs, values))
            fields.declare(var, abbrev, _UINT_PROTOFIELD[width], _lua_str(_label(name)),
                           _base(name), vs, "nil", _lua_str(doc))
        subs = []
        for sub, shift, mask in bit_masks:
            if width > 4:
                raise ValueError(f"{layout.layer}.{name}: sub-bit fields of 8-byte fields "
                                 "are not supported by the generator")
            sub_abbrev = fields.unique(layout, sub)
            sub_var = "pf_" + sub_abbrev.removeprefix(PROTO + ".")
            fields.declare(sub_var, sub_abbrev, _UINT_PROTOFIELD[width], _lua_str(_label(sub)),
                           _base(sub), "nil", f"0x{mask << shift:X}", _lua_str(f"{name} bits"))
            subs.append(sub_var)
        sub_text = f", bits = {{ {', '.join(subs)} }}" if subs else ""
        entries.append(f"    {{ name = {_lua_str(name)}, offset = {offset}, width = {width}, "
                       f"field = {var}{sub_text} }},")
    return "\n".join([
        f"-- {layout.layer}: {layout.doc}, {layout.size} bytes",
        f"local {lua_name} = {{ size = {layout.size}, rows = {{",
        *entries,
        "} }",
    ])


#: fields the template below reads by name, per layout
_TEMPLATE_FIELDS = {
    "LOG": ("magic", "version", "entry_type", "group_id", "sequence", "segment_index",
            "segment_count", "rio_length", "seal", "key_epoch", "total_length"),
    "COUNT": ("count",),
    "NAK_RANGE": ("first", "last"),
    "KEEPALIVE": ("probe_id",),
    "HOP": ("magic", "version", "suite", "key_epoch", "counter"),
}

#: AES-256 (FIPS-197) encryption of one block in Lua 5.2 with ``bit32``, and AES-GCM's
#: CTR-mode decryption (NIST SP 800-38D: 96-bit nonce, J0 = nonce || 1, the data from
#: inc32(J0) = nonce || 2). Tables are computed when the script loads; no key is printed.
_AES = r'''
local band, bor, bxor = bit32.band, bit32.bor, bit32.bxor
local lshift, rshift, rrotate = bit32.lshift, bit32.rshift, bit32.rrotate

local SBOX, TE0, TE1, TE2, TE3 = {}, {}, {}, {}, {}
do
    local function rol8(x, n) return band(bor(lshift(x, n), rshift(x, 8 - n)), 0xFF) end
    local function xtime(x) return band(bxor(lshift(x, 1), band(x, 0x80) ~= 0 and 0x1B or 0), 0xFF) end
    local p, q = 1, 1
    repeat                          -- p runs over GF(2^8)* by powers of 3, q = 1/p
        p = bxor(p, xtime(p))
        q = bxor(q, lshift(q, 1)); q = bxor(q, lshift(q, 2)); q = bxor(q, lshift(q, 4))
        q = band(q, 0xFF)
        if band(q, 0x80) ~= 0 then q = bxor(q, 0x09) end
        SBOX[p] = bxor(q, rol8(q, 1), rol8(q, 2), rol8(q, 3), rol8(q, 4), 0x63)
    until p == 1
    SBOX[0] = 0x63
    for x = 0, 255 do
        local s = SBOX[x]
        local s2 = xtime(s)
        local w = bor(lshift(s2, 24), lshift(s, 16), lshift(s, 8), bxor(s2, s))
        TE0[x], TE1[x], TE2[x], TE3[x] = w, rrotate(w, 8), rrotate(w, 16), rrotate(w, 24)
    end
end

local function sub_word(w)
    return bor(lshift(SBOX[rshift(w, 24)], 24), lshift(SBOX[band(rshift(w, 16), 0xFF)], 16),
               lshift(SBOX[band(rshift(w, 8), 0xFF)], 8), SBOX[band(w, 0xFF)])
end

-- the 60 round-key words of AES-256 from a 32-byte key string
local function aes256_expand(key)
    local w, rcon = {}, 1
    for i = 0, 7 do
        local a, b, c, d = key:byte(4 * i + 1, 4 * i + 4)
        w[i] = bor(lshift(a, 24), lshift(b, 16), lshift(c, 8), d)
    end
    for i = 8, 59 do
        local t = w[i - 1]
        if i % 8 == 0 then
            t = bxor(sub_word(bit32.lrotate(t, 8)), lshift(rcon, 24))
            rcon = band(bxor(lshift(rcon, 1), rcon >= 0x80 and 0x1B or 0), 0xFF)
        elseif i % 8 == 4 then
            t = sub_word(t)
        end
        w[i] = bxor(w[i - 8], t)
    end
    return w
end

-- encrypt the block (s0, s1, s2, s3), big-endian words, with round keys w
local function aes256_block(w, s0, s1, s2, s3)
    s0, s1, s2, s3 = bxor(s0, w[0]), bxor(s1, w[1]), bxor(s2, w[2]), bxor(s3, w[3])
    for r = 4, 52, 4 do
        s0, s1, s2, s3 =
            bxor(TE0[rshift(s0, 24)], TE1[band(rshift(s1, 16), 0xFF)],
                 TE2[band(rshift(s2, 8), 0xFF)], TE3[band(s3, 0xFF)], w[r]),
            bxor(TE0[rshift(s1, 24)], TE1[band(rshift(s2, 16), 0xFF)],
                 TE2[band(rshift(s3, 8), 0xFF)], TE3[band(s0, 0xFF)], w[r + 1]),
            bxor(TE0[rshift(s2, 24)], TE1[band(rshift(s3, 16), 0xFF)],
                 TE2[band(rshift(s0, 8), 0xFF)], TE3[band(s1, 0xFF)], w[r + 2]),
            bxor(TE0[rshift(s3, 24)], TE1[band(rshift(s0, 16), 0xFF)],
                 TE2[band(rshift(s1, 8), 0xFF)], TE3[band(s2, 0xFF)], w[r + 3])
    end
    local function last(a, b, c, d, k)
        return bxor(bor(lshift(SBOX[rshift(a, 24)], 24), lshift(SBOX[band(rshift(b, 16), 0xFF)], 16),
                        lshift(SBOX[band(rshift(c, 8), 0xFF)], 8), SBOX[band(d, 0xFF)]), k)
    end
    return last(s0, s1, s2, s3, w[56]), last(s1, s2, s3, s0, w[57]),
           last(s2, s3, s0, s1, w[58]), last(s3, s0, s1, s2, w[59])
end

-- AES-GCM's decryption without the tag: CTR mode from nonce || 2 (a 12-byte nonce)
local function gcm_ctr(w, nonce, data)
    local n0, n1, n2 = 0, 0, 0
    do
        local b = { nonce:byte(1, 12) }
        n0 = bor(lshift(b[1], 24), lshift(b[2], 16), lshift(b[3], 8), b[4])
        n1 = bor(lshift(b[5], 24), lshift(b[6], 16), lshift(b[7], 8), b[8])
        n2 = bor(lshift(b[9], 24), lshift(b[10], 16), lshift(b[11], 8), b[12])
    end
    local out, counter = {}, 2
    for at = 1, #data, 16 do
        local k0, k1, k2, k3 = aes256_block(w, n0, n1, n2, counter)
        counter = band(counter + 1, 0xFFFFFFFF)
        local ks = { rshift(k0, 24), band(rshift(k0, 16), 0xFF), band(rshift(k0, 8), 0xFF), band(k0, 0xFF),
                     rshift(k1, 24), band(rshift(k1, 16), 0xFF), band(rshift(k1, 8), 0xFF), band(k1, 0xFF),
                     rshift(k2, 24), band(rshift(k2, 16), 0xFF), band(rshift(k2, 8), 0xFF), band(k2, 0xFF),
                     rshift(k3, 24), band(rshift(k3, 16), 0xFF), band(rshift(k3, 8), 0xFF), band(k3, 0xFF) }
        local chunk = { data:byte(at, math.min(at + 15, #data)) }
        for i = 1, #chunk do chunk[i] = bxor(chunk[i], ks[i]) end
        out[#out + 1] = string.char(table.unpack(chunk))
    end
    return table.concat(out)
end

-- GHASH (SP 800-38D 6.4) with Shoup's 4-bit tables: M[i] = i * H, 128-bit values as four
-- big-endian words; REM4 reduces the 4 bits shifted out
local REM4 = { [0] = 0x0000, 0x1C20, 0x3840, 0x2460, 0x7080, 0x6CA0, 0x48C0, 0x54E0,
               0xE100, 0xFD20, 0xD940, 0xC560, 0x9180, 0x8DA0, 0xA9C0, 0xB5E0 }

local function ghash_tables(h0, h1, h2, h3)
    local m = { [0] = { 0, 0, 0, 0 }, [8] = { h0, h1, h2, h3 } }
    for _, i in ipairs({ 4, 2, 1 }) do
        local r = band(h3, 1) ~= 0 and 0xE1000000 or 0
        h3 = bor(rshift(h3, 1), lshift(h2, 31))
        h2 = bor(rshift(h2, 1), lshift(h1, 31))
        h1 = bor(rshift(h1, 1), lshift(h0, 31))
        h0 = bxor(rshift(h0, 1), r)
        m[i] = { h0, h1, h2, h3 }
    end
    for _, i in ipairs({ 2, 4, 8 }) do
        for j = 1, i - 1 do
            local a, b = m[i], m[j]
            m[i + j] = { bxor(a[1], b[1]), bxor(a[2], b[2]), bxor(a[3], b[3]), bxor(a[4], b[4]) }
        end
    end
    return m
end

-- (x0..x3) * H, a nibble at a time from the last byte (mbedTLS's gcm_mult)
local function gmult(m, x0, x1, x2, x3)
    local x = { [0] = x0, x1, x2, x3 }
    local t = m[band(x3, 0xF)]
    local z0, z1, z2, z3 = t[1], t[2], t[3], t[4]
    for i = 15, 0, -1 do
        local byte = band(rshift(x[rshift(i, 2)], 24 - 8 * (i % 4)), 0xFF)
        if i ~= 15 then
            local rem = band(z3, 0xF)
            z3 = bor(rshift(z3, 4), lshift(z2, 28))
            z2 = bor(rshift(z2, 4), lshift(z1, 28))
            z1 = bor(rshift(z1, 4), lshift(z0, 28))
            z0 = bxor(rshift(z0, 4), lshift(REM4[rem], 16))
            t = m[band(byte, 0xF)]
            z0, z1, z2, z3 = bxor(z0, t[1]), bxor(z1, t[2]), bxor(z2, t[3]), bxor(z3, t[4])
        end
        local rem = band(z3, 0xF)
        z3 = bor(rshift(z3, 4), lshift(z2, 28))
        z2 = bor(rshift(z2, 4), lshift(z1, 28))
        z1 = bor(rshift(z1, 4), lshift(z0, 28))
        z0 = bxor(rshift(z0, 4), lshift(REM4[rem], 16))
        t = m[rshift(byte, 4)]
        z0, z1, z2, z3 = bxor(z0, t[1]), bxor(z1, t[2]), bxor(z2, t[3]), bxor(z3, t[4])
    end
    return z0, z1, z2, z3
end

-- fold ``data`` (zero-padded to 16 bytes) into the GHASH state y
local function ghash(m, y, data)
    for at = 1, #data, 16 do
        local b = { data:byte(at, at + 15) }
        for k = #b + 1, 16 do b[k] = 0 end
        local w = {}
        for k = 0, 3 do
            w[k] = bor(lshift(b[4 * k + 1], 24), lshift(b[4 * k + 2], 16), lshift(b[4 * k + 3], 8),
                       b[4 * k + 4])
        end
        y[1], y[2], y[3], y[4] = gmult(m, bxor(y[1], w[0]), bxor(y[2], w[1]), bxor(y[3], w[2]),
                                       bxor(y[4], w[3]))
    end
end

-- whether ``tag`` is AES-GCM's over (aad, ciphertext) with key k = { w = round keys, m = tables }
local function gcm_tag_ok(k, nonce, aad, ciphertext, tag)
    local y = { 0, 0, 0, 0 }
    ghash(k.m, y, aad)
    ghash(k.m, y, ciphertext)
    y[1], y[2], y[3], y[4] = gmult(k.m, y[1], bxor(y[2], #aad * 8), y[3], bxor(y[4], #ciphertext * 8))
    local b = { nonce:byte(1, 12) }
    local e = { aes256_block(k.w, bor(lshift(b[1], 24), lshift(b[2], 16), lshift(b[3], 8), b[4]),
                             bor(lshift(b[5], 24), lshift(b[6], 16), lshift(b[7], 8), b[8]),
                             bor(lshift(b[9], 24), lshift(b[10], 16), lshift(b[11], 8), b[12]), 1) }
    for k2 = 1, 4 do
        local want = bxor(y[k2], e[k2])
        local a1, a2, a3, a4 = tag:byte(4 * k2 - 3, 4 * k2)
        if want ~= bor(lshift(a1, 24), lshift(a2, 16), lshift(a3, 8), a4) then return false end
    end
    return true
end

-- the end-to-end seal's associated data from the entry's header (logentry.e2e_aad)
local function e2e_aad(header)
    local out = {}
    for i = 1, #header do
        out[i] = string.char(bor(band(header:byte(i), AAD_MASK[i]), AAD_CONST[i]))
    end
    return table.concat(out)
end
'''

_BODY = r'''
local pf_unit_length = ProtoField.uint32("rcnlog.unit_length", "Unit length", base.DEC, nil, nil,
    "bytes of the SOF..EOF unit that follows")
local pf_body = ProtoField.bytes("rcnlog.body", "Body", base.NONE, "body not decoded")
local pf_seal_nonce = ProtoField.bytes("rcnlog.seal_nonce", "Seal nonce", base.NONE,
    "nonce of the end-to-end seal")
local pf_sealed = ProtoField.bytes("rcnlog.sealed", "Sealed body", base.NONE,
    "ciphertext of the body, sealed end to end under the group key")
local pf_seal_tag = ProtoField.bytes("rcnlog.seal_tag", "Seal tag", base.NONE,
    "GCM tag of the end-to-end seal (checked with the key file)")
local pf_seal_state = ProtoField.string("rcnlog.seal_state", "Seal",
    "sealed, or opened with the key file's group key")
local pf_hop_tag = ProtoField.bytes("rcnlog.hop_tag", "Hop tag", base.NONE,
    "GCM tag over the hop header and the entry (not checked by this dissector)")
local ef_malformed = ProtoExpert.new("rcnlog.malformed", "Malformed log entry",
    expert.group.MALFORMED, expert.severity.ERROR)
local ef_segment = ProtoExpert.new("rcnlog.segment",
    "Segment of an RIO area; FC frames not decoded", expert.group.REASSEMBLE, expert.severity.NOTE)
local ef_key_file = ProtoExpert.new("rcnlog.key_file", "Key file not read",
    expert.group.UNDECODED, expert.severity.WARN)
local ef_bad_tag = ProtoExpert.new("rcnlog.bad_tag", "Sealed body: bad tag",
    expert.group.SECURITY, expert.severity.ERROR)

rcnlog.fields = {
    @FIELDS@,
    pf_unit_length, pf_body, pf_seal_nonce, pf_sealed, pf_seal_tag, pf_seal_state, pf_hop_tag,
}
rcnlog.experts = { ef_malformed, ef_segment, ef_key_file, ef_bad_tag }

rcnlog.prefs.key_file = Pref.string("Key file", "",
    "RCN key file (rcn.logxfer.keys format, as rcn-decode --keys reads): its group keys "
    .. "open bodies sealed end to end. Keep it private: it holds keys.")

local fcsof = Dissector.get("fcsof")

for _, layout in ipairs({ @LAYOUTS@ }) do
    layout.by_name = {}
    for _, row in ipairs(layout.rows) do layout.by_name[row.name] = row end
end

-- an integer field of a layout at ``base``: a Lua number, or UInt64 for 8 bytes
local function get(tvb, layout, name, base)
    local row = layout.by_name[name]
    local range = tvb(base + row.offset, row.width)
    if row.width == 8 then return range:uint64() end
    return range:uint()
end

local function add_layout(tree, tvb, layout, base)
    for _, row in ipairs(layout.rows) do
        local item = tree:add(row.field, tvb(base + row.offset, row.width))
        if row.bits then
            for _, sub in ipairs(row.bits) do item:add(sub, tvb(base + row.offset, row.width)) end
        end
    end
end

local function malformed(tree, text)
    tree:add_proto_expert_info(ef_malformed, text)
end

local function dissect_rio(tvb, pinfo, tree, at, stop)
    local units = 0
    while at < stop do
        if stop - at < UNIT_LENGTH_SIZE then
            malformed(tree, "RIO area: " .. (stop - at) .. " bytes left, no unit length")
            return units
        end
        local length = tvb(at, UNIT_LENGTH_SIZE):uint()
        local start = at + UNIT_LENGTH_SIZE
        if length < MIN_UNIT or length % 4 ~= 0 or start + length > stop then
            local item = tree:add(pf_unit_length, tvb(at, UNIT_LENGTH_SIZE))
            malformed(item, "unit of " .. length .. " bytes does not fit the "
                .. (stop - start) .. " left")
            return units
        end
        tree:add(pf_unit_length, tvb(at, UNIT_LENGTH_SIZE))
        fcsof:call(tvb(start, length):tvb(), pinfo, tree)
        units = units + 1
        at = start + length
    end
    return units
end

local function counted(tvb, tree, at, stop, item_size)
    if stop - at < COUNT.size then
        malformed(tree, "body of " .. (stop - at) .. " bytes has no count")
        return nil
    end
    add_layout(tree, tvb, COUNT, at)
    local count = get(tvb, COUNT, "count", at)
    if item_size and COUNT.size + count * item_size ~= stop - at then
        malformed(tree, count .. " items of " .. item_size .. " bytes do not fill "
            .. (stop - at - COUNT.size) .. " bytes")
        return nil
    end
    return count
end

-- group keys of the key file: "group:epoch" -> round keys (expanded on first use)
local keys = { path = nil, groups = {}, error = nil }

local function load_keys()
    local path = rcnlog.prefs.key_file or ""
    if path == keys.path then return end
    keys.path, keys.groups, keys.error = path, {}, nil
    if path == "" then return end
    local f, err = io.open(path, "r")
    if not f then
        keys.error = err
        return
    end
    for line in f:lines() do
        local group, epoch, hex = line:gsub("#.*", ""):match(
            "^%s*group%s+(%d+)%s+(%d+)%s+(%x+)%s+%a+%s*$")
        if group and #hex == 2 * KEY_SIZE then
            keys.groups[tonumber(group) .. ":" .. tonumber(epoch)] = hex
        end
    end
    f:close()
end

function rcnlog.prefs_changed() load_keys() end

local function group_key(group, epoch)
    load_keys()
    local name = group .. ":" .. epoch
    local key = keys.groups[name]
    if type(key) == "string" then
        local w = aes256_expand((key:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)))
        key = { w = w, m = ghash_tables(aes256_block(w, 0, 0, 0, 0)) }
        keys.groups[name] = key
    end
    return key
end

-- the clear body of the sealed one at body..body_stop, or nil when its tag does not verify
local function open_body(tvb, at, body, body_stop, key)
    local nonce = tvb:raw(body, SEAL_NONCE_SIZE)
    local data_at, tag_at = body + SEAL_NONCE_SIZE, body_stop - SEAL_TAG_SIZE
    local ciphertext = tag_at > data_at and tvb:raw(data_at, tag_at - data_at) or ""
    if not gcm_tag_ok(key, nonce, e2e_aad(tvb:raw(at, LOG.size)), ciphertext,
                      tvb:raw(tag_at, SEAL_TAG_SIZE)) then
        return nil
    end
    return gcm_ctr(key.w, nonce, ciphertext)
end

local function dissect_nak(tvb, tree, body, body_stop, notes)
    local count = counted(tvb, tree, body, body_stop, NAK_RANGE.size)
    local ranges = {}
    for i = 0, (count or 0) - 1 do
        local r = body + COUNT.size + i * NAK_RANGE.size
        local first = get(tvb, NAK_RANGE, "first", r)
        local last = get(tvb, NAK_RANGE, "last", r)
        local range_tree = tree:add(rcnlog, tvb(r, NAK_RANGE.size),
            "Missing " .. tostring(first) .. ".." .. tostring(last))
        add_layout(range_tree, tvb, NAK_RANGE, r)
        ranges[#ranges + 1] = tostring(first) .. ".." .. tostring(last)
    end
    notes[#notes + 1] = "missing " .. table.concat(ranges, ",")
end

-- a body sealed end to end: shown sealed, or opened with the key file's group key
local function dissect_sealed(tvb, pinfo, tree, at, body, body_stop, entry_type, notes)
    local seal = get(tvb, LOG, "seal", at)
    local epoch = get(tvb, LOG, "key_epoch", at)
    local group = get(tvb, LOG, "group_id", at)
    if seal ~= SEAL_AES_256_GCM or not SEALABLE_TYPES[entry_type] then
        malformed(tree, "seal " .. seal .. " on a " .. (vs_entry_type[entry_type] or "type "
            .. entry_type) .. " entry")
        return
    end
    local text = "sealed end to end: " .. get(tvb, LOG, "total_length", at)
        .. " bytes, group key epoch " .. epoch
    local segments = get(tvb, LOG, "segment_count", at)
    if segments ~= 1 then
        local index = get(tvb, LOG, "segment_index", at)
        if body_stop > body then tree:add(pf_sealed, tvb(body, body_stop - body)) end
        tree:add(pf_seal_state, tvb(at, LOG.size), text)
        tree:add_proto_expert_info(ef_segment, "segment " .. index .. " of " .. segments)
        notes[#notes + 1] = "sealed, segment " .. index .. "/" .. segments
        return
    end
    if body_stop - body < SEAL_NONCE_SIZE + SEAL_TAG_SIZE then
        malformed(tree, "sealed body of " .. (body_stop - body) .. " bytes")
        return
    end
    local data_at, tag_at = body + SEAL_NONCE_SIZE, body_stop - SEAL_TAG_SIZE
    local key, clear = group_key(group, epoch), nil
    if key ~= nil then
        clear = open_body(tvb, at, body, body_stop, key)
        text = text .. (clear and ": opened with the key file, tag good"
                        or ": seal: bad tag (group " .. group .. " epoch " .. epoch .. ")")
    elseif keys.path ~= "" then
        text = text .. " (no key for group " .. group .. " epoch " .. epoch .. ")"
    end
    local state = tree:add(pf_seal_state, tvb(body, body_stop - body), text)
    if keys.error then state:add_proto_expert_info(ef_key_file, "key file: " .. keys.error) end
    tree:add(pf_seal_nonce, tvb(body, SEAL_NONCE_SIZE))
    if tag_at > data_at then tree:add(pf_sealed, tvb(data_at, tag_at - data_at)) end
    local tag_item = tree:add(pf_seal_tag, tvb(tag_at, SEAL_TAG_SIZE))
    if key ~= nil and clear == nil then
        tag_item:add_proto_expert_info(ef_bad_tag, "seal: bad tag: the body does not open "
            .. "with the key file's key of group " .. group .. " epoch " .. epoch)
        notes[#notes + 1] = "seal: bad tag"
        return
    end
    if key == nil then
        notes[#notes + 1] = "sealed"
        return
    end
    if #clear == 0 then
        notes[#notes + 1] = "opened, empty"
        return
    end
    local opened = ByteArray.new(clear, true):tvb("Opened body")
    if entry_type == TYPE_NAK then
        notes[#notes + 1] = "opened"
        dissect_nak(opened, tree, 0, opened:len(), notes)
    else
        notes[#notes + 1] = "opened, " .. dissect_rio(opened, pinfo, tree, 0, opened:len())
            .. " FC frames"
    end
end

local dissect_entry

local function dissect_batch(tvb, pinfo, tree, at, stop, depth, notes)
    local count = counted(tvb, tree, at, stop, nil)
    if count == nil then return end
    at = at + COUNT.size
    local inner = {}
    for i = 1, count do
        if at >= stop then
            malformed(tree, "batch announces " .. count .. " entries, holds " .. (i - 1))
            break
        end
        local used, note = dissect_entry(tvb, pinfo, tree, at, stop, depth + 1)
        inner[#inner + 1] = note
        if used == 0 then break end
        at = at + used + (8 - used % 8) % 8
    end
    notes[#notes + 1] = "[" .. table.concat(inner, "; ") .. "]"
end

-- one entry at ``at``; returns the bytes it used (0: not an entry) and its summary
dissect_entry = function(tvb, pinfo, tree, at, stop, depth)
    if stop - at < LOG.size then
        malformed(tree, "entry truncated: " .. (stop - at) .. " of " .. LOG.size .. " header bytes")
        return 0, "truncated"
    end
    local rio_length = get(tvb, LOG, "rio_length", at)
    local body = at + LOG.size
    local body_stop = math.min(body + rio_length, stop)
    local entry_type = get(tvb, LOG, "entry_type", at)
    local type_name = vs_entry_type[entry_type] or ("type " .. entry_type)
    local group_id = get(tvb, LOG, "group_id", at)
    local sequence = get(tvb, LOG, "sequence", at)
    local note = type_name .. " group=" .. group_id .. " seq=" .. tostring(sequence)

    local subtree = tree:add(rcnlog, tvb(at, body_stop - at), "RCN log entry, " .. note)
    add_layout(subtree, tvb, LOG, at)
    if get(tvb, LOG, "magic", at) ~= MAGIC then malformed(subtree, "bad magic") end
    if get(tvb, LOG, "version", at) ~= VERSION then malformed(subtree, "unknown version") end
    if body + rio_length > stop then
        malformed(subtree, "body truncated: " .. (stop - body) .. " of " .. rio_length .. " bytes")
    end

    local notes = { note }
    if get(tvb, LOG, "seal", at) ~= 0 then
        dissect_sealed(tvb, pinfo, subtree, at, body, body_stop, entry_type, notes)
    elseif RIO_TYPES[entry_type] then
        local segments = get(tvb, LOG, "segment_count", at)
        if segments == 1 then
            notes[#notes + 1] = dissect_rio(tvb, pinfo, subtree, body, body_stop) .. " FC frames"
        else
            local index = get(tvb, LOG, "segment_index", at)
            if body_stop > body then subtree:add(pf_body, tvb(body, body_stop - body)) end
            subtree:add_proto_expert_info(ef_segment, "segment " .. index .. " of " .. segments)
            notes[#notes + 1] = "segment " .. index .. "/" .. segments
        end
    elseif entry_type == TYPE_NAK then
        dissect_nak(tvb, subtree, body, body_stop, notes)
    elseif entry_type == TYPE_KEEPALIVE then
        if body_stop - body ~= KEEPALIVE.size then
            malformed(subtree, "keepalive body of " .. (body_stop - body) .. " bytes, want "
                .. KEEPALIVE.size)
        else
            add_layout(subtree, tvb, KEEPALIVE, body)
            notes[#notes + 1] = "probe " .. tostring(get(tvb, KEEPALIVE, "probe_id", body))
        end
    elseif entry_type == TYPE_BATCH then
        if depth > 0 then
            malformed(subtree, "a batch inside a batch")
        else
            dissect_batch(tvb, pinfo, subtree, body, body_stop, depth, notes)
        end
    elseif body_stop > body then
        subtree:add(pf_body, tvb(body, body_stop - body))
    end
    return body_stop - at, table.concat(notes, ", ")
end

-- a hop envelope: its header, the entry inside it, the tag
local function dissect_hop(tvb, pinfo, tree)
    local length = tvb:len()
    local hop_tree = tree:add(rcnlog, tvb(0, math.min(length, HOP.size)), "RCN hop envelope")
    if length < HOP.size + HOP_TAG_SIZE then
        malformed(hop_tree, "hop envelope of " .. length .. " bytes, want at least "
            .. (HOP.size + HOP_TAG_SIZE))
        return "hop envelope, truncated"
    end
    add_layout(hop_tree, tvb, HOP, 0)
    local note = "hop epoch " .. get(tvb, HOP, "key_epoch", 0) .. " counter "
        .. tostring(get(tvb, HOP, "counter", 0))
    hop_tree:append_text(", " .. note .. ", sealed (hop tag not checked)")
    if get(tvb, HOP, "version", 0) ~= HOP_VERSION or get(tvb, HOP, "suite", 0) ~= HOP_SUITE then
        malformed(hop_tree, "unknown hop envelope version or suite")
        return note
    end
    local stop = length - HOP_TAG_SIZE
    local inner = "not an entry"
    if stop - HOP.size >= LOG.size and get(tvb, LOG, "magic", HOP.size) == MAGIC then
        _, inner = dissect_entry(tvb, pinfo, tree, HOP.size, stop, 0)
    else
        malformed(hop_tree, "the envelope holds no log entry")
    end
    tree:add(pf_hop_tag, tvb(stop, HOP_TAG_SIZE)):append_text(" (not checked)")
    return inner .. " [" .. note .. "]"
end

function rcnlog.dissector(tvb, pinfo, tree)
    if tvb:len() < 4 then return 0 end
    local note
    if tvb(0, 4):uint() == HOP_MAGIC then
        note = dissect_hop(tvb, pinfo, tree)
    elseif tvb:len() < LOG.size or get(tvb, LOG, "magic", 0) ~= MAGIC then
        return 0
    else
        _, note = dissect_entry(tvb, pinfo, tree, 0, tvb:len(), 0)
    end
    pinfo.cols.protocol:set("RCNLOG")
    pinfo.cols.info:clear_fence()
    pinfo.cols.info:set(note)
    return tvb:len()
end

DissectorTable.get("udp.port"):add(PORT, rcnlog)
'''


def _check_names() -> None:
    """The Lua template reads these fields by name: fail here, not in Wireshark, if one goes."""
    layouts = dict(LAYOUTS)
    for lua_name, names in _TEMPLATE_FIELDS.items():
        missing = [name for name in names if name not in layouts[lua_name].offsets]
        if missing:
            raise ValueError(f"{layouts[lua_name].layer} has no field {', '.join(missing)}, "
                             "which the Lua template reads: update tools/gen_lua_dissector.py")


def e2e_aad_masks() -> tuple[bytes, bytes]:
    """``logentry.e2e_aad`` as a byte mask and constant: aad = header & mask | const.

    Taken from the function itself (on an all-zero and an all-one header), so the script
    follows a change of which fields the end-to-end seal leaves out of its associated data.
    """
    low, high = (logentry.LogHeader.parse(bytes([b]) * logentry.HEADER_SIZE) for b in (0, 255))
    const = logentry.e2e_aad(low.entry_type, low)
    mask = bytes(a ^ b for a, b in zip(logentry.e2e_aad(high.entry_type, high), const))
    if any(m & c for m, c in zip(mask, const)):
        raise ValueError("logentry.e2e_aad is no longer header & mask | constant")
    return mask, const


def generate(port: int = logentry.LOG_PORT) -> str:
    """The Lua dissector script, registered on UDP ``port``."""
    if not 0 < port < 65536:
        raise ValueError(f"port {port} outside 1..65535")
    _check_names()
    fields = _Fields()
    preamble: list[str] = []
    blocks = [_layout_block(name, layout, fields, preamble) for name, layout in LAYOUTS]
    rio = ", ".join(f"[{int(t)}] = true" for t in sorted(logentry.RIO_TYPES))
    sealable = ", ".join(f"[{int(t)}] = true" for t in sorted(logentry.SEALABLE_TYPES))
    aad_mask, aad_const = e2e_aad_masks()
    head = [
        f"-- {PROTO}.lua: Wireshark dissector for the RCN log-transfer protocol (UDP port {port}).",
        "-- GENERATED by tools/gen_lua_dissector.py from the field tables in",
        "-- datapath/frames/logentry.py and hop.py. Do not edit: change the tables and",
        "-- regenerate.",
        f"-- Use: tshark -X lua_script:{PROTO}.lua [-o {PROTO}.key_file:KEYFILE] -r capture.pcap",
        "",
        f'local rcnlog = Proto("{PROTO}", "RCN log-transfer entry")',
        "",
        f"local PORT = {port}",
        f"local MAGIC = 0x{logentry.MAGIC:08X}",
        f"local VERSION = {logentry.VERSION}",
        f"local UNIT_LENGTH_SIZE = {logentry.UNIT_LENGTH_SIZE}",
        f"local MIN_UNIT = {logentry.MIN_UNIT}",
        f"local TYPE_NAK = {int(logentry.EntryType.NAK)}",
        f"local TYPE_BATCH = {int(logentry.EntryType.BATCH)}",
        f"local TYPE_KEEPALIVE = {int(logentry.EntryType.KEEPALIVE)}",
        f"local RIO_TYPES = {{ {rio} }}",
        f"local SEALABLE_TYPES = {{ {sealable} }}",
        f"local SEAL_AES_256_GCM = {int(logentry.Seal.AES_256_GCM)}",
        f"local SEAL_NONCE_SIZE = {logentry.SEAL_NONCE_SIZE}",
        f"local SEAL_TAG_SIZE = {logentry.SEAL_TAG_SIZE}",
        f"local KEY_SIZE = {KEY_SIZE}",
        f"local HOP_MAGIC = 0x{hop.HOP_MAGIC:08X}",
        f"local HOP_VERSION = {hop.HOP_VERSION}",
        f"local HOP_SUITE = {hop.SUITE_AES_256_GCM}",
        f"local HOP_TAG_SIZE = {hop.HOP_TAG_SIZE}",
        f"local AAD_MASK = {{ {', '.join(f'0x{b:02X}' for b in aad_mask)} }}",
        f"local AAD_CONST = {{ {', '.join(f'0x{b:02X}' for b in aad_const)} }}",
        "",
    ]
    body_lines = [line for block in blocks for line in (block, "")]
    field_list = ",\n    ".join(fields.vars)
    # value strings first: the ProtoFields refer to them
    return "\n".join(head + preamble + [""] + fields.lines + [""] + body_lines) + _AES \
        + _BODY.replace("@FIELDS@", field_list).replace(
            "@LAYOUTS@", ", ".join(name for name, _ in LAYOUTS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write the Wireshark Lua dissector for the RCN log-transfer protocol "
                    "(proto 'rcnlog'), generated from the field tables in "
                    "datapath/frames/logentry.py. Load it with "
                    "'tshark -X lua_script:FILE' or copy it to Wireshark's plugin folder.")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write the script to FILE (default: standard output)")
    parser.add_argument("--port", type=int, default=logentry.LOG_PORT, metavar="N",
                        help=f"UDP port to register the dissector on (default {logentry.LOG_PORT})")
    args = parser.parse_args(argv)
    try:
        script = generate(args.port)
    except ValueError as exc:
        parser.error(str(exc))
    if args.output:
        Path(args.output).write_text(script, encoding="utf-8")
    else:
        sys.stdout.write(script)
    return 0


if __name__ == "__main__":
    sys.exit(main())
