"""Pickle payloads that would run code if unpickled: shared by the checkpoint-safety tests.

Each writes a marker file, so a test can assert that nothing ran (the marker never appears)."""
import os


class RunsShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class EvalsPython:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w').write('pwned')",)
