"""Shipped in-memory fakes for tests and examples (no I/O, no mocks)."""

from cambist.testing.fakes import FakeAuthenticator, FakePriceList, FakeWallet

__all__ = ["FakeAuthenticator", "FakePriceList", "FakeWallet"]
