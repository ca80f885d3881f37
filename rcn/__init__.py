"""RCN devices: channels, roles and the command-line tools."""
