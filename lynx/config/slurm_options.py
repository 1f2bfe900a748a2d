"""Which srun options a step's ``slurm:`` key may set: a fact about the config, checked before anything runs."""

from __future__ import annotations

# srun's long options (Slurm 22.05 and later) that a step's ``slurm:`` mapping may set.
SRUN_OPTIONS = (
    "account", "acctg-freq", "batch", "bb", "bbf", "bcast", "bcast-exclude", "begin", "cluster-constraint",
    "clusters", "compress", "constraint", "container", "contiguous", "core-spec", "cores-per-socket",
    "cpu-bind", "cpu-freq", "cpus-per-gpu", "cpus-per-task", "deadline", "delay-boot", "dependency",
    "distribution", "epilog", "exact", "exclude", "exclusive", "extra-node-info", "gpu-bind",
    "gpu-freq", "gpus", "gpus-per-node", "gpus-per-socket", "gpus-per-task", "gres", "gres-flags",
    "het-group", "hint", "hold", "immediate", "kill-on-bad-exit", "label", "licenses", "mail-type",
    "mail-user", "mcs-label", "mem", "mem-bind", "mem-per-cpu", "mem-per-gpu", "mincpus", "mpi",
    "network", "nice", "no-kill", "nodefile", "nodelist", "nodes", "ntasks", "ntasks-per-core",
    "ntasks-per-gpu", "ntasks-per-node", "ntasks-per-socket", "overcommit", "overlap", "oversubscribe",
    "partition", "power", "prefer", "priority", "profile", "prolog", "propagate", "qos", "quiet",
    "reboot", "relative", "reservation", "resv-ports", "send-libs", "signal", "slurmd-debug",
    "sockets-per-node", "spread-job", "switches", "task-epilog", "task-prolog", "thread-spec",
    "threads", "threads-per-core", "time", "time-min", "tmp", "tres-per-task", "unbuffered",
    "use-min-nodes", "verbose", "wait", "wckey", "x11",
)  # fmt: skip
# srun options Lynx sets itself (or that would take the job's output or input away from Lynx).
RESERVED_OPTIONS = {
    "job-name": "Lynx names the job lynx:<pipeline>:<step>",
    "chdir": "use the step's 'cwd'",
    "export": "Lynx passes its environment and the step's 'env' (--export=ALL)",
    "input": "a SLURM step reads no input",
    "output": "the job's output streams back to Lynx",
    "error": "the job's output streams back to Lynx",
    "comment": "Lynx uses it to find the job",
    "pty": "the job's output streams back to Lynx",
    "jobid": "each step is a job of its own",
    "multi-prog": "a step runs one program",
    "test-only": "'lynx validate' asks SLURM whether it would accept the job",
}


def option_problem(option: str) -> str | None:
    """Why ``option`` cannot be in a step's ``slurm:`` mapping, or None if it can."""
    if option in RESERVED_OPTIONS:
        return f"'{option}' is set by Lynx ({RESERVED_OPTIONS[option]})"
    if option in SRUN_OPTIONS:
        return None
    import difflib

    close = difflib.get_close_matches(option.lstrip("-"), SRUN_OPTIONS, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else " (see 'srun --help'; write long options without dashes)"
    return f"unknown srun option '{option}'{hint}"
