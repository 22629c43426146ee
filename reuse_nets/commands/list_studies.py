"""List the studies in experiments/: `reuse-nets list`."""

from __future__ import annotations

from reuse_nets.commands import common


def parse_args(argv):
    return common.ArgumentParser(description=__doc__).parse_args(argv)


def main(argv=None) -> int:
    from reuse_nets.design import study_files

    parse_args(argv)
    for name, description in study_files.list_studies():
        print(f"{name:20s} {description}")
    return 0
