"""Amaranth hardware models of the datapath blocks (DESIGN.md section 6)."""
