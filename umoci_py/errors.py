"""One exception hierarchy for the whole toolkit.

Every message is written for a user: what went wrong, which file, and where
useful what to do.  The CLIs print ``str(err)`` on one line and exit 1.
"""


class UmociError(Exception):
    """Base of every error the toolkit raises on purpose."""


class LayoutError(UmociError):
    """The OCI layout on disk is missing, malformed or not ours to change."""


class BlobError(LayoutError):
    """A blob is missing or does not match its descriptor (digest or size)."""


class SchemaError(UmociError):
    """A JSON document does not follow its OCI schema."""


class RefError(UmociError):
    """A tag or image reference is malformed, missing or ambiguous."""


class LayerError(UmociError):
    """A layer cannot be extracted or generated (bad tar, unsafe path, ...)."""


class BundleError(UmociError):
    """A runtime bundle is missing, incomplete or already exists."""


class UsageError(UmociError):
    """A command-line value is malformed."""
