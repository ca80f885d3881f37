"""Device consoles: a router-style command language over serial ports and TCP (issue 8)."""
