"""The finishing maths: colour transfer, shading, eye fixes and grain, as plain torch functions on tensors.

The layer of ``faces`` and ``models`` (it may import ``engine`` and ``faces``, never ``nodes`` or ``app``):
the finishing nodes (ColorMatch, ShadowMatch, EyeFix, Grain), the benchmarks and the tests reach these
without importing a node.
"""
