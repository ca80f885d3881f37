"""The management channel (DESIGN.md 3.4): AMP between the devices and rcn-mgmt.

``commands`` (the AMP commands, their argument types and errors), ``protocol`` (the
AMP base both ends speak: every box bounded, bad input answered or dropped) and
``client`` (the device's side, which edges and cores run). The server's side is the
management server's own: :mod:`rcn.mgmt.distribution`.
"""
