"""Resume and override figures (issue 16): overrides on a plain config, and `lynx retry` finding its run at the
end of a 100,000-line history, each against the same run asked for without them."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Callable

from harness import TRIVIAL_STEP, Bench, BenchError, Row, fmt_diff_ms, fmt_mib, fmt_ms, median, run_chain, write

FAILING_ONCE = """\
import os, sys
sys.exit(0 if os.path.exists("fixed") else 1)
"""


def figure_overrides(bench: Bench) -> list[Row]:
    """``lynx start -ni vars.x=2 +steps.1.timeout=60`` vs the same config run plainly (1 trivial step)."""
    cwd = bench.folder("overrides")
    write(cwd, "step.py", TRIVIAL_STEP)
    write(cwd, "one.yaml", "vars: {x: 1}\nsteps:\n  - script: step.py\n")
    a, b = bench.interleave(
        lambda: bench.run(
            bench.lynx_argv("start", "-ni", "-cf", "one.yaml", "vars.x=2", "+steps.1.timeout=60"), cwd, "overrides"
        ),
        lambda: bench.run(bench.lynx_argv("start", "-ni", "-cf", "one.yaml"), cwd, "plain"),
    )
    la, lb = median([f.wall for f in a]), median([f.wall for f in b])
    return [
        Row(
            "overrides: `lynx start -ni` with 2 overrides vs without (1 step)",
            fmt_ms(la),
            fmt_ms(lb),
            fmt_diff_ms(la - lb),
            "<= +5 ms (noise)",
            la - lb <= 0.005,
            samples={"lynx_s": [f.wall for f in a], "baseline_s": [f.wall for f in b]},
            note="overrides are applied to the YAML document by Lynx itself: no OmegaConf for a config without ${",
        )
    ]


def figure_retry(bench: Bench) -> list[Row]:
    """``lynx retry -ni RUN_ID`` of a failed run, 100,000 runs in the history, vs ``lynx start -ni --from 2``."""
    bench.require_command("retry")
    cwd = bench.folder("retry")
    write(cwd, "step.py", TRIVIAL_STEP)
    write(cwd, "flaky.py", FAILING_ONCE)
    write(cwd, "two.yaml", "steps:\n  - script: step.py\n  - script: flaky.py\n")
    history = cwd / ".lynx" / "runs.jsonl"
    # One failing run, one passing run; then the passing one copied 100,000 times before the failing one.
    failing = subprocess.run(
        bench.lynx_argv("start", "-ni", "-cf", "two.yaml"), cwd=cwd, env=bench.env, stdin=subprocess.DEVNULL,
        capture_output=True, timeout=bench.timeout,
    )  # fmt: skip
    if failing.returncode != 1:
        raise BenchError(f"the failing run exited with {failing.returncode}, not 1")
    failed = history.read_text(encoding="utf-8").splitlines()[-1]
    (cwd / "fixed").touch()
    bench.run(bench.lynx_argv("start", "-ni", "-cf", "two.yaml"), cwd, "a passing run")
    passing = json.loads(history.read_text(encoding="utf-8").splitlines()[-1])
    # As much history as the rotation ever keeps (2 x 8 MiB), in one file.
    line = json.dumps(passing, separators=(",", ":"))
    count = 2_000 if bench.quick else (16 * 1024 * 1024) // (len(line) + 1)
    with open(history, "w", encoding="utf-8") as handle:
        for number in range(count):
            passing["run_id"] = f"20261101T000000-{number:012x}"
            handle.write(json.dumps(passing, separators=(",", ":")) + "\n")
        handle.write(failed + "\n")
    size = history.stat().st_size
    failed_id = json.loads(failed)["run_id"]

    # Never rotated (a history this long would be), and the new run's line taken away again after each run.
    env = {**bench.env, "LYNX_HISTORY_MAX_BYTES": "0"}

    def timed(*args: str) -> float:
        finished = run_chain([bench.lynx_argv(*args)], cwd=cwd, env=env, timeout=bench.timeout, what=f"lynx {args[0]}")
        os.truncate(history, size)
        return finished.wall

    rows = []
    for label, retry in (("", ("retry", "-ni")), (" RUN_ID", ("retry", "-ni", failed_id))):
        a, b = bench.interleave(
            lambda: timed(*retry),  # noqa: B023 - called at once
            lambda: timed("start", "-ni", "-cf", "two.yaml", "--from", "2"),
        )
        la, lb = median(a), median(b)
        rows.append(
            Row(
                f"retry: `lynx retry -ni{label}` ({fmt_mib(size)} of history) vs `lynx start -ni --from 2`",
                fmt_ms(la),
                fmt_ms(lb),
                fmt_diff_ms(la - lb),
                "<= +20 ms",
                la - lb <= 0.020,
                samples={"lynx_s": a, "baseline_s": b},
            )
        )
    rows[-1].note = (
        "the history as large as its rotation keeps it; without an id, retry stops at the newest failed run; with "
        "one, it reads the whole history backwards (passing over blocks without the id) to know the id is unique"
    )
    return rows


FIGURES: dict[str, Callable[[Bench], list[Row]]] = {
    "overrides": figure_overrides,
    "retry": figure_retry,
}
