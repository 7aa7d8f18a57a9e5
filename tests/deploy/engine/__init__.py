"""compose.yaml run by a real Docker Engine started by the tests."""
