"""numba kernels: the work an FPGA NIC would offload (DESIGN.md section 6).

One module per block: ``reorder`` (sequence reorder buffers), ``bitmap``
(differential bitmaps), ``batching`` (batch coalescing), ``coalesce`` (the
writes of a batch a receiver may drop) and ``delineate`` (FCIP stream
delineation). Each kernel is ``@njit(cache=True, nogil=True)``
with an explicit signature, works on preallocated fixed-size arrays and
allocates nothing in its loop; the public wrapper next to it checks dtype,
shape and contiguity (``_checks``) and raises ``ValueError``/``TypeError``
with the argument's name. ``datapath.reference`` holds the plain-Python model
of each; tests prove kernel == model.
"""
