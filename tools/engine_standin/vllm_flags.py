#!/usr/bin/env python3
"""Reject the `vllm serve` command lines real vLLM rejects, before the stand-in starts.

Real vLLM exits 2 with an argparse usage error on an unknown flag; the stand-in alone would log
and ignore it, so a typo in `vllm_stack_extra_args` would only fail on a GPU host. The accepted
flags come from vLLM's own parser (vllm_flags.json, made by gen_vllm_flags.py, with the vLLM
version it came from). Mirrors vLLM's FlexibleArgumentParser spelling rules: `_` and `-` are
the same in a flag name, `--flag=value`, dotted sub-keys (`--compilation-config.level 3`),
`-O3`, and argparse's unambiguous prefixes (vLLM keeps allow_abbrev on).

    python3 vllm_flags.py serve MODEL [ARGS...]   # exit 0 when vLLM would accept the flags, else 2
"""
import json
import os
import re
import sys

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vllm_flags.json")
_NAME = re.compile(r"(?<=--)[^.=]*")


def load(path=DATA):
    with open(path) as f:
        return json.load(f)


def _resolve(name, spec):
    """The accepted flag ``name`` stands for, or (None, reason)."""
    flags = spec["flags"]
    if name in flags:
        return name, None
    if name.startswith("--") and spec.get("allow_abbrev", True):
        hits = [f for f in flags if f.startswith("--") and f.startswith(name)]
        if len(hits) == 1:
            return hits[0], None
        if len(hits) > 1:
            return None, "ambiguous option: %s could match %s" % (name, ", ".join(sorted(hits)[:5]))
    return None, None


def check(argv, spec=None):
    """The argparse-style error vLLM would print for ``argv`` (``serve`` optional), or None."""
    spec = spec or load()
    flags = spec["flags"]
    args = list(argv)
    if args and args[0] == "serve":
        args = args[1:]
    positionals_left = len(spec.get("positionals") or [])
    unknown = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            unknown.extend(args[i + 1:])
            break
        if arg.startswith("-O") and arg != "-O" and not arg.startswith("--"):
            i += 1  # -O3 / -O=3 is --optimization-level 3
            continue
        if arg.startswith("-") and len(arg) > 1 and not _is_number(arg):
            key, eq, dummy = arg.partition("=")
            if key.startswith("--"):
                key = _NAME.sub(lambda m: m.group(0).replace("_", "-"), key, count=1)
            dotted = "." in key
            base = key.split(".", 1)[0] if dotted else key
            name, reason = _resolve(base, spec)
            if reason:
                return reason
            if name is None:
                # argparse's way: the token after it is then a positional (or an extra) in turn
                unknown.append(arg)
                i += 1
                continue
            if dotted:
                i += 1 if eq else 2  # `--a.b value` always takes a value
                continue
            i += 1
            if flags[name] and not eq:
                if i >= len(args):
                    return "argument %s: expected one argument" % name
                i += 1
            continue
        if positionals_left > 0:
            positionals_left -= 1
        else:
            unknown.append(arg)
        i += 1
    if unknown:
        return "unrecognized arguments: %s" % " ".join(unknown)
    return None


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def main(argv):
    spec = load()
    error = check(argv, spec)
    if error:
        sys.stderr.write("usage: vllm serve [model_tag] [options]\n")
        sys.stderr.write("vllm serve: error: %s\n" % error)
        sys.stderr.write("(flags as accepted by vLLM %s; see tools/engine_standin/vllm_flags.json)\n"
                         % spec.get("vllm_version"))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
