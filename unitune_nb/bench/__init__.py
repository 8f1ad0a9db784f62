"""Benchmarks of the UniTune engine on the embedded cascade, printed, never asserted as timed tests.

==========  ===================================================================================
module      what it holds
==========  ===================================================================================
cases       the fixed edit cases (world scene + edit, exact answer) and the scoring of one result
run         ``unitune-nb bench-edit``: UniTune and the baselines on every case, one record per result
report      summaries with spreads over seeds, the settings sweep's Pareto front, figures, files
speed       ``unitune-nb bench-speed``: tune / edit / preview / reset seconds and peak memory
==========  ===================================================================================

Measured numbers: docs/benchmarks.md.
"""
from .cases import CASES_FILE, Case, edit_succeeded, load_cases, make_cases, save_cases, score
from .report import (SHIPPED_SUMMARY, choose_default, combine_edit_runs, shipped_summary, edit_report, format_edit, iters_figure, merge_edit_runs, pareto_figure, scale_curves, scale_figure,
                     summarize, summarize_iters, summarize_sweep, write_edit_report)
from .run import SDEDIT_T0, SWEEP_GRID, bench_edit_steps, benchmark_rows, method_settings, sdedit_rows, tune_label
from .speed import TARGETS, bench_speed, format_speed

__all__ = ["CASES_FILE", "SHIPPED_SUMMARY", "shipped_summary", "SDEDIT_T0", "SWEEP_GRID", "TARGETS", "Case", "bench_edit_steps", "bench_speed",
           "benchmark_rows", "choose_default", "combine_edit_runs", "edit_report", "edit_succeeded", "format_edit", "format_speed",
           "iters_figure", "load_cases", "make_cases", "merge_edit_runs", "method_settings", "pareto_figure",
           "save_cases", "scale_curves", "scale_figure", "score", "sdedit_rows", "summarize", "summarize_iters", "summarize_sweep",
           "tune_label", "write_edit_report"]
