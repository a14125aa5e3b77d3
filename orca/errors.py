"""Errors raised by orca-build; all are UmociError so the CLIs share one handler."""

from __future__ import annotations

from umoci_py.errors import UmociError


class OrcaError(UmociError):
    """Base of every error orca-build raises on purpose."""


class DockerfileError(OrcaError):
    """A Dockerfile is malformed; carries the file and line when known.

    ``str(err)`` is ``file:line: message`` so a user can jump to the spot.
    """

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        self.message = message
        self.file = file
        self.line = line
        super().__init__(self._render())

    def _render(self) -> str:
        if self.file is None:
            return self.message
        if self.line is None:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}: {self.message}"

    def at(self, file: str, line: int | None) -> "DockerfileError":
        """The same error located in ``file`` at ``line`` (for errors raised by pure helpers)."""
        return type(self)(self.message, file, line)


class SubstitutionError(DockerfileError):
    """A ``$var`` / ``${var...}`` expression cannot be expanded."""


class IgnoreFileError(OrcaError):
    """A .dockerignore pattern is malformed."""


class BuildError(OrcaError):
    """A build step failed (the command exited non-zero, a source is missing, ...).

    ``output`` holds the failing step's last output lines, apart from the
    one-line message: the progress shows them where it shows output."""

    def __init__(self, message: str, output: tuple[str, ...] = ()):
        super().__init__(message)
        self.output = tuple(output)
