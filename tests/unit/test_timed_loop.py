"""benchmarks.case_base.timed_loop: the loop every case times, cut short by its limit."""
from __future__ import annotations

import os
from dataclasses import replace

from benchmarks import cases as C
from benchmarks.case_base import each, timed_loop


def test_a_loop_that_ends_is_not_cut():
    seen = []
    t = timed_loop(each(seen.append, range(5)), 5, 60.0)
    assert seen == [0, 1, 2, 3, 4] and t.done == 5 and not t.cut and t.seconds >= 0
    assert t.note("5 things") == "5 things"


def test_the_limit_cuts_the_loop_and_the_work_is_closed_inside_it():
    events = []

    def work():
        try:
            for i in range(100):
                events.append(i)
                yield 10
        finally:
            events.append("closed")
    w = work()                                    # held: only timed_loop may close it
    t = timed_loop(w, 1000, -1.0)                 # past the limit after the first step
    assert events == [0, "closed"] and t.done == 10 and t.cut
    assert t.note("text") == "time limit; text"
    assert t.note("text", "10 bytes") == "time limit: 10 bytes; text"


def test_cut_cases_say_so_and_leave_nothing_behind(tmp_path):
    cfg = replace(C.TINY, time_limit=-1.0)
    (pairs,) = C.mkdir_rmdir(str(tmp_path), cfg)
    assert pairs.note == "time limit: 1 of 10 pairs done"
    (write,) = C.seq_write(str(tmp_path), cfg)
    assert write.note == "time limit: 0 MiB written; 2 MiB in 256 KiB writes"
    (fsync,) = C.seq_write_fsync(str(tmp_path), cfg)
    assert fsync.note.startswith("time limit: 0 MiB written; ")
    (warm,) = C.random_read_warm(str(tmp_path), cfg)
    assert warm.note == "time limit; 1 reads over 2 MiB, pages read once before"
    assert sorted(os.listdir(tmp_path)) == [C.RANDOM_NAME, C.SEQ_NAME]
