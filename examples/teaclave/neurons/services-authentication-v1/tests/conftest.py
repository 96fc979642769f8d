"""Fixtures for xmpl.tc.services-authentication-v1's tests.

Created by scaffold; yours to edit. The standard fixtures (``emulator``, ``server``,
``channel``) come from scaffold-runtime's pytest plugin; add your own below.
"""

pytest_plugins = ["scaffold_runtime.pytest_plugin"]
