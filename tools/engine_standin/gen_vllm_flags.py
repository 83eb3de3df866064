#!/usr/bin/env python3
"""Regenerate vllm_flags.json from vLLM's own `vllm serve` argument parser.

Run once per vLLM release, in a throwaway venv that has vLLM (no GPU needed):

    python3 -m venv /tmp/vllm-venv && /tmp/vllm-venv/bin/pip install vllm==X.Y.Z
    VLLM_TARGET_DEVICE=cpu /tmp/vllm-venv/bin/python tools/engine_standin/gen_vllm_flags.py \
        > tools/engine_standin/vllm_flags.json

(VLLM_TARGET_DEVICE=cpu only lets the parser be built on a machine without a GPU; the option
strings do not depend on the platform.)
"""
import argparse
import json
import sys

import vllm
from vllm.entrypoints.cli.serve import ServeSubcommand
from vllm.utils.argparse_utils import FlexibleArgumentParser

NO_VALUE = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction, argparse._CountAction,
            argparse._StoreConstAction, argparse._VersionAction, argparse.BooleanOptionalAction)


def main():
    root = FlexibleArgumentParser(prog="vllm")
    serve = ServeSubcommand().subparser_init(root.add_subparsers(dest="subparser"))
    flags, positionals = {}, []
    for action in serve._actions:
        if not action.option_strings:
            positionals.append(action.dest)
            continue
        for opt in action.option_strings:
            flags[opt] = not (action.nargs == 0 or isinstance(action, NO_VALUE))
    json.dump({"vllm_version": vllm.__version__,
               "source": "vllm.entrypoints.cli.serve.ServeSubcommand.subparser_init (vllm serve)",
               "generated_by": "tools/engine_standin/gen_vllm_flags.py",
               "allow_abbrev": bool(serve.allow_abbrev),
               "positionals": positionals,
               "flags": dict(sorted(flags.items()))}, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
