"""Fixtures for xmpl.br.services-translator-v1's tests.

The standard fixtures (``emulator``, ``server``, ``channel``) come from scaffold-runtime's
pytest plugin.
"""

pytest_plugins = ["scaffold_runtime.pytest_plugin"]
