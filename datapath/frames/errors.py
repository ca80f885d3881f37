"""The single error type every decoder in ``datapath.frames`` raises."""


class DecodeError(ValueError):
    """Input bytes that do not decode.

    ``layer`` names the protocol layer (``fcip``, ``fc``, ``fcp_cmnd``, ``log``...),
    ``field`` the field that is wrong or cut off, ``offset`` its byte offset in
    the buffer the caller handed in, ``reason`` what was wrong.
    """

    def __init__(self, layer: str, field: str, offset: int, reason: str):
        super().__init__(f"{layer}.{field} at byte {offset}: {reason}")
        self.layer = layer
        self.field = field
        self.offset = offset
        self.reason = reason

    def as_dict(self) -> dict:
        return {"layer": self.layer, "field": self.field, "offset": self.offset,
                "reason": self.reason}
