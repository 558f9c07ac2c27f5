"""icrt's tests, laid out like the packages they test: runtime/ (torch-free, grouped like runtime/: base, bundle,
backends, scoring, tools, batch, serving, report, cli), icrt/ (the public API and console script, torch-free),
train/, export/, calibration/, benchmarks/ (with torch). Shared helpers are modules of their own (images.py, tiny.py,
model_helpers.py, fakes/, runtime/fixtures.py, runtime/batch/helpers.py) or conftest.py fixtures, never another test
module."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository
