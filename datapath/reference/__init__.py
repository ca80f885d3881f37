"""Plain-Python reference models of the kernels in ``datapath.kernels``.

Written to be obviously right, not fast: dicts, sets, lists and loops. The
kernel tests compare each kernel with its model on random input; the HDL
models are simulated against the same models. ``replay`` (the hop layer's replay
window) has no kernel: it is the model of ``hdl_models.replay``.
"""
