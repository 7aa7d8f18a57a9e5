"""The hand-mqtt benchmark suite: ``python -m bench`` (or ``make bench``).

Every scenario is measured side by side with its floor in the same run, so ratios hold on a
noisy shared machine. Results are printed as one table and written as JSON.
"""
