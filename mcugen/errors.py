"""The one error hierarchy: every user-facing failure is an McugenError (exit code 2)."""


class McugenError(Exception):
    """A problem with the user's input or environment, reported as one line, exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class ModelError(McugenError):
    """The model file is malformed or violates an invariant (bad index, shape, scale...)."""


class UnsupportedError(McugenError):
    """The model is valid TFLite but uses something mcugen cannot generate."""


class UnsupportedOpsError(UnsupportedError):
    """Every blocker of a model at once: one line per group of operators that fail the same rule."""

    def __init__(self, lines: list[str]):
        McugenError.__init__(self, "x")
        self.lines = [" ".join(str(line).split()) for line in lines]
        self.args = ("\n".join(self.lines),)


class ToolError(McugenError):
    """An external tool (compiler, emulator, oracle) is missing or failed."""


class LimitError(McugenError):
    """The plan does not fit the target's RAM or flash. `flash`: where the flash is over, what
    it needs against what it has (one clause of the message), else None."""

    def __init__(self, message: str, flash: str | None = None):
        super().__init__(message)
        self.flash = flash


class DataError(McugenError):
    """User data (inputs, data sets, calibration arrays) is missing, empty or has the wrong shape."""


class OutputError(McugenError):
    """The output folder cannot be written safely."""
