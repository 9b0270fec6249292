"""Error types and the exit codes they map to (TuxRun's convention)."""

EXIT_OK = 0
EXIT_MEASUREMENT_FAILED = 1  # the run worked but the measurement failed its own checks
EXIT_INFRA = 2  # an infrastructure stage (image, QEMU, boot, toolstack) failed
EXIT_BAD_INPUT = 2  # bad scenario file or arguments: nothing was run


class TestbedError(Exception):
    """Base class: an expected failure with a message meant for a person."""

    exit_code = EXIT_INFRA


class ScenarioError(TestbedError):
    """The scenario file is wrong. Carries every problem found, each with file:line."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ImageError(TestbedError):
    """An image recipe failed; carries the recipe's log path."""

    def __init__(self, message, log_path=None):
        self.log_path = log_path
        super().__init__(message + (f"\n  full log: {log_path}" if log_path else ""))


class MachineError(TestbedError):
    """QEMU failed to launch or died; carries the argv and QEMU's output."""

    def __init__(self, message, argv=None, output=""):
        self.argv = argv or []
        self.output = output
        text = message
        if argv:
            import shlex

            text += "\n  command: " + shlex.join(argv)
        if output:
            text += "\n  QEMU output:\n    " + "\n    ".join(output.strip().splitlines()[-30:])
        super().__init__(text)


class ResultsFolderError(TestbedError):
    """The results folder cannot take a bundle (missing rights, too little space); nothing was run."""


class StageError(TestbedError):
    """A boot stage did not reach its expected state in time."""

    def __init__(self, stage, message, tail_lines=()):
        self.stage = stage
        self.tail_lines = list(tail_lines)
        text = f"stage '{stage}' failed: {message}"
        if self.tail_lines:
            text += f"\n  last {len(self.tail_lines)} console lines:\n    " + "\n    ".join(self.tail_lines)
        super().__init__(text)
