"""``--log-file``, ``--log-level`` and rotation, seen from the outside: the screen and the files."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import clean_env, lynx_command, marker_step, ran, run_lynx, wait_for, write_config, write_script

PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - (INFO|WARNING|ERROR) - ")
DEBUG_OR_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - (DEBUG|INFO|WARNING|ERROR) - ")
OUTPUT_HEAD = "-------------------- Output --------------------"


def log_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def messages(path: Path) -> list[str]:
    """The log's lines without their timestamp and level."""
    return [PREFIX.sub("", line) for line in log_lines(path)]


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr


def printing_step(directory: Path, name: str, lines: list[str], exit_code: int = 0) -> Path:
    """A step that records itself in ran.txt, prints ``lines`` and exits with ``exit_code``."""
    return marker_step(directory, name, exit_code=exit_code, extra="; ".join(f"print({line!r})" for line in lines))


# --- what the file gets -----------------------------------------------------------------------


def test_log_file_gets_every_progress_and_output_line_with_timestamp_and_level(tmp_path: Path) -> None:
    printing_step(tmp_path, "one.py", ["alpha line", "beta line"])
    printing_step(tmp_path, "two.py", ["gamma line"], exit_code=5)
    write_config(tmp_path, "steps:\n  - script: one.py\n  - script: two.py\n")
    log = tmp_path / "lynx.log"

    result = run_lynx("start", "-ni", "-cf", "config.yaml", "-lf", str(log), cwd=tmp_path)

    assert result.returncode == 1
    assert_clean(result)
    lines = log_lines(log)
    for line in lines:
        assert PREFIX.match(line), line
    expected = [
        "Processing Step 1: one.py...",
        OUTPUT_HEAD,
        "alpha line",
        "beta line",
        "output of one.py",
        "Step 1 (one.py) completed successfully.",
        "Processing Step 2: two.py...",
        "gamma line",
        "output of two.py",
        "Step 2 (two.py) failed with exit code 5.",
    ]
    found = messages(log)
    positions = [found.index(text) for text in expected]
    assert positions == sorted(positions)
    failed = next(line for line in lines if line.endswith("Step 2 (two.py) failed with exit code 5."))
    assert " - ERROR - " in failed
    # The screen still shows everything.
    screen = result.stdout + result.stderr
    for text in expected:
        assert text in screen


def test_log_file_is_appended_to(tmp_path: Path) -> None:
    printing_step(tmp_path, "first_run.py", ["output of the first run"])
    printing_step(tmp_path, "second_run.py", ["output of the second run"])
    write_config(tmp_path, "steps:\n  - script: first_run.py\n", name="first.yaml")
    write_config(tmp_path, "steps:\n  - script: second_run.py\n", name="second.yaml")
    log = tmp_path / "lynx.log"

    first = run_lynx("start", "-ni", "-cf", "first.yaml", "-lf", str(log), cwd=tmp_path)
    second = run_lynx("start", "-ni", "-cf", "second.yaml", "-lf", str(log), cwd=tmp_path)

    assert first.returncode == 0, first.stdout + first.stderr
    assert second.returncode == 0, second.stdout + second.stderr
    found = messages(log)
    assert found.index("output of the first run") < found.index("output of the second run")
    assert found.count("Processing Step 1: first_run.py...") == 1
    assert found.count("Processing Step 1: second_run.py...") == 1
    for line in log_lines(log):
        assert PREFIX.match(line), line


# --- --log-level --------------------------------------------------------------------------------


def test_log_level_warning_hides_progress_and_output_from_the_screen_only(tmp_path: Path) -> None:
    printing_step(tmp_path, "quiet.py", ["step says hello"])
    write_config(tmp_path, "steps:\n  - script: quiet.py\n")
    log = tmp_path / "lynx.log"

    result = run_lynx("start", "-ni", "-cf", "config.yaml", "-lf", str(log), "--log-level", "WARNING", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert_clean(result)
    screen = result.stdout + result.stderr
    assert "Processing Step 1" not in screen
    assert "step says hello" not in screen
    assert "completed successfully" not in screen
    found = messages(log)
    assert "Processing Step 1: quiet.py..." in found
    assert "step says hello" in found
    assert "Step 1 (quiet.py) completed successfully." in found
    assert ran(tmp_path) == ["quiet.py"]


def test_log_level_warning_still_shows_a_failure(tmp_path: Path) -> None:
    printing_step(tmp_path, "bad.py", ["step says hello"], exit_code=3)
    write_config(tmp_path, "steps:\n  - script: bad.py\n")

    result = run_lynx("start", "-ni", "-cf", "config.yaml", "-ll", "warning", cwd=tmp_path)

    assert result.returncode == 1
    screen = result.stdout + result.stderr
    assert "Step 1 (bad.py) failed with exit code 3." in screen
    assert "Processing Step 1" not in screen


@pytest.mark.parametrize("level", ["debug", "DEBUG", "Info", "error", "critical"])
def test_log_level_is_accepted_in_any_case(tmp_path: Path, level: str) -> None:
    printing_step(tmp_path, "ok.py", ["fine"])
    write_config(tmp_path, "steps:\n  - script: ok.py\n")
    log = tmp_path / "lynx.log"

    result = run_lynx("start", "-ni", "-cf", "config.yaml", "-lf", str(log), "--log-level", level, cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert_clean(result)
    assert ran(tmp_path) == ["ok.py"]
    assert "fine" in messages(log)
    for line in log_lines(log):
        assert DEBUG_OR_PREFIX.match(line), line


def test_unknown_log_level_is_a_usage_error(tmp_path: Path) -> None:
    marker_step(tmp_path, "ok.py")
    write_config(tmp_path, "steps:\n  - script: ok.py\n")

    result = run_lynx("start", "-ni", "-cf", "config.yaml", "--log-level", "LOUD", cwd=tmp_path)

    assert result.returncode == 2
    assert_clean(result)
    assert "LOUD" in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("Error")]) == 1
    assert ran(tmp_path) == []


# --- rotation and long output --------------------------------------------------------------------


@pytest.mark.parametrize("line_length", [50, 1], ids=["50-char lines", "1-char lines"])
def test_log_rotates_at_log_size_keeping_log_backup_count_files(tmp_path: Path, line_length: int) -> None:
    count = 20_000 // (line_length + 1)
    # One write, so the lines reach Lynx together, as from any step that prints faster than Lynx reads.
    write_script(tmp_path, "chatty.py", f"import sys\nsys.stdout.write(('x' * {line_length} + '\\n') * {count})\n")
    write_config(tmp_path, "steps:\n  - script: chatty.py\n")
    log = tmp_path / "lynx.log"

    result = run_lynx("start", "-ni", "-cf", "config.yaml", "-lf", str(log), "-ls", "2000", "-lbc", "2", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert_clean(result)
    for name in ("lynx.log", "lynx.log.1", "lynx.log.2"):
        assert (tmp_path / name).exists(), name
    assert not (tmp_path / "lynx.log.3").exists()
    for name in ("lynx.log", "lynx.log.1", "lynx.log.2"):
        size = (tmp_path / name).stat().st_size
        assert size <= 2500, f"{name} is {size} bytes with --log-size 2000"
    # The newest file ends with the end of the run: its summary.
    assert messages(log)[-1].lstrip().startswith("Total ....")
    # The screen still got all of it.
    assert result.stdout.count("x" * line_length + "\n") >= count


def test_a_200_kb_line_without_newline_is_logged_whole_in_bounded_lines(tmp_path: Path) -> None:
    # 200,000 characters, no newline; a changing pattern so that any lost or repeated piece shows.
    write_script(
        tmp_path,
        "long.py",
        """
        import sys
        text = "".join(f"{i:06d}" for i in range(200_000 // 6)) + "ab"
        assert len(text) == 200_000
        sys.stdout.write(text)
        sys.stdout.flush()
        """,
    )
    write_config(tmp_path, "steps:\n  - script: long.py\n")
    log = tmp_path / "lynx.log"

    result = run_lynx("start", "-ni", "-cf", "config.yaml", "-lf", str(log), cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert_clean(result)
    expected = "".join(f"{i:06d}" for i in range(200_000 // 6)) + "ab"
    found = messages(log)
    start = found.index(OUTPUT_HEAD) + 1
    end = len(found) - 1 - found[::-1].index("-" * 48)
    pieces = found[start:end]
    assert "".join(pieces) == expected
    assert len(pieces) > 1
    assert max(len(line) for line in log_lines(log)) <= 100_000
    assert expected in result.stdout


def test_carriage_return_progress_bar_raw_on_screen_separate_lines_in_log(tmp_path: Path) -> None:
    write_script(
        tmp_path,
        "bar.py",
        """
        import sys
        for percent in (10, 50, 100):
            sys.stdout.write(f"\\rprogress {percent}%")
            sys.stdout.flush()
        sys.stdout.write("\\ndone\\n")
        """,
    )
    write_config(tmp_path, "steps:\n  - script: bar.py\n")
    log = tmp_path / "lynx.log"

    result = subprocess.run(
        [*lynx_command(), "start", "-ni", "-cf", "config.yaml", "-lf", str(log)],
        cwd=tmp_path,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert b"\rprogress 10%\rprogress 50%\rprogress 100%\ndone\n" in result.stdout
    raw = log.read_bytes()
    assert b"\r" not in raw
    found = messages(log)
    start = found.index(OUTPUT_HEAD) + 1
    bar_lines = [line for line in found[start:] if line.startswith("progress")]
    assert bar_lines == ["progress 10%", "progress 50%", "progress 100%"]
    assert "done" in found
    for line in log_lines(log):
        assert PREFIX.match(line), line


# --- a log that cannot be written ---------------------------------------------------------------


@pytest.mark.parametrize("where", ["missing directory", "a directory"])
def test_unwritable_log_path_fails_up_front(tmp_path: Path, where: str) -> None:
    marker_step(tmp_path, "ok.py")
    write_config(tmp_path, "steps:\n  - script: ok.py\n")
    if where == "missing directory":
        log_path = tmp_path / "no such dir" / "lynx.log"
    else:
        log_path = tmp_path / "logs"
        log_path.mkdir()

    result = run_lynx("start", "-ni", "-cf", "config.yaml", "-lf", str(log_path), cwd=tmp_path)

    assert result.returncode == 2
    assert_clean(result)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stdout + result.stderr
    assert str(log_path) in errors[0]
    assert "Processing Step" not in result.stdout
    assert ran(tmp_path) == []


def test_log_write_failing_mid_run_is_reported_once_and_the_run_goes_on(tmp_path: Path) -> None:
    if not (os.path.exists("/dev/full") and os.access("/dev/full", os.W_OK)):
        pytest.skip("needs a writable /dev/full")
    printing_step(tmp_path, "one.py", [f"line {i}" for i in range(50)])
    marker_step(tmp_path, "two.py")
    write_config(tmp_path, "steps:\n  - script: one.py\n  - script: two.py\n")

    result = run_lynx("start", "-ni", "-cf", "config.yaml", "--log-file", "/dev/full", "-ls", "0", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert_clean(result)
    assert ran(tmp_path) == ["one.py", "two.py"]
    assert "Step 2 (two.py) completed successfully." in result.stdout
    assert "line 49" in result.stdout
    mentions = [line for line in result.stderr.splitlines() if "/dev/full" in line or "log" in line.lower()]
    assert len(mentions) == 1, result.stderr
    assert "/dev/full" in mentions[0]


# --- regressions from review -------------------------------------------------------------------


def test_log_backup_count_0_never_rotates_and_keeps_every_line(tmp_path: Path) -> None:
    lines = [f"line {i:03d} " + "y" * 40 for i in range(100)]  # about 5 KB, 25 times --log-size
    printing_step(tmp_path, "chatty.py", lines)
    write_config(tmp_path, "steps:\n  - script: chatty.py\n")
    log = tmp_path / "lynx.log"

    result = run_lynx("start", "-ni", "-cf", "config.yaml", "-lf", str(log), "-ls", "200", "-lbc", "0", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert_clean(result)
    assert sorted(path.name for path in tmp_path.glob("lynx.log*")) == ["lynx.log"]
    logged = messages(log)
    assert [message for message in logged if message.startswith("line ")] == lines
    assert logged[-1].lstrip().startswith("Total ....")


# --- issue 7: log files (points 12-15) -----------------------------------------------------------


def output_step(directory: Path, name: str, tag: str, count: int) -> Path:
    """A step that prints ``count`` numbered lines ``<tag> <n>``, each flushed on its own."""
    return write_script(
        directory,
        name,
        f"""
        import sys
        for number in range({count}):
            sys.stdout.write("{tag} %05d " % number + "z" * 30 + "\\n")
            sys.stdout.flush()
        """,
    )


def rotated_family(directory: Path, name: str) -> list[Path]:
    return sorted(directory.glob(name + "*"))


def test_a_symlinked_log_file_is_written_through_and_never_rotated(tmp_path: Path) -> None:
    output_step(tmp_path, "chatty.py", "line", 500)  # about 20 KB: ten times --log-size
    write_config(tmp_path, "steps:\n  - script: chatty.py\n")
    (tmp_path / "elsewhere").mkdir()
    target = tmp_path / "elsewhere" / "target.log"
    target.write_text("")
    link = tmp_path / "lynx.log"
    link.symlink_to(target)

    result = run_lynx("start", "-ni", "-cf", "config.yaml", "-lf", str(link), "-ls", "2000", "-lbc", "2", cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert_clean(result)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert [path.name for path in rotated_family(tmp_path, "lynx.log")] == ["lynx.log"]
    assert [path.name for path in rotated_family(target.parent, "target.log")] == ["target.log"]
    logged = [message for message in messages(target) if message.startswith("line ")]
    assert logged == [f"line {number:05d} " + "z" * 30 for number in range(500)]


def test_a_fifo_log_file_gets_every_line_and_is_never_renamed(tmp_path: Path) -> None:
    import stat
    import threading

    output_step(tmp_path, "chatty.py", "line", 500)
    write_config(tmp_path, "steps:\n  - script: chatty.py\n")
    fifo = tmp_path / "pipe.log"
    os.mkfifo(fifo)
    received = bytearray()

    def read_fifo() -> None:
        with open(fifo, "rb") as reader:
            while chunk := reader.read(65536):
                received.extend(chunk)

    reader = threading.Thread(target=read_fifo, daemon=True)
    reader.start()
    result = run_lynx("start", "-ni", "-cf", "config.yaml", "-lf", str(fifo), "-ls", "2000", "-lbc", "2", cwd=tmp_path)
    reader.join(timeout=30)

    assert result.returncode == 0, result.stdout + result.stderr
    assert_clean(result)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert [path.name for path in rotated_family(tmp_path, "pipe.log")] == ["pipe.log"]
    logged = [PREFIX.sub("", line) for line in received.decode().splitlines()]
    assert [line for line in logged if line.startswith("line ")] == [f"line {n:05d} " + "z" * 30 for n in range(500)]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a private mount namespace")
def test_dev_null_and_dev_stdout_as_the_log_file_are_never_renamed(tmp_path: Path) -> None:
    # As root, rotating -lf /dev/null would rename the system's /dev/null. Never risk that:
    # Lynx runs in a private mount namespace whose /dev is a fresh tmpfs holding a real null
    # device and a /dev/stdout link, so a regression renames those copies only.
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a mount namespace here")
    output_step(tmp_path, "chatty.py", "line", 200)
    write_config(tmp_path, "steps:\n  - script: chatty.py\n")
    lynx = " ".join(lynx_command())
    script = f"""
        mount -t tmpfs lynx-test-dev /dev || exit 99
        mknod -m 666 /dev/null c 1 3 && ln -s /proc/self/fd/1 /dev/stdout || exit 99
        stat -c '%F %i' /dev/null /dev/stdout > before.txt
        {lynx} start -ni -cf config.yaml -lf /dev/null -ls 500 -lbc 2 > null-run.txt 2>&1; echo $? > null-rc.txt
        {lynx} start -ni -cf config.yaml -lf /dev/stdout -ls 500 -lbc 2 >> stdout-run.txt 2>&1; echo $? > stdout-rc.txt
        stat -c '%F %i' /dev/null /dev/stdout > after.txt
        ls -A /dev > dev.txt
    """
    # (>> above: the screen and the log then both append, instead of overwriting each other.)
    result = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "null-rc.txt").read_text().strip() == "0", (tmp_path / "null-run.txt").read_text()
    assert (tmp_path / "stdout-rc.txt").read_text().strip() == "0", (tmp_path / "stdout-run.txt").read_text()
    before = (tmp_path / "before.txt").read_text()
    assert before.startswith("character special file")
    assert (tmp_path / "after.txt").read_text() == before
    assert sorted((tmp_path / "dev.txt").read_text().split()) == ["null", "stdout"]
    # Through /dev/stdout, the log's lines went where standard output goes: all of them.
    through_stdout = (tmp_path / "stdout-run.txt").read_text().splitlines()
    logged = [PREFIX.sub("", line) for line in through_stdout if PREFIX.match(line)]
    assert [line for line in logged if line.startswith("line ")] == [f"line {n:05d} " + "z" * 30 for n in range(200)]


def test_two_lynx_writing_one_rotating_log_lose_no_line(tmp_path: Path) -> None:
    count = 3000
    for tag in ("first", "second"):
        output_step(tmp_path, f"{tag}.py", tag, count)
        write_config(tmp_path, f"steps:\n  - script: {tag}.py\n", name=f"{tag}.yaml")
    command = [*lynx_command(), "start", "-ni", "-lf", "shared.log", "-ls", "4000", "-lbc", "10000"]
    writers = [
        subprocess.Popen(
            [*command, "-cf", f"{tag}.yaml"],
            cwd=tmp_path,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for tag in ("first", "second")
    ]
    for writer in writers:
        _, errors = writer.communicate(timeout=120)
        assert writer.returncode == 0, errors

    family = rotated_family(tmp_path, "shared.log")
    numbers = sorted(int(path.name.rsplit(".", 1)[1]) for path in family if path.name != "shared.log")
    assert (tmp_path / "shared.log").exists()
    assert numbers == list(range(1, len(numbers) + 1)), "gaps in the rotated numbers"
    assert len(numbers) > 20
    found: list[str] = []
    for path in family:
        found += [message for message in messages(path) if message.startswith(("first ", "second "))]
    for tag in ("first", "second"):
        assert sorted(line for line in found if line.startswith(tag + " ")) == [
            f"{tag} {number:05d} " + "z" * 30 for number in range(count)
        ]
    # Each file stays within --log-size: rotation decisions saw the other writer's lines too.
    for path in family:
        assert path.stat().st_size <= 4000, f"{path.name} is {path.stat().st_size} bytes"


@pytest.mark.parametrize("slip", ["config", "script", "symlink to the config", "background"])
def test_a_log_file_naming_the_config_or_a_step_script_is_refused(lynx_dir: Path, slip: str) -> None:
    marker_step(lynx_dir, "one.py")
    config = write_config(lynx_dir, "steps:\n  - script: one.py\n")
    (lynx_dir / "link.yaml").symlink_to(config)
    before = {name: (lynx_dir / name).read_bytes() for name in ("config.yaml", "one.py")}
    log, *extra = {
        "config": ["config.yaml"],
        "script": ["one.py"],
        "symlink to the config": ["link.yaml"],
        "background": ["config.yaml", "-bg"],
    }[slip]

    result = run_lynx("start", "-ni", "-cf", "config.yaml", "-lf", log, *extra, cwd=lynx_dir)

    assert result.returncode == 2, result.stdout + result.stderr
    assert_clean(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr
    assert log in errors[0]
    assert ("config file" if slip != "script" else "script of Step 1 (one.py)") in errors[0]
    assert ran(lynx_dir) == []
    assert not (lynx_dir / ".lynx_pid.json").exists()
    assert {name: (lynx_dir / name).read_bytes() for name in before} == before


HEADER = re.compile(r"^Lynx \S+ started: PID (\d+), config (.+), mode (once|schedule|background)\.$")


def headers(path: Path) -> list[tuple[str, str]]:
    return [(match[2], match[3]) for match in map(HEADER.match, messages(path)) if match]


def test_each_start_writes_a_header_line_to_the_log_only(tmp_path: Path) -> None:
    marker_step(tmp_path, "ok.py")
    marker_step(tmp_path, "bad.py", exit_code=3)
    write_config(tmp_path, "steps:\n  - script: ok.py\n")
    write_config(tmp_path, "cron:\n  second: '*'\nsteps:\n  - script: bad.py\n", name="cron.yaml")
    log = tmp_path / "lynx.log"

    once = run_lynx("start", "-cf", "config.yaml", "-lf", str(log), cwd=tmp_path)
    scheduled = run_lynx("start", "-ni", "-cf", "cron.yaml", "-lf", str(log), cwd=tmp_path)

    assert once.returncode == 0, once.stdout + once.stderr
    assert scheduled.returncode == 1, scheduled.stdout + scheduled.stderr
    assert headers(log) == [(str(tmp_path / "config.yaml"), "once"), (str(tmp_path / "cron.yaml"), "schedule")]
    assert messages(log)[0] == HEADER.match(messages(log)[0])[0]  # the first line of a run's story
    assert "started: PID" not in once.stdout + once.stderr + scheduled.stdout + scheduled.stderr
    assert "Press Ctrl+C to stop." in scheduled.stdout


def test_dialog_answers_and_exiting_are_logged(tmp_path: Path) -> None:
    marker_step(tmp_path, "bad.py", exit_code=3)
    write_config(tmp_path, "steps:\n  - script: bad.py\n")
    log = tmp_path / "lynx.log"

    result = run_lynx("start", "-cf", "config.yaml", "-lf", str(log), input="maybe\nn\nno\n", cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    found = messages(log)
    story = [
        "Step 1 (bad.py) failed with exit code 3.",
        "Do you want to rerun this step? (y/n) maybe",
        "Do you want to rerun this step? (y/n) n",
        "Do you want to rerun the whole pipeline from the beginning? (y/n) no",
        "Exiting...",
    ]
    start = found.index(story[0])
    assert found[start : start + len(story)] == story  # (the run's summary follows)
    assert result.stdout.count("Exiting...") == 1


def test_a_background_scheduler_logs_its_header_and_no_ctrl_c_hint(lynx_dir: Path) -> None:
    marker_step(lynx_dir, "ok.py")
    write_config(lynx_dir, "cron:\n  second: '*'\nsteps:\n  - script: ok.py\n")
    log = lynx_dir / "lynx.log"

    started = run_lynx("start", "-bg", "-cf", "config.yaml", "-lf", str(log), cwd=lynx_dir)
    assert started.returncode == 0, started.stdout + started.stderr
    wait_for(lambda: log.exists() and "Next run at" in log.read_text(), timeout=60)
    stopped = run_lynx("stop", "-y", cwd=lynx_dir)

    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    found = messages(log)
    assert headers(log) == [(str(lynx_dir / "config.yaml"), "background")]
    scheduled = next(message for message in found if message.startswith("Lynx is scheduled"))
    assert "Ctrl+C" not in log.read_text()
    assert re.search(r"Stop it with 'lynx stop( \S+)?'\.$", scheduled), scheduled
