"""Generate the Wireshark Lua dissector for the RCN log-transfer protocol.

Everything the dissector knows about the bytes comes from the field tables in
``datapath.frames.logentry`` (``LOG_HEADER``, ``COUNT_HEADER``, ``NAK_RANGE``,
``KEEPALIVE``) and its constants: change a table and regenerate, never edit the
output by hand.

    python -m tools.gen_lua_dissector [-o rcnlog.lua] [--port 47001]
    tshark -X lua_script:rcnlog.lua -r capture.pcap

The generated protocol is ``rcnlog``. Its fields are ``rcnlog.<field>`` with
the table's field names; a field whose name an earlier table already uses is
``rcnlog.<table>_<field>`` (``rcnlog.count_reserved``). The dissector shows
the header, then by entry type: each FC frame of a WR/WROK/CTRL/CTRL_OK RIO
area (unsegmented entries only) through Wireshark's ``fcsof`` dissector, the
NAK ranges, the keepalive probe, or each entry of a BATCH. It does not check
the entry's CRC32C.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):          # run as ``python tools/gen_lua_dissector.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datapath.frames import logentry                    # noqa: E402
from datapath.frames.fields import Layout               # noqa: E402

PROTO = "rcnlog"
#: the tables the dissector reads, with the Lua name of each
LAYOUTS: tuple[tuple[str, Layout], ...] = (
    ("LOG", logentry.LOG_HEADER),
    ("COUNT", logentry.COUNT_HEADER),
    ("NAK_RANGE", logentry.NAK_RANGE),
    ("KEEPALIVE", logentry.KEEPALIVE),
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
            "segment_count", "rio_length"),
    "COUNT": ("count",),
    "NAK_RANGE": ("first", "last"),
    "KEEPALIVE": ("probe_id",),
}

_BODY = r'''
local pf_unit_length = ProtoField.uint32("rcnlog.unit_length", "Unit length", base.DEC, nil, nil,
    "bytes of the SOF..EOF unit that follows")
local pf_body = ProtoField.bytes("rcnlog.body", "Body", base.NONE, "body not decoded")
local ef_malformed = ProtoExpert.new("rcnlog.malformed", "Malformed log entry",
    expert.group.MALFORMED, expert.severity.ERROR)
local ef_segment = ProtoExpert.new("rcnlog.segment",
    "Segment of an RIO area; FC frames not decoded", expert.group.REASSEMBLE, expert.severity.NOTE)

rcnlog.fields = {
    @FIELDS@,
    pf_unit_length, pf_body,
}
rcnlog.experts = { ef_malformed, ef_segment }

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
    if RIO_TYPES[entry_type] then
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
        local count = counted(tvb, subtree, body, body_stop, NAK_RANGE.size)
        local ranges = {}
        for i = 0, (count or 0) - 1 do
            local r = body + COUNT.size + i * NAK_RANGE.size
            local first = get(tvb, NAK_RANGE, "first", r)
            local last = get(tvb, NAK_RANGE, "last", r)
            local range_tree = subtree:add(rcnlog, tvb(r, NAK_RANGE.size),
                "Missing " .. tostring(first) .. ".." .. tostring(last))
            add_layout(range_tree, tvb, NAK_RANGE, r)
            ranges[#ranges + 1] = tostring(first) .. ".." .. tostring(last)
        end
        notes[#notes + 1] = "missing " .. table.concat(ranges, ",")
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

function rcnlog.dissector(tvb, pinfo, tree)
    if tvb:len() < LOG.size or get(tvb, LOG, "magic", 0) ~= MAGIC then return 0 end
    local _, note = dissect_entry(tvb, pinfo, tree, 0, tvb:len(), 0)
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


def generate(port: int = logentry.LOG_PORT) -> str:
    """The Lua dissector script, registered on UDP ``port``."""
    if not 0 < port < 65536:
        raise ValueError(f"port {port} outside 1..65535")
    _check_names()
    fields = _Fields()
    preamble: list[str] = []
    blocks = [_layout_block(name, layout, fields, preamble) for name, layout in LAYOUTS]
    rio = ", ".join(f"[{int(t)}] = true" for t in sorted(logentry.RIO_TYPES))
    head = [
        f"-- {PROTO}.lua: Wireshark dissector for the RCN log-transfer protocol (UDP port {port}).",
        "-- GENERATED by tools/gen_lua_dissector.py from the field tables in",
        "-- datapath/frames/logentry.py. Do not edit: change the tables and regenerate.",
        f"-- Use: tshark -X lua_script:{PROTO}.lua -r capture.pcap",
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
        "",
    ]
    body_lines = [line for block in blocks for line in (block, "")]
    field_list = ",\n    ".join(fields.vars)
    # value strings first: the ProtoFields refer to them
    return "\n".join(head + preamble + [""] + fields.lines + [""] + body_lines) \
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
