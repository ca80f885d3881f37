"""The storage array emulator: volumes, NBD host interface, RIO initiator/target, pair table."""
