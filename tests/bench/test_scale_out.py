"""The pure helpers of bench/scale_out.py: finding the CPU controller, the CPU groups' files, the launcher that puts
a replica in its group, and the error summary. (The benchmark itself prints figures; nothing here is timed.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import scale_out
from harness import nhs_numbers
from scale_out import CgroupLayout, Throttling, failure_reason, parse_stat

from xhuma.nhs.nhs_number import is_valid_nhs_number

V1_SPLIT = """\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""
V1_TOGETHER = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\n"
V2 = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"


def test_detects_v1_with_cpu_and_cpuacct_in_separate_hierarchies_even_beside_an_empty_v2_tree() -> None:
    layout = CgroupLayout.detect(V1_SPLIT)
    assert (layout.version, layout.cpu_root, layout.cpuacct_root) == (
        1, Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup/cpuacct"))


def test_detects_v1_with_cpu_and_cpuacct_mounted_together() -> None:
    layout = CgroupLayout.detect(V1_TOGETHER)
    assert layout.version == 1
    assert layout.cpu_root == layout.cpuacct_root == Path("/sys/fs/cgroup/cpu,cpuacct")


def test_detects_v2() -> None:
    assert CgroupLayout.detect(V2) == CgroupLayout(2, Path("/sys/fs/cgroup"), None)


def test_refuses_a_machine_without_a_cpu_controller() -> None:
    with pytest.raises(SystemExit, match="no cgroup CPU controller"):
        CgroupLayout.detect("proc /proc proc rw 0 0\n")


def test_v1_group_gets_a_250m_quota_reserved_shares_and_reads_usage_and_throttling(tmp_path: Path) -> None:
    layout = CgroupLayout(1, tmp_path / "cpu", tmp_path / "cpuacct")
    layout.cpu_root.mkdir()
    layout.cpuacct_root.mkdir()  # type: ignore[union-attr]
    group = layout.create("replica1", 250, reserved=True)
    assert (group.cpu_dir / "cpu.cfs_period_us").read_text() == "100000"
    assert (group.cpu_dir / "cpu.cfs_quota_us").read_text() == "25000"
    assert (group.cpu_dir / "cpu.shares").read_text() == "10240"
    assert group.procs_files == [group.cpu_dir / "cgroup.procs", tmp_path / "cpuacct" / "replica1" / "cgroup.procs"]
    (tmp_path / "cpuacct" / "replica1" / "cpuacct.usage").write_text("1234567\n")
    (group.cpu_dir / "cpu.stat").write_text("nr_periods 68\nnr_throttled 63\nthrottled_time 1930000000\n")
    assert group.usage_ns() == 1_234_567
    assert group.throttling() == Throttling(68, 63, 1_930_000_000)


def test_v2_group_gets_cpu_max_and_the_largest_weight(tmp_path: Path) -> None:
    (tmp_path / "cgroup.subtree_control").write_text("memory\n")
    group = CgroupLayout(2, tmp_path, None).create("replica1", 250, reserved=True)
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpu"
    assert (group.cpu_dir / "cpu.max").read_text() == "25000 100000"
    assert (group.cpu_dir / "cpu.weight").read_text() == "10000"
    (group.cpu_dir / "cpu.stat").write_text(
        "usage_usec 5000\nuser_usec 4000\nnr_periods 10\nnr_throttled 4\nthrottled_usec 300\n")
    assert group.usage_ns() == 5_000_000
    assert group.throttling() == Throttling(10, 4, 300_000)


def test_unlimited_group_has_no_quota(tmp_path: Path) -> None:
    layout = CgroupLayout(1, tmp_path, tmp_path)
    group = layout.create("support", None, reserved=False)
    assert not (group.cpu_dir / "cpu.cfs_quota_us").exists()
    assert not (group.cpu_dir / "cpu.shares").exists()


def test_launcher_writes_the_pid_of_the_command_it_execs_into_every_procs_file(tmp_path: Path) -> None:
    layout = CgroupLayout(1, tmp_path / "cpu", tmp_path / "cpuacct")
    layout.cpu_root.mkdir()
    layout.cpuacct_root.mkdir()  # type: ignore[union-attr]
    group = layout.create("replica1", 250, reserved=False)
    printed = subprocess.run([*group.launcher(), sys.executable, "-c", "import os; print(os.getpid())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert [path.read_text().strip() for path in group.procs_files] == [printed, printed]


def test_throttling_differences_and_sums() -> None:
    before, after = Throttling(10, 2, 100), Throttling(30, 12, 900)
    assert after - before == Throttling(20, 10, 800)
    assert sum((after - before, Throttling(1, 1, 1)), Throttling()) == Throttling(21, 11, 801)


def test_parse_stat_ignores_lines_that_are_not_name_value_pairs() -> None:
    assert parse_stat("nr_periods 3\n\nsome thing else\nnr_throttled -1\n") == {"nr_periods": 3, "nr_throttled": -1}


def test_failure_reason_names_the_ihe_error_codes_or_the_fault_reason() -> None:
    registry = (b'<rs:RegistryErrorList><rs:RegistryError errorCode="XDSDocumentUniqueIdError" severity="x"/>'
                b'<rs:RegistryError errorCode="XDSRegistryError"/></rs:RegistryErrorList>')
    assert failure_reason(200, registry) == "HTTP 200 XDSDocumentUniqueIdError,XDSRegistryError"
    fault = b'<s:Fault><s:Reason><s:Text xml:lang="en">Too many requests</s:Text></s:Reason></s:Fault>'
    assert failure_reason(429, fault) == "HTTP 429 Fault: Too many requests"
    assert failure_reason(502, b"") == "HTTP 502"


def test_synthetic_patients_have_valid_distinct_nhs_numbers_per_range() -> None:
    exchanges, queries = nhs_numbers(300), nhs_numbers(300, start=999_500_000)
    assert all(is_valid_nhs_number(number) for number in exchanges + queries)
    assert len(set(exchanges) | set(queries)) == 600


def test_quick_mode_is_a_small_run() -> None:
    args = scale_out.parse_args(["--quick"])
    assert (args.runs, args.exchanges, args.queries) == (1, 20, 20)
    assert args.concurrency <= 10
