"""Registry errors: part of the toolkit's one hierarchy (UmociError > OrcaError)."""

from __future__ import annotations

from orca.errors import OrcaError


class RegistryError(OrcaError):
    """A registry request failed; the message names the registry or reference."""


class AuthError(RegistryError):
    """The registry refused our credentials (401/403)."""


class NotFoundError(RegistryError):
    """The registry has no such manifest or blob (404)."""


class DigestError(RegistryError):
    """Content served by the registry does not match its digest or size."""
