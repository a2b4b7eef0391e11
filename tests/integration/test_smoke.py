from pathlib import Path

import itasks


def test_delay_runs_in_worker_and_returns_result(start_worker, tmp_path: Path) -> None:
    w = start_worker()
    assert itasks.add.delay(2, 3).get(timeout=10) == 5
    path = str(tmp_path / "runs")
    assert itasks.record.delay(path, 7).get(timeout=10) == 7
    pid = int(itasks.lines(path)[0].split()[2])
    assert pid in w.child_pids()
