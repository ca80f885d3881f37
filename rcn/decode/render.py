"""Output forms of a decoded record: a readable tree, or one JSON object per line."""

from __future__ import annotations

import json

from datapath.frames.names import format_port_id

_PORT_ID_KEYS = frozenset({"d_id", "s_id", "port_id"})
_HEX_KEYS = {"r_ctl": 2, "type": 2, "f_ctl": 6, "ox_id": 4, "rx_id": 4, "parameter": 8,
             "opcode": 2, "flags": 4, "pflags": 2, "command": 2, "cs_ctl": 2, "df_ctl": 2,
             "magic": 8, "scsi_status": 2, "service_params": 8, "common_features": 4}
_LIST_LIMIT = 16


def to_json(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"), default=_jsonable)


def _jsonable(value):
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _scalar(key: str, value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, int):
        if key in _PORT_ID_KEYS:
            return format_port_id(value)
        if key in _HEX_KEYS:
            return f"0x{value:0{_HEX_KEYS[key]}x}"
        return str(value)
    if isinstance(value, float):
        return f"{value:.6f}"
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return str(value)


def _fields_line(d: dict) -> str:
    return " ".join(f"{k}={_scalar(k, v)}" for k, v in d.items()
                    if not isinstance(v, (dict, list)))


def _nested(name: str, value, indent: str, out: list[str]) -> None:
    if isinstance(value, dict):
        out.append(f"{indent}{name}: {_fields_line(value)}".rstrip())
        for key, sub in value.items():
            if isinstance(sub, (dict, list)):
                _nested(key, sub, indent + "  ", out)
    elif isinstance(value, list):
        if not value:
            return
        if name == "errors":
            for err in value:
                out.append(f"{indent}error: {err['layer']}.{err['field']} at byte {err['offset']}: "
                           f"{err['reason']}")
            return
        if all(not isinstance(v, (dict, list)) or (isinstance(v, list) and len(v) == 2)
               for v in value):
            shown = ", ".join("..".join(map(str, v)) if isinstance(v, list) else str(v)
                              for v in value[:_LIST_LIMIT])
            more = f" (+{len(value) - _LIST_LIMIT} more)" if len(value) > _LIST_LIMIT else ""
            out.append(f"{indent}{name}: {shown}{more}")
            return
        for i, item in enumerate(value, 1):
            label = f"{name[:-1] if name.endswith('s') else name} {i}"
            if isinstance(item, dict) and "kind" in item:
                label += f" {item['kind']}"
            _nested(label, {k: v for k, v in item.items() if k != "kind"}
                    if isinstance(item, dict) else item, indent, out)


def to_tree(record: dict) -> str:
    """Headline (frame, packet, time, addresses, kind), then one line per layer."""
    head = [f"frame {record['frame']}"]
    if record.get("packet") is not None:
        head.append(f"packet {record['packet']}")
    if record.get("time") is not None:
        head.append(f"t={record['time']:.6f}")
    if "src" in record:
        head.append(f"{record['src']} -> {record['dst']}")
    if "stream_offset" in record:
        head.append(f"stream+{record['stream_offset']}")
    head.append(record.get("transport", ""))
    head.append(record.get("kind", ""))
    out = ["  ".join(h for h in head if h)]
    skip = {"frame", "packet", "time", "src", "dst", "transport", "kind", "stream_offset"}
    for key, value in record.items():
        if key in skip:
            continue
        if isinstance(value, (dict, list)):
            _nested(key, value, "  ", out)
        else:
            out.append(f"  {key}: {_scalar(key, value)}")
    return "\n".join(out)
