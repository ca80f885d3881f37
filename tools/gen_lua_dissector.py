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

#: AES-256, GCM's CTR mode, GHASH and the end-to-end associated data, in Lua: inlined
#: into the script (a Lua file beside this one, so it reads as Lua)
CRYPTO_LUA = Path(__file__).resolve().parent / "rcnlog_crypto.lua"

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
        local raw = key:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
        local w = aes256_expand(raw)
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
    crypto = CRYPTO_LUA.read_text(encoding="utf-8")
    return "\n".join(head + preamble + [""] + fields.lines + [""] + body_lines) + "\n" \
        + crypto + _BODY.replace("@FIELDS@", field_list).replace(
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
