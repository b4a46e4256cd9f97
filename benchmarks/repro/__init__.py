"""The paper reproduction behind benchmarks/reproduce.py (its command line), one concern a module:

    rows.py        the rows of the papers' tables, the run options, row selection
    run.py         one row end to end, the scheduler, shipping models/fashion-mnist
    evaluation.py  the test-split metrics and the extras (prior learning, Algorithm 2, sigma sweep)
    report.py      RESULTS.md from the per-row results JSON, one function per section
    figures.py     the report's figures
    util.py        paths, git info, JSON files, stats.jsonl, locks, progress logging
"""
