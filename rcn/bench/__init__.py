"""``rcn-bench``: bench testing against serial-controlled appliances (issue 8)."""
