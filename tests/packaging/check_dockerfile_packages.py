#!/usr/bin/python3
"""Checks that the Dockerfile installs the packages scripts/bootstrap.sh installs, no more.

No Docker engine runs on the development machines, so this reads both files instead:
  * The build stage must install exactly bootstrap.sh's list. If it COPYs scripts/bootstrap.sh
    and RUNs it, the lists cannot diverge; any further apt-get install there must name only
    packages bootstrap.sh lists. Without bootstrap.sh, its apt-get install lists must equal
    bootstrap.sh's list.
  * Every other stage is a runtime image: it installs a fedge .deb COPYed from the build stage
    (apt resolves the package's Depends), and may name only packages bootstrap.sh lists too,
    so that what an image runs with is what the tests ran with.
Prints the differences and exits 1 when a rule is broken.

  check_dockerfile_packages.py --dockerfile Dockerfile --bootstrap scripts/bootstrap.sh
"""

import argparse
import re
import shlex
import sys
from dataclasses import dataclass, field


def bootstrap_packages(text):
    """The packages bootstrap.sh installs: its PACKAGES=(...) list and every PACKAGES+=(...)."""
    packages = set()
    in_list = False
    for line in text.splitlines():
        code = line.split("#", 1)[0]
        if not in_list:
            start = re.search(r"\bPACKAGES\+?=\(", code)
            if not start:
                continue
            code = code[start.end():]
            in_list = True
        words, closed, _ = code.partition(")")
        packages.update(words.split())
        if closed:
            in_list = False
    if not packages:
        raise SystemExit("check_dockerfile_packages: no PACKAGES=(...) list in bootstrap.sh")
    return packages


@dataclass
class Stage:
    name: str
    line: int
    copies: list = field(default_factory=list)  # (args, line)
    runs: list = field(default_factory=list)  # (command, line)


def dockerfile_stages(text):
    """Splits a Dockerfile into stages of COPY and RUN instructions (continuations joined)."""
    stages = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        start = i + 1
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.rstrip().endswith("\\") and i < len(lines):
            nxt = lines[i]
            i += 1
            if nxt.lstrip().startswith("#"):
                continue
            line = line.rstrip()[:-1] + " " + nxt.strip()
        keyword, _, rest = line.strip().partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, start))
        elif not stages:
            continue
        elif keyword == "COPY":
            stages[-1].copies.append((rest, start))
        elif keyword == "RUN":
            stages[-1].runs.append((rest, start))
    return stages


def apt_installs(command):
    """(named packages, local .deb files) of every `apt-get install` in a shell command."""
    names, debs = [], []
    try:
        words = shlex.split(command, posix=True)
    except ValueError as e:
        raise SystemExit(f"check_dockerfile_packages: cannot split RUN {command!r}: {e}")
    # Split on shell operators, which shlex leaves glued to words or standing alone.
    commands, current = [], []
    for w in words:
        if w in ("&&", "||", ";", "|"):
            commands.append(current)
            current = []
        elif w.endswith(";"):
            current.append(w[:-1])
            commands.append(current)
            current = []
        else:
            current.append(w)
    commands.append(current)
    for cmd in commands:
        # Skip VAR=value prefixes and sudo.
        while cmd and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", cmd[0]) or cmd[0] == "sudo"):
            cmd = cmd[1:]
        if len(cmd) < 2 or cmd[0] not in ("apt-get", "apt") or "install" not in cmd[1:]:
            continue
        for w in cmd[cmd.index("install") + 1:]:
            if w.startswith("-"):
                continue
            if w.endswith(".deb") or w.startswith(("./", "/")):
                debs.append(w)
            elif "$" in w:
                raise SystemExit(f"check_dockerfile_packages: cannot check the package '{w}': "
                                 "name packages literally")
            else:
                names.append(w.split("=", 1)[0])  # pkg=version pins name pkg
    return names, debs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dockerfile", required=True)
    parser.add_argument("--bootstrap", required=True)
    args = parser.parse_args()

    with open(args.bootstrap) as f:
        wanted = bootstrap_packages(f.read())
    with open(args.dockerfile) as f:
        stages = dockerfile_stages(f.read())
    if not stages:
        raise SystemExit(f"check_dockerfile_packages: no FROM in {args.dockerfile}")

    errors = []

    def runs_bootstrap(stage):
        copied = any("scripts/bootstrap.sh" in c for c, _ in stage.copies)
        run = any(re.search(r"(^|[\s/])(\./)?scripts/bootstrap\.sh\b", r) for r, _ in stage.runs)
        return copied and run

    build_stages = [s for s in stages if runs_bootstrap(s)]
    if build_stages:
        build = build_stages[0]
        extra = set()
        for run, _ in build.runs:
            extra.update(set(apt_installs(run)[0]) - wanted)
        if extra:
            errors.append(f"build stage '{build.name}' installs packages bootstrap.sh does not: "
                          f"{' '.join(sorted(extra))}")
        print(f"build stage '{build.name}' (line {build.line}) runs scripts/bootstrap.sh: "
              f"{len(wanted)} packages")
    else:
        # No bootstrap.sh: the first stage that installs named packages is the build stage.
        build = next((s for s in stages if any(apt_installs(r)[0] for r, _ in s.runs)), None)
        if build is None:
            errors.append("no stage runs scripts/bootstrap.sh or installs build packages")
        else:
            listed = set()
            for run, _ in build.runs:
                listed.update(apt_installs(run)[0])
            missing, extra = wanted - listed, listed - wanted
            if missing or extra:
                errors.append(
                    f"build stage '{build.name}' and bootstrap.sh disagree:\n"
                    f"  only in bootstrap.sh: {' '.join(sorted(missing)) or '-'}\n"
                    f"  only in the Dockerfile: {' '.join(sorted(extra)) or '-'}")
            else:
                print(f"build stage '{build.name}' installs bootstrap.sh's {len(wanted)} packages")

    for stage in stages:
        if stage is build:
            continue
        names, debs = set(), []
        for run, _ in stage.runs:
            n, d = apt_installs(run)
            names.update(n)
            debs.extend(d)
        extra = names - wanted
        if extra:
            errors.append(f"runtime stage '{stage.name}' installs packages bootstrap.sh does not: "
                          f"{' '.join(sorted(extra))}")
        from_build = [c for c, _ in stage.copies if build and f"--from={build.name}" in c]
        if not any(d.rsplit("/", 1)[-1].startswith("fedge") for d in debs) or not from_build:
            errors.append(f"runtime stage '{stage.name}' does not install a fedge .deb "
                          "from the build stage")
        else:
            print(f"runtime stage '{stage.name}' (line {stage.line}) installs {' '.join(debs)}"
                  f"{' and ' + ' '.join(sorted(names)) if names else ''}")

    for e in errors:
        print(f"FAIL: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
