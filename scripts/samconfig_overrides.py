#!/usr/bin/env python3
"""What SAM CLI makes of every `parameter_overrides` in a samconfig.toml.

Run with the SAM venv's Python (`.venv-sam/bin/python`, made by
`make lint-template`): it imports the installed samcli and hands each
`parameter_overrides` value to SAM's own `--parameter-overrides` option
(`samcli.commands._utils.options.parameter_override_click_option`, type
`samcli.cli.types.CfnParameterOverridesType`) the way `sam` does with a config
file: the value goes into click's `default_map` and click converts it.

    .venv-sam/bin/python scripts/samconfig_overrides.py [samconfig.toml]

Prints JSON, one entry per env and command section that has
`parameter_overrides`:

    {env: {command: {"parsed": {key: value}, "expected": {key: value}}}}

"parsed" is what SAM passes on to CloudFormation. "expected" is each list
entry split at its first '=', with one layer of surrounding double quotes
taken off the value: the value as written. They are equal when every value
arrives whole.
"""

import json
import sys
import tomllib
from pathlib import Path

import click
from samcli.commands._utils.options import parameter_override_click_option

# samconfig's `[<env>.global.parameters]` apply to every command of the env
# (samcli.lib.config.samconfig.SamConfig.get_all); it is not a command itself.
GLOBAL_COMMAND = "global"


def sam_parse(value):
    """The dict SAM's --parameter-overrides option makes of a config value."""

    @click.command()
    @parameter_override_click_option()
    def command(parameter_overrides):
        return parameter_overrides

    # A samconfig value reaches the option through ctx.default_map
    # (samcli.cli.cli_config_file.configuration_callback).
    return command.main(
        args=[],
        default_map={"parameter_overrides": value},
        standalone_mode=False,
    )


def as_written(value):
    """Each entry split at its first '=', one layer of double quotes off."""
    entries = value if isinstance(value, list) else [value]
    expected = {}
    for entry in entries:
        key, sep, val = str(entry).partition("=")
        if not sep:
            raise SystemExit(f"parameter_overrides entry {entry!r} has no '='")
        if len(val) >= 2 and val[0] == '"' and val[-1] == '"':
            val = val[1:-1]
        expected[key.strip()] = val
    return expected


def main():
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("samconfig.toml")
    with path.open("rb") as f:
        config = tomllib.load(f)

    out = {}
    for env, commands in config.items():
        if not isinstance(commands, dict):
            continue  # `version`
        shared = commands.get(GLOBAL_COMMAND, {}).get("parameters", {})
        for command, sections in commands.items():
            if not isinstance(sections, dict):
                continue
            own = sections.get("parameters", {})
            if command == GLOBAL_COMMAND:
                params = own
            else:
                params = {**shared, **own}
            if "parameter_overrides" not in params:
                continue
            value = params["parameter_overrides"]
            out.setdefault(env, {})[command] = {
                "parsed": sam_parse(value),
                "expected": as_written(value),
            }
    json.dump(out, sys.stdout, indent=2, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
