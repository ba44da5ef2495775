"""``python scripts/sweep.py``: run, follow, resume and tabulate whole benchmark tables.

    python scripts/sweep.py --protocol base2new --trainers MMLoP --seeds 1 2 3 --gpus 0,1,2,3
    python scripts/sweep.py sweep/examples/base2new.yaml --backend slurm --partition gpu --max-running 8
    python scripts/sweep.py sweep/examples/base2new.yaml --dry-run        # the jobs and their exact commands
    python scripts/sweep.py sweep/examples/base2new.yaml --status         # where a sweep stands (also on Slurm)
    python scripts/sweep.py --table output --compare ../PromptSRC/output:upstream

Trailing ``KEY VALUE`` pairs after ``--`` go to every train.py command (as the scripts' trailing
arguments). Exit code: 0 when every job of the sweep has its results.json, or (Slurm, --no-follow,
--status) when every unfinished job is queued or running; 1 when some failed, are blocked or
inconsistent, or were left unfinished with nothing to run them; 2 for a bad command line or sweep
file (before anything is submitted); 130 when interrupted.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from typing import Optional, Sequence

from .spec import PROTOCOLS, REPO_ROOT, SweepSpec, load_sweep_file, missing_data_warning, parse_trainer, resolve_paths
from .state import STATE_DIR, STATE_FILE, read_json, state_dir, unwritable

BACKENDS = ("local", "submitit-local", "slurm")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/sweep.py", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("sweep_file", nargs="?", help="YAML sweep file (flags given here override it)")
    what = p.add_argument_group("what to run")
    what.add_argument("--protocol", "--protocols", nargs="+", dest="protocols", choices=PROTOCOLS,
                      help="base2new, xd (cross-dataset), dg (domain generalization), few_shot, zeroshot")
    what.add_argument("--trainers", nargs="+", metavar="T[:CFG]",
                      help="trainers, each with its default config for the protocol or CFG (default MMLoP; "
                           "zeroshot: the trainers that do not train)")
    what.add_argument("--datasets", nargs="+", help="dataset config stems, or 'all' (the protocol's datasets)")
    what.add_argument("--seeds", nargs="+", type=int, help="default 1 2 3")
    what.add_argument("--shots", nargs="+", type=int, help="default 16 (few_shot: 1 2 4 8 16)")
    what.add_argument("--source", help="xd/dg training dataset (default imagenet)")
    what.add_argument("--opts", nargs="+", default=None, metavar="KEY VALUE",
                      help="KEY VALUE pairs for every job (or put them after --)")
    what.add_argument("--data", help="dataset root (default ./data, as the scripts' DATA)")
    what.add_argument("--output", help="output root (default output, as the scripts' OUTPUT)")
    what.add_argument("--name", help="sweep name (its state: <output>/.sweep/<name>/; default from the "
                                     "sweep file's name or the protocols and trainers)")
    where = p.add_argument_group("where it runs")
    where.add_argument("--backend", choices=BACKENDS, help="default local")
    where.add_argument("--workers", type=int, help="local: jobs at once on CPU (default 1)")
    where.add_argument("--gpus", help="local: GPU ids, one job per GPU (e.g. 0,1,2,3; K with --jobs-per-gpu K)")
    where.add_argument("--jobs-per-gpu", type=int, metavar="K",
                       help="K jobs share each GPU (default 1): local backends run K at once on each of --gpus; "
                            "slurm packs K jobs into each allocation. See docs/SWEEPS.md")
    where.add_argument("--gpu-mem-per-job", type=float, metavar="GIB",
                       help="GPU memory one job needs (GiB): K x this must fit in a GPU, else nothing runs")
    where.add_argument("--gpu-memory", type=float, metavar="GIB",
                       help="one GPU's memory (GiB) for that check (default: as CUDA reports it; give it for slurm)")
    where.add_argument("--python", help="interpreter of the jobs (default $PYTHON, else this one)")
    where.add_argument("--partition", help="slurm partition")
    where.add_argument("--gpus-per-job", type=int, help="slurm: GPUs per job (default 1; 0 for a CPU partition: "
                                                        "no GPU request at all)")
    where.add_argument("--cpus-per-job", type=int, help="slurm: CPUs per job")
    where.add_argument("--mem-gb", type=float, help="slurm: memory per job in GB")
    where.add_argument("--time", help="slurm: time limit per job (HH:MM:SS, D-HH:MM or minutes; default 24:00:00)")
    where.add_argument("--account", help="slurm account")
    where.add_argument("--qos", help="slurm QOS")
    where.add_argument("--max-running", type=int,
                       help="slurm: jobs of the whole sweep running at once, reruns included (default: no limit)")
    where.add_argument("--signal-delay", type=int, metavar="SECONDS",
                       help="slurm: seconds before the time limit at which a job is checkpointed and requeued "
                            "(default 120; --time must be at least twice this)")
    where.add_argument("--max-requeues", type=int, help="slurm: requeues after a time-out (default 3; "
                                                        "preemptions are always requeued)")
    where.add_argument("--slurm-param", action="append", default=[], metavar="KEY=VALUE",
                       help="any other sbatch option, e.g. constraint=a100 (repeatable)")
    where.add_argument("--no-follow", action="store_true", help="slurm: submit and exit (see --status)")
    mode = p.add_argument_group("other modes")
    mode.add_argument("--dry-run", action="store_true", help="print the jobs, their state and exact commands")
    mode.add_argument("--status", action="store_true", help="where a sweep started earlier stands (from disk)")
    mode.add_argument("--table", nargs="?", const="", metavar="ROOT",
                      help="print the tables of an output tree (default: --output) and exit")
    mode.add_argument("--compare", action="append", default=[], metavar="ROOT[:LABEL]",
                      help="put the same tables of another output tree beside ours (repeatable); 'published' "
                           "or 'published:<paper>' (promptsrc, maple, mmlop): the papers' published numbers")
    mode.add_argument("--report", nargs="?", const="", metavar="ROOT",
                      help="write a reproduction report of ROOT (default: --table's or --output) against the "
                           "published tables: REPORT.md and PNG plots in <ROOT>/.sweep/report")
    mode.add_argument("--table-dir", help="where the CSV and JSON tables go (default <output>/.sweep/<name>/tables "
                                          "after a sweep; --table writes them only here, never into the tree "
                                          "it reads)")
    mode.add_argument("--no-tables", action="store_true", help="no tables at the end of a sweep")
    mode.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def _split_trailing(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def spec_from_args(args: argparse.Namespace, trailing: Sequence[str]) -> tuple[SweepSpec, dict]:
    if args.sweep_file:
        spec, backend = load_sweep_file(args.sweep_file)
    else:
        spec, backend = SweepSpec(), {}
    changes: dict = {}
    if args.protocols:
        changes["protocols"] = tuple(dict.fromkeys(args.protocols))
    if args.trainers:
        changes["trainers"] = tuple(parse_trainer(t) for t in args.trainers)
    elif not args.sweep_file and args.protocols and set(args.protocols) == {"zeroshot"}:
        from .jobs import zeroshot_trainers

        changes["trainers"] = tuple(parse_trainer(name) for name in zeroshot_trainers())
    if args.datasets:
        changes["datasets"] = tuple(args.datasets)
    if args.seeds:
        changes["seeds"] = tuple(args.seeds)
    if args.shots:
        changes["shots"] = tuple(args.shots)
    for key in ("source", "data", "output", "name"):
        if getattr(args, key):
            changes[key] = getattr(args, key)
    opts = tuple(args.opts or ()) + tuple(trailing)
    if opts:
        changes["opts"] = tuple(spec.opts) + opts
    return replace(spec, **changes), backend


def _backend_options(args: argparse.Namespace, file_backend: dict) -> dict:
    opts = dict(file_backend)
    flags = {"backend": "name", "workers": "workers", "gpus": "gpus", "partition": "partition",
             "gpus_per_job": "gpus_per_job", "cpus_per_job": "cpus_per_job", "mem_gb": "mem_gb", "time": "time",
             "account": "account", "qos": "qos", "max_running": "max_running", "max_requeues": "max_requeues",
             "python": "python", "signal_delay": "signal_delay_s", "jobs_per_gpu": "jobs_per_gpu",
             "gpu_mem_per_job": "gpu_mem_per_job", "gpu_memory": "gpu_memory"}
    for flag, key in flags.items():
        value = getattr(args, flag)
        if value is not None:
            opts[key] = value
    params = dict(opts.get("slurm_params") or {})
    for item in args.slurm_param:
        if "=" not in item:
            raise ValueError(f"--slurm-param {item!r}: use KEY=VALUE")
        k, v = item.split("=", 1)
        params[k.strip()] = v.strip()
    opts["slurm_params"] = params
    if args.no_follow:
        opts["follow"] = False
    known = {"name", "workers", "gpus", "partition", "gpus_per_job", "cpus_per_job", "mem_gb", "time", "account",
             "qos", "max_running", "max_requeues", "python", "slurm_params", "follow", "setup", "signal_delay_s",
             "threads_per_job", "poll_s", "jobs_per_gpu", "gpu_mem_per_job", "gpu_memory"}
    unknown = set(opts) - known
    if unknown:
        raise ValueError(f"unknown backend settings {sorted(unknown)} (known: {sorted(known)})")
    return opts


def _int_or(value, default: int) -> int:
    """A setting's number, ``default`` when it is not given (0 is a value: no GPU, no requeue)."""
    return default if value is None else int(value)


def make_backend(opts: dict, sdir: str):
    from .backends import LocalBackend, SlurmBackend, SubmititLocalBackend

    kind = opts.get("name") or "local"
    gpus = opts.get("gpus")
    if isinstance(gpus, str):
        gpus = [g for g in gpus.replace(" ", "").split(",") if g]
    elif isinstance(gpus, (list, tuple)):
        gpus = [str(g) for g in gpus]
    elif isinstance(gpus, int):
        gpus = [str(gpus)]
    k = opts.get("jobs_per_gpu", 1)
    if kind == "local":
        return LocalBackend(opts.get("workers"), gpus, opts.get("threads_per_job"), k)
    if kind == "submitit-local":
        try:
            return SubmititLocalBackend(os.path.join(sdir, "submitit"), opts.get("workers"), gpus,
                                        max_requeues=_int_or(opts.get("max_requeues"), 3),
                                        threads_per_job=opts.get("threads_per_job"), jobs_per_gpu=k)
        except ImportError:
            raise ValueError("the submitit-local backend needs submitit: pip install -e \".[slurm]\"") from None
    if kind == "slurm":
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise ValueError("the slurm backend needs submitit: pip install -e \".[slurm]\"") from None
        return SlurmBackend(os.path.join(sdir, "submitit"), partition=opts.get("partition"),
                            gpus_per_job=_int_or(opts.get("gpus_per_job"), 1),
                            cpus_per_job=opts.get("cpus_per_job"),
                            mem_gb=opts.get("mem_gb"), time=opts.get("time") or "24:00:00",
                            account=opts.get("account"), qos=opts.get("qos"), max_running=opts.get("max_running"),
                            extra=opts.get("slurm_params"), max_requeues=_int_or(opts.get("max_requeues"), 3),
                            signal_delay_s=int(opts.get("signal_delay_s") or 120), setup=opts.get("setup"),
                            jobs_per_gpu=k)
    raise ValueError(f"unknown backend {kind!r} (one of {', '.join(BACKENDS)})")


def _selection(plan) -> object:
    from .tables import Selection

    spec = plan.spec
    methods = sorted({(j.trainer, j.folder) for j in plan.jobs})
    protocols = set(spec.protocols)
    datasets = {p: list(spec.datasets_for(p)) for p in protocols}
    shots = {p: list(spec.shots_for(p)) for p in protocols}
    labels = {(j.trainer, j.folder): j.label for j in plan.jobs}
    return Selection(protocols=sorted(protocols), methods=methods, datasets=datasets, shots=shots,
                     source=spec.source if protocols & {"xd", "dg"} else None, labels=labels, seeds=list(spec.seeds))


def print_tables(root: str, compare: Sequence[str], table_dir: Optional[str], selection=None,
                 stream=None, report_dir: Optional[str] = None) -> int:
    stream = stream or sys.stdout
    from .published.compare import split_compare
    from .tables import Tree, build_tables, parse_compare, to_markdown, write_tables

    if not os.path.isdir(root):
        print(f"error: {root} is not a folder", file=sys.stderr)
        return 2
    try:
        compare, papers = split_compare(compare)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    others = []
    for item in compare:
        path, label = parse_compare(item)
        if not os.path.isdir(path):
            print(f"error: --compare {item}: {path} is not a folder", file=sys.stderr)
            return 2
        others.append(Tree(path, label))
    tables = build_tables(Tree(root, "ours"), others, selection)
    if not tables:
        print(f"No results found under {root}.", file=stream)
        return 1
    for t in tables:
        print(to_markdown(t) + "\n", file=stream)
    if papers is not None or report_dir is not None:
        from .published.report import publish

        publish(root, tables, papers, report_dir, stream, "python scripts/sweep.py " + " ".join(sys.argv[1:]))
    if table_dir:
        try:
            paths = write_tables(tables, table_dir)
            print("Tables written: " + ", ".join(paths), file=stream)
        except OSError as exc:
            print(f"warning: tables not written to {table_dir}: {exc}", file=sys.stderr)
    return 0


def _dry_run(plan, sdir: str, python: str, stream=None) -> int:
    stream = stream or sys.stdout
    from .jobs import script_equivalent
    from .state import assess

    states = assess(plan.jobs, sdir)
    print(f"Sweep {os.path.basename(sdir)}: {len(plan.jobs)} jobs; commands run in {REPO_ROOT}", file=stream)
    print(f"State: {sdir}", file=stream)
    for i, job in enumerate(plan.jobs, 1):
        a = states[job.id]
        deps = f"  after: {', '.join(job.deps)}" if job.deps else ""
        print(f"[{i}/{len(plan.jobs)}] {job.describe()}  [{a.state}{': ' + a.reason if a.reason else ''}]", file=stream)
        print(f"    {job.shell(python)}", file=stream)
        if job.folder == job.cfg:
            print(f"    # = {script_equivalent(job, plan.paths.data, plan.paths.output)}{deps}", file=stream)
        elif deps:
            print(f"    #{deps}", file=stream)
    return 0


def _status(root_abs: str, names: Sequence[str], stream=None) -> int:
    stream = stream or sys.stdout
    from .backends import SlurmBackend
    from .engine import SweepResult, durations, estimate_eta, fmt_seconds, observe, report
    from .jobs import Job
    from .state import RunRecord, pid_alive, run_record_path

    code = 0
    if not names:
        print(f"No sweep under {os.path.join(root_abs, STATE_DIR)}.", file=stream)
        return 1
    for name in names:
        sdir = state_dir(root_abs, name)
        state = read_json(os.path.join(sdir, STATE_FILE))
        if not state:
            print(f"No sweep named {name} under {root_abs} ({os.path.join(sdir, STATE_FILE)} not found).", file=stream)
            code = 1
            continue
        jobs = [Job.from_dict(d) for d in state.get("jobs", [])]
        backend = None
        if (state.get("backend") or {}).get("name") == "slurm":
            backend = SlurmBackend(state["backend"].get("folder") or os.path.join(sdir, "submitit"),
                                   max_requeues=state["backend"].get("max_requeues", 3))
        observed = observe(jobs, sdir, state.get("submissions") or {}, backend)
        for note in getattr(backend, "notes", ()):
            print(f"note: {note}", file=stream)
        driver = state.get("driver") or {}
        alive = driver.get("host") == os.uname().nodename and pid_alive(driver.get("pid"))
        result = SweepResult(jobs, {k: v[0] for k, v in observed.items()}, {k: v[1] for k, v in observed.items()},
                             driver_alive=alive)
        backend_state = state.get("backend") or {}
        par = int(backend_state.get("parallelism") or len(backend_state.get("slots") or [])
                  or backend_state.get("max_running") or 1)
        k = int(backend_state.get("jobs_per_gpu") or 1)
        counts = result.counts()
        eta = ""
        if counts.get("pending") or counts.get("running") or counts.get("queued"):
            since = {j.id: (RunRecord(run_record_path(sdir, j), j.id).last or {}).get("start") or time.time()
                     for j in jobs if result.statuses[j.id] == "running"}
            eta = f"; ETA {fmt_seconds(estimate_eta(jobs, result.statuses, durations(jobs, sdir), since, max(1, par)))}"
        packed = "" if k == 1 else (f", {k} jobs per allocation" if backend_state.get("name") == "slurm"
                                    else f", {k} jobs per GPU, {par} at once")
        print(f"Sweep {name} ({backend_state.get('name', '?')} backend{packed}; driver "
              f"{'running, PID ' + str(driver.get('pid')) if alive else 'not running'}{eta})", file=stream)
        running = [j for j in jobs if result.statuses[j.id] in ("running", "queued")]
        for j in running[:20]:
            print(f"  {result.statuses[j.id]:7s} {j.id} {result.details.get(j.id, '')}", file=stream)
        report(result, sdir, stream)
        code = max(code, result.exit_code)
    return code


def _status_command(args: argparse.Namespace, name: str) -> str:
    """The ``--status`` command line of this sweep, to copy."""
    import shlex

    parts = ["python", "scripts/sweep.py", "--status", "--name", name]
    if args.output:
        parts += ["--output", args.output]
    return shlex.join(parts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    head, trailing = _split_trailing(argv)
    parser = build_parser()
    args = parser.parse_args(head)
    out = sys.stdout

    # --table over any tree: no planning, no torch.
    if args.table is not None or args.report is not None:
        # ROOT (or --output) relative to the current folder; the scripts' default otherwise.
        given_root = args.table or args.report or args.output
        root = os.path.abspath(given_root) if given_root else os.path.join(REPO_ROOT, "output")
        # The tree may be a colleague's or upstream's: the tables are printed, and written only to --table-dir.
        report_dir = None if args.report is None else os.path.join(root, STATE_DIR, "report")
        return print_tables(root, args.compare, args.table_dir, stream=out, report_dir=report_dir)

    try:
        spec, file_backend = spec_from_args(args, trailing)
        backend_opts = _backend_options(args, file_backend)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    paths = resolve_paths(spec)
    given = bool(args.sweep_file or args.protocols or args.trainers or args.name)

    if args.status:
        if given:
            names = [spec.sweep_name()]
        else:
            base = os.path.join(paths.output_abs, STATE_DIR)
            names = sorted(n for n in (os.listdir(base) if os.path.isdir(base) else [])
                           if os.path.isfile(os.path.join(base, n, STATE_FILE)))
        return _status(paths.output_abs, names, out)

    from .jobs import plan as make_plan
    from .runner import default_python

    try:
        plan = make_plan(spec)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    name = spec.sweep_name()
    sdir = state_dir(paths.output_abs, name)
    python = backend_opts.get("python") or default_python()
    if args.dry_run:
        warning = missing_data_warning(paths)
        if warning:
            print(warning, file=sys.stderr)
        return _dry_run(plan, sdir, python, out)

    from .backends import check_gpu_memory
    from .engine import Engine, SweepBusy, report

    problem = unwritable(paths.output_abs)
    if problem:
        print(f"error: the sweep cannot write its output {paths.output_abs}: {problem}. Choose another "
              "--output (or 'output:' in the sweep file), or make it writable", file=sys.stderr)
        return 2
    try:
        backend = make_backend(backend_opts, sdir)
        memory = check_gpu_memory(backend.jobs_per_gpu, backend_opts.get("gpu_mem_per_job"),
                                  backend_opts.get("gpu_memory"), [s for s in getattr(backend, "slots", ()) if s])
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if memory:
        print(memory, file=out)
    print(f"Sweep {name}: {len(plan.jobs)} jobs on the {backend.name} backend; state in {sdir}", file=out)
    engine = Engine(plan.jobs, sdir, backend, name=name, python=python, stream=out, progress=not args.quiet,
                    poll_s=float(backend_opts.get("poll_s") or (0.5 if backend.name != "slurm" else 30.0)),
                    state={"spec": spec.to_dict(), "argv": argv}, follow=backend_opts.get("follow", True))
    try:
        result = engine.run()
    except SweepBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report(result, sdir, out)
    if result.detached and not result.interrupted:
        print(f"Submitted; this command does not follow the jobs. Where they stand: {_status_command(args, name)}",
              file=out)
    if not args.no_tables and (backend.name != "slurm" or backend_opts.get("follow", True)):
        print("", file=out)
        print_tables(paths.output_abs, args.compare, args.table_dir or os.path.join(sdir, "tables"),
                     _selection(plan), out, None if args.report is None else os.path.join(sdir, "report"))
    return result.exit_code


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:            # e.g. piped into head
        sys.stderr.close()
        sys.exit(1)
