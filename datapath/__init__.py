"""The datapath an FPGA NIC would offload: frame layouts (frames/). Imports neither Twisted nor rcn."""
