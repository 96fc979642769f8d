import pytest

# Fixture modules loaded through pytest_plugins by test modules that also import from them.
pytest.register_assert_rewrite("tests.release_support")
