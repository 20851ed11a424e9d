"""Core subcommands: up, down, topics, worker, model, status, demo."""

from __future__ import annotations

import argparse


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    pass
