"""What the Python interop clients do the same way, whichever library they drive: their report to the
driver, and their checks."""

import json
import sys
import traceback

import anyio


def emit(message: dict) -> None:
    """One line of JSON to the driver."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def run_and_report(main) -> None:
    """Runs `main(settings)` with the settings of the command line; reports `{"result": ...}`, or
    `{"error": ...}` and exit status 1."""
    try:
        emit({"result": anyio.run(main, json.loads(sys.argv[1]))})
    except BaseException as err:  # noqa: BLE001 - everything is reported to the driver
        emit({"error": "".join(traceback.format_exception(err))[-4000:]})
        sys.exit(1)


def tamper(token: str) -> str:
    """One character of the signature changed (the last one may carry only padding bits)."""
    i = len(token) - 2
    return token[:i] + ("B" if token[i] == "A" else "A") + token[i + 1 :]


def check_echo(tools: list[str], answer: str | None, text: str) -> None:
    """`tools/list` offered `echo`, and calling it gave back `text`."""
    if "echo" not in tools:
        raise AssertionError(f"tools/list has no echo: {tools}")
    if answer != text:
        raise AssertionError(f"echo answered {answer!r}, expected {text!r}")
