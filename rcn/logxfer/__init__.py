"""The log-transfer channel (DESIGN.md 3.3): log entries over UDP between edges and cores."""
