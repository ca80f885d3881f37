"""Byte layouts of every frame RCN puts on a wire or in a capture.

One module per layer; each defines its fixed headers once as a
:class:`datapath.frames.fields.Layout` and raises only
:class:`datapath.frames.errors.DecodeError` on bad input.
"""
