"""Exception types: bad input tiles and bundles that break the contract."""

from __future__ import annotations


class TileError(ValueError):
    """Input that cannot be read as a SAR tile.

    The message always names what was expected and what was found, and never names a server's
    temporary path, so it can be shown to the user as it is.
    """


class BundleError(ValueError):
    """A bundle that does not satisfy the contract; the message names the file and the field."""
