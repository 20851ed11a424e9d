"""Keep payloads and matched values out of the logs of the libraries the stage calls."""

from __future__ import annotations

import logging

PRESIDIO_LOGGER = "presidio-analyzer"


class MaskArgumentsFilter(logging.Filter):
    """Replace every string argument of a log record with its length.

    Some Presidio records pass text as an argument: IbanRecognizer's "Failed to
    validate text %s" the matched value, the context enhancer's "Context list is: %s"
    the words around it. Masking every string argument also hides harmless ones such as
    recognizer names, which is the price of not keeping a list of the unsafe messages.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_mask(argument) for argument in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _mask(value) for key, value in record.args.items()}
        return True


def mask_presidio_log_arguments() -> None:
    """Install MaskArgumentsFilter on Presidio's logger once per process."""
    presidio_logger = logging.getLogger(PRESIDIO_LOGGER)
    if not any(isinstance(existing, MaskArgumentsFilter) for existing in presidio_logger.filters):
        presidio_logger.addFilter(MaskArgumentsFilter())


def _mask(argument: object) -> object:
    if isinstance(argument, str):
        return f"<{len(argument)} chars>"
    return argument
