"""The management server (``rcn-mgmt``): settings, derived tables, routes, distribution."""
