"""A fleet's counters as one HAProxy's, for the collector's reconciliation."""

from __future__ import annotations

from fridaymorning.ingest.fleet_stats import combined_info, summed_rows


def test_requests_are_summed_per_server_over_instances() -> None:
    """stot and scur add up per (proxy, server); other fields come from the first instance."""
    one = [{"pxname": "web", "svname": "v1-1", "stot": "10", "scur": "1", "status": "UP"}]
    two = [
        {"pxname": "web", "svname": "v1-1", "stot": "5", "scur": "0", "status": "DOWN"},
        {"pxname": "web", "svname": "v2-1", "stot": "3", "scur": "2", "status": "UP"},
    ]
    assert summed_rows([one, two]) == [
        {"pxname": "web", "svname": "v1-1", "stot": "15", "scur": "1", "status": "UP"},
        {"pxname": "web", "svname": "v2-1", "stot": "3", "scur": "2", "status": "UP"},
    ]


def test_dropped_logs_add_up_and_the_pid_changes_when_any_instance_restarts() -> None:
    """DroppedLogs is the fleet's sum; a new worker on any instance gives another combined Pid."""
    before = combined_info([{"Pid": "100", "DroppedLogs": "2"}, {"Pid": "200", "DroppedLogs": "3"}])
    after = combined_info([{"Pid": "100", "DroppedLogs": "2"}, {"Pid": "201", "DroppedLogs": "0"}])
    assert before["DroppedLogs"] == "5" and after["DroppedLogs"] == "2"
    assert before["Pid"].isdigit() and after["Pid"].isdigit() and before["Pid"] != after["Pid"]
