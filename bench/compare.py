#!/usr/bin/env python3
"""Compare moonjail against the stock lua5.4 interpreter.

Runs every program in bench/lua/ under three configurations, interleaved:

  lua5.4              lua5.4 FILE
  moonjail            moonjail run FILE                      (default limits)
  moonjail+instr      moonjail run FILE --instructions 1e11  (count hook on)

It first makes one untimed pass (a warm-up that also checks that every
interpreter exits 0 and prints the same checksum line), then N timed
repetitions.  The output is a Markdown table of median wall-clock times and
moonjail/lua5.4 ratios, ready to paste into BENCHMARKS.md, followed by the
exact command line used.  Progress goes to stderr, the report to stdout.

Python 3.11+, standard library only.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
LUA_DIR = BENCH_DIR / "lua"
DEFAULT_MOONJAIL = "target/release/moonjail"
DEADLINE = "600s"
INSTRUCTION_BUDGET = "100000000000"
# Far above any expected run time; only protects against a hung interpreter.
RUN_TIMEOUT_S = 300.0
# `lua -e` prelude of the `--hook` reference: lua's own count hook with moonjail's block
# size and budget.
LUA_COUNT_HOOK = ("local n = 0 debug.sethook(function() n = n + 256 "
                  f"if n > {INSTRUCTION_BUDGET} then error('instruction limit') end end, '', 256)")


class BenchError(Exception):
    """A fatal problem: reported on stderr, exit status 1."""


@dataclass
class Config:
    key: str
    label: str
    argv_prefix: list[str]  # program (+ fixed leading args); FILE is inserted after
    argv_suffix: list[str] = field(default_factory=list)

    def argv(self, program: Path) -> list[str]:
        return [*self.argv_prefix, rel(program), *self.argv_suffix]

    def template(self) -> str:
        program, *rest = self.argv_prefix
        return shlex.join([rel(Path(program)), *rest, "FILE", *self.argv_suffix])


@dataclass
class RunResult:
    wall_s: float
    cpu_s: float  # user + system time of the child (all its threads)
    returncode: int
    stdout: str
    stderr: str


def rel(path: Path) -> str:
    """Path relative to the repo root when possible (commands run there)."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Locating / installing / building the interpreters
# --------------------------------------------------------------------------

def find_lua(requested: str | None) -> str:
    if requested is not None:
        found = shutil.which(requested)
        if found is None:
            raise BenchError(f"--lua {requested!r}: not found or not executable")
        return found
    found = shutil.which("lua5.4")
    if found is not None:
        return found
    install = "apt-get update && apt-get install -y lua5.4"
    if os.name == "posix" and os.geteuid() == 0 and shutil.which("apt-get"):
        log(f"lua5.4 not found on PATH; installing it: {install}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "lua5.4"]):
            proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=sys.stderr)
            if proc.returncode != 0:
                raise BenchError(f"`{shlex.join(cmd)}` failed with status {proc.returncode}")
        found = shutil.which("lua5.4")
        if found is None:
            raise BenchError("lua5.4 still not on PATH after apt-get install")
        return found
    raise BenchError(
        "lua5.4 is not installed and this script can only install it as root.\n"
        f"Install it with:  sudo sh -c '{install}'\n"
        "or point the script at an interpreter with --lua PATH."
    )


def cargo_build() -> None:
    cmd = ["cargo", "build", "--release", "-p", "moonjail-cli"]
    if shutil.which("cargo") is None:
        raise BenchError(f"cargo not found; cannot run `{shlex.join(cmd)}`")
    log(f"building: {shlex.join(cmd)}")
    proc = subprocess.run(cmd, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=sys.stderr)
    if proc.returncode != 0:
        raise BenchError(f"`{shlex.join(cmd)}` failed with status {proc.returncode}")


def find_moonjail(requested: str | None, force_build: bool) -> str:
    if requested is None:
        path = REPO_ROOT / DEFAULT_MOONJAIL
        if force_build or not path.exists():
            cargo_build()
        if not path.exists():
            raise BenchError(f"{path} does not exist even after cargo build")
    else:
        if force_build:
            cargo_build()
        path = Path(requested)
        if not path.is_absolute() and os.sep not in requested:
            found = shutil.which(requested)  # a bare name: look on PATH
            if found is not None:
                path = Path(found)
        path = path.resolve()
        if not path.exists():
            raise BenchError(f"--moonjail {requested!r}: {path} does not exist")
    if not os.access(path, os.X_OK):
        raise BenchError(f"{path} is not executable")
    return str(path)


def version_of(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0] if proc.returncode == 0 and text else "unknown"


# --------------------------------------------------------------------------
# Running one program
# --------------------------------------------------------------------------

def run_once(argv: list[str]) -> RunResult:
    """Run argv from the repo root with no stdin; measure wall-clock and CPU time.

    Runs are sequential, so the RUSAGE_CHILDREN delta is exactly this child's.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        proc = subprocess.run(argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{shlex.join(argv)} did not finish within {RUN_TIMEOUT_S:.0f} s") from exc
    except OSError as exc:
        raise BenchError(f"cannot start {shlex.join(argv)}: {exc}") from exc
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return RunResult(wall_s=wall, cpu_s=cpu, returncode=proc.returncode,
                     stdout=proc.stdout.decode("utf-8", "replace"),
                     stderr=proc.stderr.decode("utf-8", "replace"))


def checksum_line(name: str, stdout: str) -> str | None:
    """The program's checksum line: the last line starting with its name."""
    found = None
    for line in stdout.splitlines():
        if line.startswith(name + " "):
            found = line.rstrip()
    return found


def normalized(stdout: str) -> str:
    return "\n".join(line.rstrip() for line in stdout.rstrip().splitlines())


def check_run(name: str, cfg: Config, argv: list[str], res: RunResult,
              expected: str | None) -> str:
    """Fail loudly on a non-zero exit or a missing/different checksum line."""
    if res.returncode != 0:
        raise BenchError(
            f"[{name}] {cfg.label} exited with status {res.returncode}\n"
            f"  command: {shlex.join(argv)}\n"
            f"  stdout: {res.stdout.strip()[:2000]!r}\n"
            f"  stderr: {res.stderr.strip()[:2000]!r}")
    line = checksum_line(name, res.stdout)
    if line is None:
        raise BenchError(
            f"[{name}] {cfg.label} printed no checksum line starting with {name!r}\n"
            f"  command: {shlex.join(argv)}\n"
            f"  stdout: {res.stdout.strip()[:2000]!r}\n"
            f"  stderr: {res.stderr.strip()[:2000]!r}")
    if expected is not None and line != expected:
        raise BenchError(
            f"CHECKSUM MISMATCH in {name}:\n"
            f"  lua5.4      : {expected}\n"
            f"  {cfg.label:<12}: {line}\n"
            f"  command: {shlex.join(argv)}")
    return line


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------

def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f}"


def fmt_ratio(r: float) -> str:
    return f"{r:.2f}x"


def geomean(values: list[float]) -> float:
    good = [v for v in values if v > 0 and math.isfinite(v)]
    if not good:
        return float("nan")
    return math.exp(sum(math.log(v) for v in good) / len(good))


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def table(names: list[str], configs: list[Config],
          samples: dict[tuple[str, str], list[float]]) -> list[str]:
    base, others = configs[0], configs[1:]
    out: list[str] = []
    header = ["Benchmark", f"{base.label} (s)"]
    for c in others:
        header += [f"{c.label} (s)", f"{c.label}/{base.label}"]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
    ratios: dict[str, list[float]] = {c.key: [] for c in others}
    for name in names:
        b = statistics.median(samples[(name, base.key)])
        row = [name, fmt_s(b)]
        for c in others:
            m = statistics.median(samples[(name, c.key)])
            r = m / b if b > 0 else float("nan")
            ratios[c.key].append(r)
            row += [fmt_s(m), fmt_ratio(r)]
        out.append("| " + " | ".join(row) + " |")
    if len(names) > 1:
        row = ["**geometric mean**", ""]
        for c in others:
            row += ["", f"**{fmt_ratio(geomean(ratios[c.key]))}**"]
        out.append("| " + " | ".join(row) + " |")
    return out


def report(names: list[str], configs: list[Config],
           walls: dict[tuple[str, str], list[float]],
           cpus: dict[tuple[str, str], list[float]],
           reps: int, versions: dict[str, str], command: str) -> str:
    base = configs[0]
    out: list[str] = []
    out.append("Median wall-clock time:")
    out.append("")
    out += table(names, configs, walls)
    out.append("")
    out.append("Median CPU time (user + system, all threads; less sensitive to "
               "other load on the machine):")
    out.append("")
    out += table(names, configs, cpus)
    keys = {c.key for c in configs}
    if {"mji", "luah"} <= keys:
        pair = [c for c in configs if c.key == "luah"] + [c for c in configs if c.key == "mji"]
        out.append("")
        out.append("Instruction budget against the reference's own count hook (median CPU "
                   "time):")
        out.append("")
        out += table(names, pair, cpus)
    out.append("")
    out.append(f"Medians of {reps} interleaved runs per configuration "
               f"(after one untimed warm-up/verification run); ratios > 1 mean moonjail "
               f"is slower. Checksum lines were identical across all configurations.")
    out.append("")
    out.append("Configurations (FILE is `bench/lua/NAME.lua`, run from the repo root):")
    out.append("")
    for c in configs:
        out.append(f"- {c.label}: `{c.template()}`")
    out.append("")
    out.append(f"- {base.label} version: {versions.get('lua', 'unknown')}")
    out.append(f"- moonjail version: {versions.get('moonjail', 'unknown')}")
    out.append(f"- machine: {cpu_model()}, {os.cpu_count()} cores, "
               f"{platform.system()} {platform.release()}, "
               f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}, "
               f"load average at start {versions.get('load', 'unknown')}")
    out.append("")
    out.append("Command line used:")
    out.append("")
    out.append("```")
    out.append(command)
    out.append("```")
    return "\n".join(out)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def available_programs() -> list[Path]:
    return sorted(LUA_DIR.glob("*.lua"))


def select_programs(only: list[str] | None) -> list[Path]:
    programs = available_programs()
    if not programs:
        raise BenchError(f"no *.lua programs in {LUA_DIR}")
    if not only:
        return programs
    by_name = {p.stem: p for p in programs}
    wanted: list[str] = []
    for item in only:
        for part in item.split(","):
            part = part.strip()
            if part:
                wanted.append(Path(part).stem)  # accept fib, fib.lua, bench/lua/fib.lua
    unknown = [w for w in wanted if w not in by_name]
    if unknown:
        raise BenchError(f"unknown benchmark(s): {', '.join(unknown)}; "
                         f"available: {', '.join(sorted(by_name))}")
    return [by_name[w] for w in dict.fromkeys(wanted)]


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="compare.py",
        description="Benchmark moonjail against lua5.4 on bench/lua/*.lua and print "
                    "a Markdown table (stdout); progress goes to stderr.")
    ap.add_argument("--moonjail", metavar="PATH",
                    help=f"moonjail binary (default: {DEFAULT_MOONJAIL}, built with "
                         "`cargo build --release -p moonjail-cli` if missing)")
    ap.add_argument("--lua", metavar="PATH",
                    help="reference interpreter (default: lua5.4 on PATH, installed "
                         "with apt-get when missing and running as root)")
    ap.add_argument("--only", metavar="NAME", action="append",
                    help="run only this benchmark (repeatable, or comma-separated)")
    ap.add_argument("--reps", metavar="N", type=int, default=5,
                    help="timed repetitions per configuration (default: 5)")
    ap.add_argument("--build", action="store_true",
                    help="always run `cargo build --release -p moonjail-cli` first")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument("--diagnostic", action="store_true",
                    help="also measure moonjail --diagnostic (diagnostic mode's overhead)")
    ap.add_argument("--hook", action="store_true",
                    help="also measure the reference interpreter under its own count hook "
                         "(the fair baseline for moonjail+instr)")
    args = ap.parse_args(argv)
    if args.reps < 1:
        ap.error("--reps must be at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.list:
        for p in available_programs():
            print(p.stem)
        return 0
    command = shlex.join(["python3", rel(Path(__file__)), *argv])

    programs = select_programs(args.only)
    lua = find_lua(args.lua)
    moonjail = find_moonjail(args.moonjail, args.build)
    versions = {"lua": version_of([lua, "-v"]),
                "moonjail": version_of([moonjail, "--version"])}

    load = load_average()
    versions["load"] = "unknown" if load is None else f"{load:.2f}"
    lua_label = Path(args.lua).name if args.lua else "lua5.4"
    configs = [
        Config("lua", lua_label, [lua]),
        # The default limits (64 MiB, 1 MiB output) with a deadline armed far away: the
        # watchdog path is exercised, but a loaded machine cannot turn a slow run into a
        # timeout failure.
        Config("mj", "moonjail", [moonjail, "run"], ["--timeout", DEADLINE]),
        Config("mji", "moonjail+instr", [moonjail, "run"],
               ["--timeout", DEADLINE, "--instructions", INSTRUCTION_BUDGET]),
    ]
    if args.diagnostic:
        configs.append(Config("mjd", "moonjail+diag", [moonjail, "run"],
                              ["--timeout", DEADLINE, "--diagnostic"]))
    if args.hook:
        # The fair reference for an instruction budget: the same interpreter counting
        # instructions itself, as a pure-Lua sandbox does (a count hook every 256
        # instructions that adds up and raises past the budget).
        configs.append(Config("luah", f"{lua_label}+hook", [lua, "-e", LUA_COUNT_HOOK]))
    names = [p.stem for p in programs]
    if load is not None and load > 0.5:
        log(f"warning: 1-minute load average is {load:.2f}; other processes will make "
            "the timings noisy (run on an idle machine)")
    log(f"benchmarks: {', '.join(names)}")
    for c in configs:
        log(f"  {c.label:<15} {c.template()}")

    # Pass 0: untimed warm-up that verifies exit status and checksums.
    expected: dict[str, str] = {}
    for prog in programs:
        name = prog.stem
        for c in configs:
            cmd = c.argv(prog)
            res = run_once(cmd)
            line = check_run(name, c, cmd, res, expected.get(name))
            expected.setdefault(name, line)
            if normalized(res.stdout) != line:
                log(f"  note: [{name}] {c.label} printed more than the checksum line: "
                    f"{res.stdout.strip()[:300]!r}")
        log(f"verified {name}: {expected[name]}")

    walls: dict[tuple[str, str], list[float]] = {(n, c.key): [] for n in names for c in configs}
    cpus: dict[tuple[str, str], list[float]] = {(n, c.key): [] for n in names for c in configs}
    for rep in range(args.reps):
        for prog in programs:
            name = prog.stem
            # Rotate the configuration order each repetition so that none of
            # them always runs first (cache/frequency effects).
            shift = rep % len(configs)
            for c in configs[shift:] + configs[:shift]:
                cmd = c.argv(prog)
                res = run_once(cmd)
                check_run(name, c, cmd, res, expected[name])
                walls[(name, c.key)].append(res.wall_s)
                cpus[(name, c.key)].append(res.cpu_s)
            times = "  ".join(f"{c.label}={walls[(name, c.key)][-1]:.3f}s" for c in configs)
            log(f"rep {rep + 1}/{args.reps} {name:<16} {times}")

    print(report(names, configs, walls, cpus, args.reps, versions, command))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as exc:
        log(f"compare.py: error: {exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        log("compare.py: interrupted")
        sys.exit(130)
