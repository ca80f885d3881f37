"""The edge device (``rcn-edge``): the RIO front end's virtual storages plugged
into the data plane -- log storage area, sender, receiver, apply (DESIGN.md 2, 3.3)."""
