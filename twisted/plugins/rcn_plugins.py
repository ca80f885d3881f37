"""twistd plugins, one ServiceMaker per RCN role (DESIGN.md section 2).

No role daemon exists yet; each role's ServiceMaker is added here with the
issue that builds it. This file and its directory carry no ``__init__.py``.
"""
