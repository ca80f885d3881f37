"""Amaranth hardware models of the datapath blocks (DESIGN.md section 6).

Each block module follows the convention of :mod:`hdl_models.cosim` (one stream in, one
stream out; ``build``, ``codec``, ``reference``, ``vectors``, ``units``, ``PARAMS``,
``ICE40``) and is co-simulated against ``datapath.reference`` in ``tests/hdl_models``;
``tools/hdl_export.py`` exports, simulates in Icarus and synthesises them.
"""

#: the blocks, in the order tools/hdl_export.py reports them
BLOCKS = ("crc", "reorder", "bitmap", "delineate", "batching")
