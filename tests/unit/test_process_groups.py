"""sparkflow.process: what a command leaves in its process group ends with it (a pipeline's driver JVM is such a
straggler), also when it ignores SIGTERM. Real bash and sleep processes."""

from __future__ import annotations

import subprocess

from sparkflow.process import GroupProcess, group_alive, terminate_group

# A sleep that ignores SIGTERM (an ignored signal stays ignored across exec) and one that does not, both in the
# background of a leader that ends at once; their output does not hold the leader's pipe open.
STRAGGLERS = "(trap '' TERM; exec sleep 300) >/dev/null 2>&1 & sleep 300 >/dev/null 2>&1 & echo started"


def test_end_group_ends_what_the_leader_left_in_its_group() -> None:
    process = GroupProcess(["bash", "-c", STRAGGLERS])
    lines: list[str] = []
    assert process.run(lines.append).returncode == 0 and lines == ["started"]
    assert process.pid is not None and group_alive(process.pid)
    process.end_group(wait=0.3)
    assert not group_alive(process.pid)


def test_terminate_group_waits_until_the_whole_group_is_gone() -> None:
    proc = subprocess.Popen(["bash", "-c", STRAGGLERS.replace("echo started", "wait")], start_new_session=True,
                            stdout=subprocess.DEVNULL)
    assert group_alive(proc.pid)
    terminate_group(proc, grace=0.5)
    assert proc.returncode is not None and not group_alive(proc.pid)
