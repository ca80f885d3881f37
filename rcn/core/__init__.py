"""The core device (``rcn-core``): relays log entries along their paths, batching them."""
