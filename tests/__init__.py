"""The test suite: unit tests of the pure cores per package, integration tests on loopback."""
